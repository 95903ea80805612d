//! `cargo xtask demo --container`: the demo's story in containers, through
//! docker/docker-compose.yml (see `gateway_tests::container_story`). Builds
//! the images from the host-built gateway (GATEWAY_BIN), tells the story and
//! removes every container, network, volume and pin it made; the images
//! stay, tagged dstack-gateway/<name>:latest.

use anyhow::{Context, Result};
use clap::Parser;
use gateway_tests::container::Engine;
use gateway_tests::container_story::{tell, Narrator, StoryOptions};
use std::io::Write;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Run the operators' file alone (`privileged: true`) instead of adding
    /// docker/least-privilege.yml. Cannot start where the capability
    /// bounding set lacks one (see docs/OPERATIONS.md).
    #[arg(long)]
    privileged: bool,
    /// The image tag.
    #[arg(long, default_value = "latest")]
    tag: String,
}

struct Stdout {
    n: u32,
    started: Instant,
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

impl Narrator for Stdout {
    fn step(&mut self, text: &str) {
        self.n += 1;
        say(&format!("\n\x1b[1m[{}] {text}\x1b[0m  (+{:.1}s)", self.n, self.started.elapsed().as_secs_f64()));
    }

    fn detail(&mut self, text: &str) {
        say(&format!("    {text}"));
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let engine = Engine::find().map_err(anyhow::Error::msg).context("the container demo needs a Docker engine (bash .ci/setup starts one)")?;
    say("dstack WireGuard gateway in containers: access from an NFT contract, enforced in the kernel");
    let opts = StoryOptions {
        gateway_binary: gateway_tests::netns::gateway_bin(),
        privileged: args.privileged,
        tag: args.tag,
        keep_images: true,
    };
    let mut out = Stdout { n: 0, started: Instant::now() };
    let report = tell(&engine, &opts, &mut out)?;
    say(&format!("\ncontainer demo finished in {:.0} s", report.total.as_secs_f64()));
    Ok(())
}
