//! The zone's UDP server (I/O edge): one socket on the gateway's tunnel
//! address, one task; every datagram gets [`respond`](super::wire::respond)'s answer.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;

/// Where names come from: the registry's granted tokens.
pub trait Names: Send + Sync {
    /// The tunnel address of the granted token with this node id.
    fn resolve(&self, node_id: &str) -> Option<Ipv4Addr>;
}

/// Datagrams answered, by the answer's response code, and datagrams left
/// unanswered (shorter than a header, or responses).
#[derive(Debug, Default)]
pub struct Counters {
    answered: [AtomicU64; 6],
    ignored: AtomicU64,
}

/// The `rcode` label of each counter slot (the RFC 1035 code is the index
/// for 0-5; 2, SERVFAIL, is never sent).
const RCODE_LABELS: [&str; 6] = ["noerror", "formerr", "servfail", "nxdomain", "notimp", "refused"];

impl Counters {
    fn record(&self, response: Option<&[u8]>) {
        match response.and_then(|r| r.get(3)) {
            Some(flags) => self.answered[usize::from(flags & 0x0f).min(5)].fetch_add(1, Ordering::Relaxed),
            None => self.ignored.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// `(rcode label, count)` for every code the zone sends, then `("ignored", n)`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = [0usize, 1, 3, 4, 5]
            .into_iter()
            .map(|i| (RCODE_LABELS[i], self.answered[i].load(Ordering::Relaxed)))
            .collect();
        out.push(("ignored", self.ignored.load(Ordering::Relaxed)));
        out
    }
}

/// Answers queries on `socket` until `stop` completes. A failed send is
/// logged and the loop goes on: one client cannot stop the others' names.
pub async fn serve(socket: UdpSocket, domain: String, names: Arc<dyn Names>, counters: Arc<Counters>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // Large enough for an EDNS query; of a longer datagram only the front
    // is read, which holds the question.
    let mut buf = vec![0u8; 1500];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    // An error that persists must not spin the task.
                    tracing::warn!(error = %err, "DNS: receiving");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let response = super::wire::respond(&buf[..len], &domain, |node_id| names.resolve(node_id));
        counters.record(response.as_deref());
        let Some(response) = response else {
            continue;
        };
        if let Err(err) = socket.send_to(&response, from).await {
            tracing::debug!(error = %err, %from, "DNS: answering");
        }
    }
}
