//! Node and contract administration commands (`gateway node ...`).
//! PLACEHOLDER: replaced by the chain work (issue 3).

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {}

pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {}
}
