//! `gateway dataplane ...`. PLACEHOLDER: replaced by the data-plane work (issue 4).

#[derive(clap::Subcommand, Debug)]
pub enum DataplaneCommand {}

pub fn run(cmd: DataplaneCommand) -> anyhow::Result<()> {
    match cmd {}
}
