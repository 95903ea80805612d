//! A continuous `ping` inside a namespace whose replies are timestamped as
//! they arrive, to time outages to the millisecond (a one-shot `ping -c 1`
//! per attempt only sees whole seconds).

use crate::netns::{ChildGuard, Netns};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Echo requests per second: the outage is seen to within one interval.
pub const PING_INTERVAL: Duration = Duration::from_millis(20);

/// `ping -D` to one address, running until dropped.
pub struct Pinger {
    replies: Arc<Mutex<Vec<SystemTime>>>,
    _process: ChildGuard,
}

impl Pinger {
    /// Starts pinging `target` from `ns` every [`PING_INTERVAL`].
    pub fn start(ns: &Netns, target: &str) -> Result<Self> {
        let mut cmd = ns.command("ping");
        let interval = format!("{}", PING_INTERVAL.as_secs_f64());
        cmd.args(["-n", "-D", "-i", &interval, "-W", "1", target]).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut process = ChildGuard::spawn(cmd, "ping")?;
        let stdout = process.child_mut().stdout.take().context("ping stdout")?;
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sink = replies.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = reply_time(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(at);
                }
            }
        });
        Ok(Pinger { replies, _process: process })
    }

    /// The first reply that arrived at or after `t`, if one has.
    pub fn first_reply_after(&self, t: SystemTime) -> Option<SystemTime> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().find(|r| *r >= t)
    }

    /// Waits up to `timeout` for a reply at or after `t`; returns how long
    /// after `t` it came.
    pub fn wait_reply_after(&self, t: SystemTime, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.first_reply_after(t) {
                return Ok(r.duration_since(t).unwrap_or_default());
            }
            if Instant::now() > deadline {
                anyhow::bail!("no ping reply within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Replies received so far.
    pub fn replies(&self) -> usize {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// `[1712345678.123456] 64 bytes from 10.99.0.1: icmp_seq=3 ttl=64 time=0.4 ms`:
/// the reply's arrival time (ping's `-D` stamp).
fn reply_time(line: &str) -> Option<SystemTime> {
    let rest = line.strip_prefix('[')?;
    let (stamp, tail) = rest.split_once(']')?;
    if !tail.contains("bytes from") {
        return None;
    }
    let secs: f64 = stamp.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reply_lines_carry_a_time() {
        let t = reply_time("[1712345678.500000] 64 bytes from 10.99.0.1: icmp_seq=3 ttl=64 time=0.4 ms");
        assert_eq!(t, Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_712_345_678_500)));
        assert_eq!(reply_time("[1712345678.500000] From 10.99.0.2 icmp_seq=1 Destination Host Unreachable"), None);
        assert_eq!(reply_time("PING 10.99.0.1 (10.99.0.1) 56(84) bytes of data."), None);
    }
}
