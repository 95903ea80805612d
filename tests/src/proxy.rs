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
    /// Bytes the clients sent (requests), over all connections.
    requested: Arc<std::sync::atomic::AtomicU64>,
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
        let requested = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tracked, counted, bytes) = (connections.clone(), accepted.clone(), requested.clone());
        let listener = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let bytes = bytes.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let (mut client_read, mut client_write) = inbound.into_split();
                        let (mut server_read, mut server_write) = outbound.into_split();
                        let upstream = async {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = vec![0u8; 16 * 1024];
                            while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                                bytes.fetch_add(n as u64, Ordering::Relaxed);
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = server_write.shutdown().await;
                        };
                        let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                        let _ = tokio::join!(upstream, downstream);
                    }
                });
                if let Ok(mut tasks) = tracked.lock() {
                    tasks.push(forward);
                }
            }
        });
        Ok(Self { addr, listener, connections, accepted, requested })
    }

    /// Request bytes forwarded so far.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
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
