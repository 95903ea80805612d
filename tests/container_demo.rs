//! The container demo end to end (docker/docker-compose.yml with the
//! least-privilege overlay, real Docker engine, real anvil, wireguard-go
//! nodes, XDP on the gateway container's interface): the story of
//! `cargo xtask demo --container`, whose every step asserts. Records a skip
//! where no engine can run; CI (.ci/setup) starts one.

use gateway_tests::container::Engine;
use gateway_tests::container_story::{tell, Narrator, StoryOptions};

struct Log;

impl Narrator for Log {
    fn step(&mut self, text: &str) {
        eprintln!("== {text}");
    }

    fn detail(&mut self, text: &str) {
        eprintln!("   {text}");
    }
}

#[test]
fn the_container_demo_runs_with_least_privilege_and_cleans_up() {
    let engine = match Engine::find() {
        Ok(engine) => engine,
        Err(why) => return gateway_tests::skip::skip(&why),
    };
    let opts = StoryOptions {
        gateway_binary: gateway_tests::netns::gateway_bin(),
        privileged: false,
        tag: gateway_tests::netns::unique_name("test"),
        keep_images: false,
    };
    let report = tell(&engine, &opts, &mut Log).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("container demo: {report:?}");
}
