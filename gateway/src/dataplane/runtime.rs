//! Runs a [`Device`] against real I/O (I/O edge): the device split into one
//! shard per packet worker, each worker a thread with its own TUN queue,
//! its own UDP sockets (a reuseport group steered by the peer's slot, see
//! `steer`) and a queue for work other workers hand it; one UAPI socket
//! thread; and a cloneable [`DataplaneHandle`] for the access layer.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

use super::device::{Device, DeviceCounters, DeviceEvent, PeerError, MAX_PACKET};
use super::sink::{Handoff, PacketSink};
use super::gro::Coalescer;
use super::gso;
use super::io::{wait_writable, SendQueue, Tun, UdpBatch, UdpSockets, RECV_BATCH};
use super::peer::{PeerConfig, PeerStats, PublicKey};
use super::shards::PeerTable;
use super::takeover::TakeoverCounters;
use super::uapi;
use super::vnet::{VnetHdr, VNET_HDR_LEN};

/// boringtun rounds its timers to the second; ticking several times a second
/// keeps handshake retries and keepalives close to the spec's times.
const TICK: Duration = Duration::from_millis(100);
/// Packets taken from one source before looking at the others, so a busy
/// TUN cannot starve the UDP side (and the control API's lock waits at most
/// one batch).
const BATCH: usize = 64;
/// `recvmmsg` calls per socket before looking at the TUN side again.
const UDP_ROUNDS: usize = 4;
/// Work items waiting for one worker; beyond this they are dropped (and
/// counted), as a full socket buffer would drop them.
const HANDOFF_DEPTH: usize = 4096;
/// Hand-offs taken before looking at the worker's own sockets again.
const HANDOFF_BATCH: usize = 256;
/// Workers are named by bits of a u64 while they wait to be woken.
pub const MAX_WORKERS: usize = 64;
/// Events not yet taken by the access layer; beyond this they are dropped
/// (and the device counts them).
const EVENT_CHANNEL_DEPTH: usize = 1024;
/// Datagrams per burst to one peer by default (see `DataplaneConfig::max_burst`).
pub const DEFAULT_MAX_BURST: u16 = 64;
/// Encrypted bytes queued from TUN reads before they are sent: several
/// super-packets share one `sendmmsg`, a few hundred microseconds of data
/// at most wait for it.
const SEND_QUEUE_FLUSH_BYTES: usize = 256 << 10;
/// How long the UAPI thread sleeps between looks at the stop flag.
const UAPI_STOP_CHECK_MS: i32 = 250;
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
    /// Packet worker threads, each with a TUN queue and UDP sockets of its
    /// own and the peers whose `slot % workers` is its index; 0: one per
    /// CPU ([`default_workers`]).
    pub workers: usize,
    /// Stateless takeover of nodes whose session lives elsewhere (see
    /// [`super::takeover`]); off leaves them to their own timers.
    pub takeover: bool,
    /// Datagrams to one peer in one UDP GSO message (1 to 64): the burst
    /// that reaches the peer's receive buffer at once, and what a full one
    /// drops whole.
    pub max_burst: usize,
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
            .field("workers", &self.workers)
            .field("takeover", &self.takeover)
            .field("max_burst", &self.max_burst)
            .finish()
    }
}

struct Shared {
    /// Shard i is worker i's; a worker takes only its own lock (once per
    /// batch, uncontended), the control API takes them all in index order.
    /// A lock rather than a queue to each worker: the control API's callers
    /// (the daemon loop's ops and read-backs, `wg show`, `/metrics`) get
    /// their answer between two batches, without the workers polling.
    shards: Vec<Mutex<Device>>,
    stop: AtomicBool,
    listen_port: u16,
}

impl Shared {
    fn shard(&self, index: usize) -> MutexGuard<'_, Device> {
        // A panic in one thread must not take the control API and `wg show`
        // down with it; the device keeps no invariant across its calls that
        // a half-finished call could leave broken beyond one peer.
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on all shards at once, as one table.
    fn table<T>(&self, f: impl FnOnce(&mut [&mut Device]) -> T) -> T {
        let mut guards: Vec<MutexGuard<'_, Device>> = (0..self.shards.len()).map(|i| self.shard(i)).collect();
        let mut shards: Vec<&mut Device> = guards.iter_mut().map(|g| &mut **g).collect();
        f(&mut shards)
    }
}

/// The control API: cheap to clone, callable from any thread.
#[derive(Clone)]
pub struct DataplaneHandle {
    shared: Arc<Shared>,
}

impl DataplaneHandle {
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), PeerError> {
        self.shared.table(|t| t.add_peer(config))
    }

    /// Drops the peer's sessions and queued packets at once.
    pub fn remove_peer(&self, public_key: &PublicKey) -> Result<PeerConfig, PeerError> {
        self.shared.table(|t| t.remove_peer(public_key))
    }

    /// Replaces a peer under one table lock: a rekey (old key out, new in),
    /// or the same key at another slot or with other allowed IPs. If the new
    /// one cannot be added the old one is put back.
    pub fn update_peer(&self, old_key: &PublicKey, new: PeerConfig) -> Result<(), PeerError> {
        self.shared.table(|t| t.replace_peer(old_key, new))
    }

    /// A slot no peer uses, for peers that do not come with one.
    pub fn free_slot(&self) -> Result<u32, PeerError> {
        self.shared.table(|t| t.free_slot())
    }

    pub fn peers(&self) -> Vec<PeerStats> {
        self.shared.table(|t| t.peer_stats())
    }

    pub fn peer(&self, public_key: &PublicKey) -> Option<PeerStats> {
        self.shared.table(|t| t.stats_for(public_key))
    }

    pub fn counters(&self) -> DeviceCounters {
        self.shared.table(|t| t.counters())
    }

    /// Summed over the shards (each takes over the slots it owns).
    pub fn takeover_counters(&self) -> TakeoverCounters {
        self.shared.table(|shards| {
            let mut total = TakeoverCounters::default();
            for shard in shards.iter() {
                let TakeoverCounters { initiated, rate_limited, disabled, abandoned } = shard.takeover_counters();
                total.initiated += initiated;
                total.rate_limited += rate_limited;
                total.disabled += disabled;
                total.abandoned += abandoned;
            }
            total
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.shared.shard(0).public_key()
    }

    pub fn listen_port(&self) -> u16 {
        self.shared.listen_port
    }

    /// Packet worker threads (shards of the device).
    pub fn workers(&self) -> usize {
        self.shared.shards.len()
    }
}

/// A running data plane; dropping it stops the threads and removes the
/// UAPI socket (the TUN interface goes with its file descriptors).
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    uapi_path: Option<PathBuf>,
}

/// The default worker count: one per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Dataplane {
    /// Creates the TUN device, binds the sockets and starts the threads.
    /// Rejected handshakes arrive on the returned channel.
    pub fn start(config: DataplaneConfig) -> anyhow::Result<(Self, mpsc::Receiver<DeviceEvent>)> {
        let workers = if config.workers == 0 { default_workers() } else { config.workers };
        if workers > MAX_WORKERS {
            anyhow::bail!("{workers} workers: at most {MAX_WORKERS}");
        }
        let queues = Tun::create_queues(&config.iface, workers)?;
        if let Some(first) = queues.first() {
            first.configure(config.mtu, &config.addresses)?;
        }
        let sockets = UdpSockets::bind_group(config.listen_port, workers)?;
        let listen_port = sockets.first().context("no UDP socket")?.port()?;
        let shared = Arc::new(Shared {
            shards: Device::sharded(config.private_key, workers as u32)
                .into_iter()
                .map(|mut shard| {
                    shard.set_takeover(config.takeover);
                    Mutex::new(shard)
                })
                .collect(),
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
        let mut inboxes = Vec::new();
        let mut outboxes = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(HANDOFF_DEPTH);
            let wake = Arc::new(Wake::new()?);
            outboxes.push(Outbox { tx, wake: wake.clone() });
            inboxes.push((rx, wake));
        }
        let outboxes: Arc<[Outbox]> = outboxes.into();
        for (index, ((tun, sockets), (inbox, wake))) in queues.into_iter().zip(sockets).zip(inboxes).enumerate() {
            let worker = Worker { index, tun, sockets, inbox, wake, outboxes: outboxes.clone(), max_burst: config.max_burst };
            let shared = shared.clone();
            let events = events_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wg-worker-{index}"))
                    .spawn(move || worker.run(&shared, &events))
                    .context("spawn packet worker")?,
            );
        }
        tracing::info!(iface = %config.iface, listen_port, workers, "data plane running");
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

/// An eventfd a worker polls: others write it after handing it work.
struct Wake(OwnedFd);

impl Wake {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: eventfd(2) with flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("eventfd");
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a u64 we own; a full counter (EAGAIN)
        // means the worker is woken already.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a u64 we own (non-blocking).
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Work one worker passes to the worker that owns the peer.
enum Work {
    Datagram(SocketAddr, Option<IpAddr>, Vec<u8>),
    Initiation(u32, SocketAddr, Option<IpAddr>, Vec<u8>),
    Plain(Vec<u8>),
    /// A TUN read as it came (virtio header first), segmented by the owner.
    TunRead(Vec<u8>),
}

struct Outbox {
    tx: std::sync::mpsc::SyncSender<Work>,
    wake: Arc<Wake>,
}

/// Queues the device's output during a batch and hands it to the kernel on
/// `flush`: datagrams in UDP GSO runs, TUN packets merged per TCP flow, work
/// for other workers on their queues (and their eventfds written once).
struct KernelSink<'a> {
    tun: &'a Tun,
    sockets: &'a UdpSockets,
    coalescer: Coalescer,
    outgoing: SendQueue,
    outboxes: &'a [Outbox],
    /// Workers handed work since the last flush (bit i: worker i).
    to_wake: u64,
    handoffs_dropped: u64,
}

impl KernelSink<'_> {
    /// Nothing waits to be written, sent or woken.
    fn is_idle(&self) -> bool {
        self.coalescer.is_empty() && self.outgoing.is_empty() && self.to_wake == 0
    }

    /// Sends early what queued up while input kept coming.
    fn flush_if_full(&mut self) {
        if self.outgoing.queued_bytes() >= SEND_QUEUE_FLUSH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let tun = self.tun;
        self.coalescer.flush(&mut |packet| write_tun(tun, packet));
        if !self.outgoing.is_empty() {
            self.outgoing.flush(self.sockets);
        }
        while self.to_wake != 0 {
            let i = self.to_wake.trailing_zeros() as usize;
            self.to_wake &= self.to_wake - 1;
            self.outboxes[i].wake.wake();
        }
    }

    fn queue(&mut self, shard: usize, work: Work) {
        let Some(outbox) = self.outboxes.get(shard) else { return };
        // A full queue means that worker is far behind: drop, as a full
        // socket buffer would.
        match outbox.tx.try_send(work) {
            Ok(()) => self.to_wake |= 1 << shard,
            Err(_) => self.handoffs_dropped += 1,
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

    fn send_udp_with(&mut self, to: SocketAddr, from: Option<IpAddr>, room: usize, fill: &mut dyn FnMut(&mut [u8]) -> usize) {
        self.outgoing.push_with(to, from, room, fill);
    }

    fn write_tun(&mut self, packet: &[u8]) {
        let tun = self.tun;
        self.coalescer.push(packet, &mut |merged| write_tun(tun, merged));
    }

    fn hand_off(&mut self, shard: u32, work: Handoff<'_>) {
        let work = match work {
            Handoff::Datagram { from, local, datagram } => Work::Datagram(from, local, datagram.to_vec()),
            Handoff::Initiation { slot, from, local, datagram } => Work::Initiation(slot, from, local, datagram.to_vec()),
            Handoff::Plain(packet) => Work::Plain(packet.to_vec()),
        };
        self.queue(shard as usize, work);
    }
}

/// One packet thread: its TUN queue, its UDP sockets, its hand-off queue.
struct Worker {
    index: usize,
    tun: Tun,
    sockets: UdpSockets,
    inbox: std::sync::mpsc::Receiver<Work>,
    wake: Arc<Wake>,
    outboxes: Arc<[Outbox]>,
    max_burst: usize,
}

impl Worker {
    fn run(self, shared: &Shared, events: &mpsc::Sender<DeviceEvent>) {
        let Worker { index, tun, sockets, inbox, wake, outboxes, max_burst } = self;
        let mut buf = vec![0u8; MAX_PACKET];
        let mut sink = KernelSink {
            tun: &tun,
            sockets: &sockets,
            coalescer: Coalescer::default(),
            outgoing: SendQueue::new(max_burst),
            outboxes: &outboxes,
            to_wake: 0,
            handoffs_dropped: 0,
        };
        let mut batch = UdpBatch::default();
        let mut segment = Vec::with_capacity(MAX_PACKET);
        let mut next_tick = Instant::now();
        let mut udp: Vec<&UdpSocket> = vec![&sockets.v4];
        udp.extend(sockets.v6.as_ref());
        // TUN, eventfd, then the UDP sockets.
        const FIRST_UDP: usize = 2;
        let mut fds: Vec<libc::pollfd> = [tun.raw_fd(), wake.0.as_raw_fd()]
            .into_iter()
            .chain(udp.iter().map(|s| s.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_tick {
                let mut device = shared.shard(index);
                device.tick(&mut sink);
                sink.flush();
                drain_events(&mut device, events);
                next_tick = now + TICK;
            }
            // Output is held while more input is ready (TCP segments keep
            // merging, datagrams keep joining runs) and leaves as soon as the
            // input pauses: a look without waiting first, then the flush.
            let pending = !sink.is_idle();
            let timeout_ms =
                if pending { 0 } else { next_tick.saturating_duration_since(Instant::now()).as_millis().max(1) as i32 };
            // SAFETY: `fds` is a live array of pollfd of the given length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready <= 0 {
                if pending {
                    sink.flush();
                }
                continue;
            }
            if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // The interface is gone (deleted from outside): nothing to carry
                // any more, and polling on would spin. `is_running` reports it.
                tracing::error!(iface = tun.name(), worker = index, "TUN device failed; data plane stopping");
                return;
            }
            for (socket, pfd) in udp.iter().zip(&fds[FIRST_UDP..]) {
                if pfd.revents & libc::POLLERR != 0 {
                    // A pending socket error (ICMP) would keep poll returning.
                    if let Ok(Some(err)) = socket.take_error() {
                        tracing::debug!(error = %err, "UDP socket error");
                    }
                }
            }
            if fds[1].revents & libc::POLLIN != 0 {
                wake.clear();
                let mut device = shared.shard(index);
                let mut taken = 0;
                for work in inbox.try_iter().take(HANDOFF_BATCH) {
                    taken += 1;
                    match work {
                        Work::Datagram(from, local, datagram) => device.handle_datagram(from, local, &datagram, &mut sink),
                        Work::Initiation(slot, from, local, datagram) => {
                            device.handle_initiation_for(slot, from, local, &datagram, &mut sink)
                        }
                        Work::Plain(packet) => device.handle_tun_packet(&packet, &mut sink),
                        Work::TunRead(mut read) => {
                            segment_tun_read(&mut device, &mut read, &mut segment, &mut sink);
                            sink.flush();
                        }
                    }
                }
                sink.flush();
                // A full batch may have left work behind: come back at once.
                if taken == HANDOFF_BATCH {
                    wake.wake();
                }
            }
            if fds[0].revents & libc::POLLIN != 0 {
                let mut device = shared.shard(index);
                for _ in 0..BATCH {
                    match tun.read(&mut buf) {
                        Ok((hdr, range)) => {
                            // The kernel chose the queue by flow; a flow whose
                            // peer another worker owns goes there whole.
                            match device.owner_of_destination(&buf[range.clone()]) {
                                Some(owner) if owner as usize != index => {
                                    sink.queue(owner as usize, Work::TunRead(buf[..range.end].to_vec()));
                                }
                                _ => {
                                    let split = gso::split(&hdr, &mut buf[range], &mut segment, |packet| {
                                        device.handle_tun_packet(packet, &mut sink)
                                    });
                                    if let Err(err) = split {
                                        tracing::debug!(error = %err, "dropped a packet from the TUN device");
                                    }
                                }
                            }
                            // The segments of several super-packets leave in
                            // one `sendmmsg` (bursts of `max_burst` each).
                            sink.flush_if_full();
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
            for (socket, pfd) in udp.iter().zip(&fds[FIRST_UDP..]) {
                if pfd.revents & libc::POLLIN == 0 {
                    continue;
                }
                let mut device = shared.shard(index);
                for _ in 0..UDP_ROUNDS {
                    let received = match batch.recv(socket) {
                        Ok(n) => n,
                        Err(err) => {
                            log_read_error("UDP", &err);
                            break;
                        }
                    };
                    batch.for_each(|from, local, datagram| device.handle_datagram(from, local, datagram, &mut sink));
                    sink.flush_if_full();
                    if received < RECV_BATCH {
                        break;
                    }
                }
                drain_events(&mut device, events);
            }
            if sink.handoffs_dropped > 0 {
                shared.shard(index).count_handoffs_dropped(std::mem::take(&mut sink.handoffs_dropped));
            }
        }
    }
}

/// A TUN read another worker passed on: virtio header, then the packet.
fn segment_tun_read(device: &mut Device, read: &mut [u8], segment: &mut Vec<u8>, sink: &mut KernelSink<'_>) {
    let Some((hdr, packet)) = read.split_first_chunk_mut::<VNET_HDR_LEN>() else { return };
    let hdr = VnetHdr::parse(hdr);
    if let Err(err) = gso::split(&hdr, packet, segment, |p| device.handle_tun_packet(p, sink)) {
        tracing::debug!(error = %err, "dropped a packet from the TUN device");
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
                // Asleep until a client comes or a look at `stop` is due,
                // instead of waking 20 times a second on a shared core.
                let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, UAPI_STOP_CHECK_MS) };
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
                let text = shared.table(|t| uapi::render_get(t, shared.listen_port, SystemTime::now()));
                format!("{text}errno=0\n\n")
            }
            "set=1" => match shared.table(|t| uapi::apply_set(t, shared.listen_port, &body)) {
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
