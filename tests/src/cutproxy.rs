//! A TCP proxy inside a network namespace that a test can cut (every live
//! connection reset, new ones refused) and restore: an RPC outage on demand,
//! the one failure a real anvil cannot produce while keeping its state.

use anyhow::Result;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CutProxy {
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    pub port: u16,
}

impl CutProxy {
    /// Listens on 127.0.0.1:`port` inside namespace `ns`, forwarding to
    /// 127.0.0.1:`target` there.
    pub fn start(ns: &str, port: u16, target: u16) -> Result<Self> {
        Self::between(ns, port, ns, target)
    }

    /// Listens on 127.0.0.1:`port` in `listen_ns` and forwards to
    /// 127.0.0.1:`target` in `target_ns` (a socket keeps the namespace it was
    /// made in, so one process bridges two loopbacks).
    pub fn between(listen_ns: &str, port: u16, target_ns: &str, target: u16) -> Result<Self> {
        let ns = target_ns.to_string();
        let listener = gateway::netns::within(listen_ns, move || {
            let l = TcpListener::bind(("127.0.0.1", port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (c, s, l) = (cut.clone(), stop.clone(), live.clone());
        std::thread::spawn(move || {
            // Connecting to the target must happen inside the namespace too.
            if gateway::netns::enter(&ns).is_err() {
                return;
            }
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if c.load(Ordering::Relaxed) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                        pipe(client, upstream, &l);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(CutProxy { cut, stop, live, port })
    }

    /// Resets every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for s in live.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(a: TcpStream, b: TcpStream, live: &Arc<Mutex<Vec<TcpStream>>>) {
    let clones = [a.try_clone(), b.try_clone(), a.try_clone(), b.try_clone()];
    let [Ok(a2), Ok(b2), Ok(a3), Ok(b3)] = clones else { return };
    live.lock().unwrap_or_else(|p| p.into_inner()).extend([a3, b3]);
    std::thread::spawn(move || copy(a, b2));
    std::thread::spawn(move || copy(b, a2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
