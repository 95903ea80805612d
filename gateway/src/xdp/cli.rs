//! `gateway xdp attach|stats|detach`.

#[derive(clap::Subcommand, Debug)]
pub enum XdpCommand {}

pub fn run(cmd: XdpCommand) -> anyhow::Result<()> {
    match cmd {}
}
