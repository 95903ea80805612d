//! A loopback TCP forwarder that a test can kill, to make an RPC endpoint die
//! on demand while the chain behind it keeps running.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub addr: SocketAddr,
    listener: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (an OS-chosen port) and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        Self::start_at("127.0.0.1:0".parse().map_err(std::io::Error::other)?, target).await
    }

    /// The same on `addr`: a killed proxy comes back on its old port.
    pub async fn start_at(addr: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tracked, counted) = (connections.clone(), accepted.clone());
        let listener = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut tasks) = tracked.lock() {
                    tasks.push(forward);
                }
            }
        });
        Ok(Self { addr, listener, connections, accepted })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listening socket and every forwarded connection.
    pub fn kill(&self) {
        self.listener.abort();
        if let Ok(mut tasks) = self.connections.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.kill();
    }
}
