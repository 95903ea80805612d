//! The zone's UDP server (I/O edge): one socket on the gateway's tunnel
//! address, one task; every datagram gets [`respond`](super::wire::respond)'s answer.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// Where names come from: the registry's granted tokens.
pub trait Names: Send + Sync {
    /// The tunnel address of the granted token with this node id.
    fn resolve(&self, node_id: &str) -> Option<Ipv4Addr>;
}

/// Answers queries on `socket` until `stop` completes. A failed send is
/// logged and the loop goes on: one client cannot stop the others' names.
pub async fn serve(socket: UdpSocket, domain: String, names: Arc<dyn Names>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // Large enough for an EDNS query; a longer datagram is cut and then
    // answered as malformed.
    let mut buf = vec![0u8; 1500];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(error = %err, "DNS: receiving");
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let Some(response) = super::wire::respond(&buf[..len], &domain, |node_id| names.resolve(node_id)) else {
            continue;
        };
        if let Err(err) = socket.send_to(&response, from).await {
            tracing::debug!(error = %err, %from, "DNS: answering");
        }
    }
}
