//! Runs a [`Device`] against real I/O: one packet thread polling the TUN
//! device and UDP sockets, one UAPI socket thread, and a cloneable
//! [`DataplaneHandle`] for the access layer (I/O edge).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::device::{Device, DeviceCounters, DeviceEvent, PacketSink, PeerError, MAX_PACKET};
use super::gro::Coalescer;
use super::gso;
use super::io::{wait_writable, SendQueue, Tun, UdpBatch, UdpSockets, RECV_BATCH};
use super::peer::{PeerConfig, PeerStats, PublicKey};
use super::takeover::TakeoverCounters;
use super::uapi;

/// boringtun rounds its timers to the second; ticking several times a second
/// keeps handshake retries and keepalives close to the spec's times.
const TICK: Duration = Duration::from_millis(100);
/// Packets taken from one source before looking at the others, so a busy
/// TUN cannot starve the UDP side (and the control API's lock waits at most
/// one batch).
const BATCH: usize = 64;
/// `recvmmsg` calls per socket before looking at the TUN side again.
const UDP_ROUNDS: usize = 4;
/// Events not yet taken by the access layer; beyond this they are dropped
/// (and the device counts them).
const EVENT_CHANNEL_DEPTH: usize = 1024;
/// Where `wg` looks for userspace implementations.
pub const UAPI_DIR: &str = "/var/run/wireguard";

#[derive(Clone)]
pub struct DataplaneConfig {
    pub iface: String,
    pub listen_port: u16,
    pub private_key: [u8; 32],
    pub addresses: Vec<IpNet>,
    pub mtu: u16,
    /// Serve `/var/run/wireguard/<iface>.sock` for `wg show` / `wg set`.
    pub uapi: bool,
    /// Stateless takeover of nodes whose session lives elsewhere (see
    /// [`super::takeover`]); off leaves them to their own timers.
    pub takeover: bool,
}

/// Without the private key: configurations end up in logs.
impl std::fmt::Debug for DataplaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneConfig")
            .field("iface", &self.iface)
            .field("listen_port", &self.listen_port)
            .field("private_key", &"(hidden)")
            .field("addresses", &self.addresses)
            .field("mtu", &self.mtu)
            .field("uapi", &self.uapi)
            .field("takeover", &self.takeover)
            .finish()
    }
}

struct Shared {
    device: Mutex<Device>,
    stop: AtomicBool,
    listen_port: u16,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        // A panic in one thread must not take the control API and `wg show`
        // down with it; the device keeps no invariant across its calls that
        // a half-finished call could leave broken beyond one peer.
        self.device.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The control API: cheap to clone, callable from any thread.
#[derive(Clone)]
pub struct DataplaneHandle {
    shared: Arc<Shared>,
}

impl DataplaneHandle {
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), PeerError> {
        self.shared.device().add_peer(config)
    }

    /// Drops the peer's sessions and queued packets at once.
    pub fn remove_peer(&self, public_key: &PublicKey) -> Result<PeerConfig, PeerError> {
        self.shared.device().remove_peer(public_key)
    }

    /// Rekey: the old key's peer goes, the new one comes, atomically.
    pub fn update_peer(&self, old_key: &PublicKey, new: PeerConfig) -> Result<(), PeerError> {
        self.shared.device().replace_peer(old_key, new)
    }

    /// A slot no peer uses, for peers that do not come with one.
    pub fn free_slot(&self) -> Result<u32, PeerError> {
        self.shared.device().free_slot()
    }

    pub fn peers(&self) -> Vec<PeerStats> {
        self.shared.device().peer_stats()
    }

    pub fn peer(&self, public_key: &PublicKey) -> Option<PeerStats> {
        self.shared.device().stats_for(public_key)
    }

    pub fn counters(&self) -> DeviceCounters {
        self.shared.device().counters().clone()
    }

    pub fn takeover_counters(&self) -> TakeoverCounters {
        self.shared.device().takeover_counters().clone()
    }

    pub fn public_key(&self) -> PublicKey {
        self.shared.device().public_key()
    }

    pub fn listen_port(&self) -> u16 {
        self.shared.listen_port
    }
}

/// A running data plane; dropping it stops the threads and removes the
/// UAPI socket (the TUN interface goes with its file descriptor).
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    uapi_path: Option<PathBuf>,
}

impl Dataplane {
    /// Creates the TUN device, binds the sockets and starts the threads.
    /// Rejected handshakes arrive on the returned channel.
    pub fn start(config: DataplaneConfig) -> anyhow::Result<(Self, mpsc::Receiver<DeviceEvent>)> {
        let tun = Tun::create(&config.iface)?;
        tun.configure(config.mtu, &config.addresses)?;
        let sockets = UdpSockets::bind(config.listen_port)?;
        let listen_port = sockets.port()?;
        let mut device = Device::new(config.private_key);
        device.set_takeover(config.takeover);
        let shared = Arc::new(Shared {
            device: Mutex::new(device),
            stop: AtomicBool::new(false),
            listen_port,
        });
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_DEPTH);
        let mut threads = Vec::new();
        let mut uapi_path = None;
        if config.uapi {
            let (listener, path) = bind_uapi(&config.iface)?;
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("wg-uapi".into())
                    .spawn(move || serve_uapi(&shared, &listener))
                    .context("spawn UAPI thread")?,
            );
            uapi_path = Some(path);
        }
        let loop_shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("wg-packets".into())
                .spawn(move || packet_loop(&loop_shared, &tun, &sockets, &events_tx))
                .context("spawn packet thread")?,
        );
        tracing::info!(iface = %config.iface, listen_port, "data plane running");
        Ok((Self { shared, threads, uapi_path }, events_rx))
    }

    pub fn handle(&self) -> DataplaneHandle {
        DataplaneHandle { shared: self.shared.clone() }
    }

    /// Whether the threads are still running (they stop on request, or if
    /// one of them panicked).
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(path) = self.uapi_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Queues the device's output during a batch and hands it to the kernel on
/// `flush`: datagrams in UDP GSO runs, TUN packets merged per TCP flow.
struct KernelSink<'a> {
    tun: &'a Tun,
    sockets: &'a UdpSockets,
    coalescer: Coalescer,
    outgoing: SendQueue,
}

impl KernelSink<'_> {
    fn flush(&mut self) {
        let tun = self.tun;
        self.coalescer.flush(&mut |packet| write_tun(tun, packet));
        if !self.outgoing.is_empty() {
            self.outgoing.flush(self.sockets);
        }
    }
}

fn write_tun(tun: &Tun, packet: &[u8]) {
    if let Err(err) = tun.write(packet) {
        if err.kind() == io::ErrorKind::WouldBlock {
            wait_writable(tun.raw_fd(), 5);
            let _ = tun.write(packet);
        } else {
            tracing::debug!(error = %err, "TUN write failed");
        }
    }
}

impl PacketSink for KernelSink<'_> {
    fn send_udp(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]) {
        self.outgoing.push(to, from, datagram);
    }

    fn write_tun(&mut self, packet: &[u8]) {
        let tun = self.tun;
        self.coalescer.push(packet, &mut |merged| write_tun(tun, merged));
    }
}

fn packet_loop(shared: &Shared, tun: &Tun, sockets: &UdpSockets, events: &mpsc::Sender<DeviceEvent>) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut sink = KernelSink { tun, sockets, coalescer: Coalescer::default(), outgoing: SendQueue::default() };
    let mut batch = UdpBatch::default();
    let mut segment = Vec::with_capacity(MAX_PACKET);
    let mut next_tick = Instant::now();
    let mut udp: Vec<&UdpSocket> = vec![&sockets.v4];
    udp.extend(sockets.v6.as_ref());
    let mut fds: Vec<libc::pollfd> = std::iter::once(tun.raw_fd())
        .chain(udp.iter().map(|s| s.as_raw_fd()))
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_tick {
            let mut device = shared.device();
            device.tick(&mut sink);
            sink.flush();
            drain_events(&mut device, events);
            next_tick = now + TICK;
        }
        let timeout_ms = next_tick.saturating_duration_since(Instant::now()).as_millis().max(1) as i32;
        // SAFETY: `fds` is a live array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready <= 0 {
            continue;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // The interface is gone (deleted from outside): nothing to carry
            // any more, and polling on would spin. `is_running` reports it.
            tracing::error!(iface = tun.name(), "TUN device failed; data plane stopping");
            return;
        }
        for (socket, pfd) in udp.iter().zip(&fds[1..]) {
            if pfd.revents & libc::POLLERR != 0 {
                // A pending socket error (ICMP) would keep poll returning.
                if let Ok(Some(err)) = socket.take_error() {
                    tracing::debug!(error = %err, "UDP socket error");
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut device = shared.device();
            for _ in 0..BATCH {
                match tun.read(&mut buf) {
                    Ok((hdr, range)) => {
                        let split = gso::split(&hdr, &mut buf[range], &mut segment, |packet| {
                            device.handle_tun_packet(packet, &mut sink)
                        });
                        if let Err(err) = split {
                            tracing::debug!(error = %err, "dropped a packet from the TUN device");
                        }
                        // One super-packet's segments leave as one GSO send.
                        sink.flush();
                    }
                    Err(err) => {
                        log_read_error("TUN", &err);
                        if err.kind() != io::ErrorKind::InvalidData {
                            break;
                        }
                    }
                }
            }
        }
        for (socket, pfd) in udp.iter().zip(&fds[1..]) {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let mut device = shared.device();
            for _ in 0..UDP_ROUNDS {
                let received = match batch.recv(socket) {
                    Ok(n) => n,
                    Err(err) => {
                        log_read_error("UDP", &err);
                        break;
                    }
                };
                batch.for_each(|from, local, datagram| device.handle_datagram(from, local, datagram, &mut sink));
                sink.flush();
                if received < RECV_BATCH {
                    break;
                }
            }
            drain_events(&mut device, events);
        }
        sink.flush();
    }
}

fn log_read_error(source: &str, err: &io::Error) {
    if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
        tracing::warn!(source, error = %err, "read failed");
    }
}

fn drain_events(device: &mut Device, events: &mpsc::Sender<DeviceEvent>) {
    while let Some(event) = device.poll_event() {
        let DeviceEvent::RejectedHandshake { endpoint, public_key } = &event;
        // Debug only: whoever takes the events (the daemon's audit log, the
        // CLI) reports them; a scan must not flood the log from here too.
        tracing::debug!(%endpoint, key = %super::peer::encode_key(public_key), "rejected handshake from unknown key");
        // Nobody listening, or the listener is behind: the deny list is an
        // optimisation, dropping the event is safe.
        let _ = events.try_send(event);
    }
}

fn bind_uapi(iface: &str) -> anyhow::Result<(UnixListener, PathBuf)> {
    std::fs::create_dir_all(UAPI_DIR).with_context(|| format!("create {UAPI_DIR}"))?;
    let path = PathBuf::from(UAPI_DIR).join(format!("{iface}.sock"));
    // A stale socket from a crashed run would make bind fail.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    listener.set_nonblocking(true).context("UAPI listener non-blocking")?;
    Ok((listener, path))
}

fn serve_uapi(shared: &Shared, listener: &UnixListener) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(err) = serve_uapi_client(shared, stream) {
                    tracing::debug!(error = %err, "UAPI client");
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => {
                tracing::warn!(error = %err, "UAPI accept");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One connection: any number of `get=1` / `set=1` requests, each ended by a
/// blank line and answered with `errno=N` and a blank line.
fn serve_uapi_client(shared: &Shared, stream: UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut command = String::new();
        if reader.read_line(&mut command)? == 0 {
            return Ok(());
        }
        let mut body = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\n" {
                break;
            }
            body.push_str(&line);
        }
        let reply = match command.trim_end() {
            "get=1" => {
                let text = uapi::render_get(&shared.device(), shared.listen_port, SystemTime::now());
                format!("{text}errno=0\n\n")
            }
            "set=1" => match uapi::apply_set(&mut shared.device(), shared.listen_port, &body) {
                Ok(()) => "errno=0\n\n".to_owned(),
                Err(err) => {
                    tracing::warn!(error = %err, "UAPI set refused");
                    format!("errno={}\n\n", err.errno())
                }
            },
            other => {
                tracing::debug!(command = other, "unknown UAPI command");
                return Ok(());
            }
        };
        writer.write_all(reply.as_bytes())?;
    }
}
