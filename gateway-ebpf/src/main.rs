//! The kernel side of the gate: the XDP front runs the shared classifier on
//! every frame arriving on the underlay interface, the late gate (a socket
//! filter on the WireGuard sockets) runs it on every datagram they receive,
//! whatever interface it came by; each counts its verdicts per CPU and drops
//! what it must when enforcing. All verdict logic lives in
//! `gateway_common::classify`.
#![no_std]
#![no_main]
// A one-instruction `asm!` is the cheapest optimisation barrier (see
// `opaque`); BPF inline assembly is still unstable.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{__sk_buff, bpf_hdr_start_off::BPF_HDR_START_NET, xdp_action},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_skb_load_bytes_relative},
    macros::{btf_map, socket_filter, xdp},
    programs::{SkBuffContext, XdpContext},
};
use gateway_common::{
    classify, classify_datagram, declared_ip_len, wire::MAX_READ_END, Coalesced, AllowSlot, DenyEntry, EndpointKey, FragEntry, FragKey, FragSlot, Gate,
    LiveEndpoint, Packet, RateBucket, XdpConfig, XdpStats, XdpVerdict, DENY_SLOTS, FRAG_SLOTS, LIVE_SLOTS, MAX_PEER_SLOTS,
    MODE_ENFORCE, RATE_SLOTS,
};

#[btf_map]
static GW_CONFIG: Array<XdpConfig, 1> = Array::new();

#[btf_map]
static GW_STATS: PerCpuArray<XdpStats, 1> = PerCpuArray::new();

#[btf_map]
static GW_ALLOW_SLOTS: Array<AllowSlot, { MAX_PEER_SLOTS as usize }> = Array::new();

#[btf_map]
static GW_DENY_ENDPOINTS: Array<DenyEntry, { DENY_SLOTS as usize }> = Array::new();

#[btf_map]
static GW_RATE_LIMIT: Array<RateBucket, { RATE_SLOTS as usize }> = Array::new();

#[btf_map]
static GW_FRAGMENTS: Array<FragSlot, { FRAG_SLOTS as usize }> = Array::new();

#[btf_map]
static GW_LIVE_ENDPOINTS: Array<LiveEndpoint, { LIVE_SLOTS as usize }> = Array::new();

/// One bucket per CPU: no cache line bounces between CPUs under a flood.
#[btf_map]
static GW_UNPROVEN_BUDGET: PerCpuArray<RateBucket, 1> = PerCpuArray::new();

#[btf_map]
static GW_LATE_STATS: PerCpuArray<XdpStats, 1> = PerCpuArray::new();

#[btf_map]
static GW_LATE_UNPROVEN_BUDGET: PerCpuArray<RateBucket, 1> = PerCpuArray::new();

#[btf_map]
static GW_LATE_RATE_LIMIT: Array<RateBucket, { RATE_SLOTS as usize }> = Array::new();

/// Scratch for `Datagram::forget`: a value written here and read back is a
/// value the verifier knows nothing about. Never pinned.
#[btf_map]
static GW_LATE_SCRATCH: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Only for the parse+lookup benchmark anchor: a plain hash map keyed by
/// endpoint, the structure a first design would use for the deny list.
#[btf_map]
static ANCHOR_HASH: aya_ebpf::btf_maps::HashMap<EndpointKey, u64, 1024> = aya_ebpf::btf_maps::HashMap::new();

/// The deepest offset the classifier ever reads from (two VLAN tags, IPv6
/// with the longest extension chain it walks, UDP and the WireGuard receiver
/// index). Reads beyond it are refused before pointer arithmetic: the
/// classifier never asks for them, so this check exists for the verifier,
/// which needs a constant bound on every variable packet offset.
const MAX_READ_OFFSET: usize = MAX_READ_END;

/// `v`, unchanged, but opaque to LLVM (an assembly register move it cannot
/// see through), so it cannot rewrite comparisons on it. One `mov`: an
/// empty block would leave two BTF line records on one instruction, which
/// the kernel refuses.
#[inline(always)]
fn opaque(mut v: usize) -> usize {
    // SAFETY: a register copied onto itself: no memory, no other register.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack)) };
    v
}

struct Frame<'a>(&'a XdpContext);

impl Frame<'_> {
    /// A pointer to `N` readable bytes at `off`, or `None` past the end.
    #[inline(always)]
    fn ptr_at<const N: usize>(&self, off: usize) -> Option<*const u8> {
        // For the verifier: a constant bound on the variable offset.
        if off > MAX_READ_OFFSET {
            return None;
        }
        // The pointer and the pointer just past the read are each hidden
        // from LLVM, which otherwise rewrites `p + N > end` as `p >= end`
        // (N = 1) or folds N into the variable offset, both leaving the
        // verifier no range for `p`, or as `p > end - N`, arithmetic on
        // `data_end` the verifier refuses. All are exact rewrites: the
        // barriers exist for the verifier.
        let p = opaque(self.0.data() + off);
        let past = opaque(p + N);
        if past > self.0.data_end() {
            return None;
        }
        Some(p as *const u8)
    }
}

impl Packet for Frame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        // SAFETY: ptr_at checked the byte lies inside the packet.
        self.ptr_at::<1>(off).map(|p| unsafe { *p })
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        // SAFETY: ptr_at checked both bytes lie inside the packet.
        self.ptr_at::<2>(off)
            .map(|p| u16::from_be(unsafe { core::ptr::read_unaligned(p as *const u16) }))
    }

    #[inline(always)]
    fn ne32_at(&self, off: usize) -> Option<u32> {
        // SAFETY: ptr_at checked all four bytes lie inside the packet.
        self.ptr_at::<4>(off).map(|p| unsafe { core::ptr::read_unaligned(p as *const u32) })
    }

    #[inline(always)]
    fn ne64_at(&self, off: usize) -> Option<u64> {
        // SAFETY: ptr_at checked all eight bytes lie inside the packet.
        self.ptr_at::<8>(off).map(|p| unsafe { core::ptr::read_unaligned(p as *const u64) })
    }
}

/// The maps, seen through the classifier's `Gate`: shared by both gates but
/// for the rate-limit buckets and the unproven budget, each gate's own.
struct Maps {
    buckets: &'static Array<RateBucket, { RATE_SLOTS as usize }>,
    unproven: &'static PerCpuArray<RateBucket, 1>,
    /// Which of a live endpoint's two buckets is this gate's.
    late: bool,
}

impl Gate for Maps {
    #[inline(always)]
    fn slot_allowed(&self, slot: u32) -> bool {
        match GW_ALLOW_SLOTS.get(slot) {
            Some(s) => s.allowed != 0,
            None => false,
        }
    }

    #[inline(always)]
    fn deny_entry(&self, index: u32, endpoint: &EndpointKey) -> Option<DenyEntry> {
        let slot = GW_DENY_ENDPOINTS.get_ptr(index)?;
        // SAFETY: `slot` points at a map value of DenyEntry's size, and
        // `endpoint` at a live EndpointKey; both are read as three u64 words
        // (a derived `==` on the byte arrays would become a memcmp call). A
        // concurrent userspace update can at worst give a torn read, which
        // only decides this one packet.
        unsafe {
            if same_words::<3>(slot as *const u64, endpoint as *const EndpointKey as *const u64) {
                Some(*slot)
            } else {
                None
            }
        }
    }

    #[inline(always)]
    fn bucket_mut(&mut self, index: u32) -> Option<&mut RateBucket> {
        // SAFETY: races between CPUs on a bucket only make the limiter
        // approximate, never unsafe (plain integers).
        self.buckets.get_ptr_mut(index).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn live_mut(&mut self, index: u32, endpoint: &EndpointKey) -> Option<(u64, &mut RateBucket)> {
        let slot = GW_LIVE_ENDPOINTS.get_ptr_mut(index)?;
        // SAFETY: as in `deny_entry`: a map value of LiveEndpoint's size and
        // a live EndpointKey, compared as three u64 words; the bucket is
        // plain integers (races between CPUs only make it approximate).
        unsafe {
            if same_words::<3>(slot as *const u64, endpoint as *const EndpointKey as *const u64) {
                let bucket = if self.late { &mut (*slot).late_bucket } else { &mut (*slot).bucket };
                Some(((*slot).expires_ns, bucket))
            } else {
                None
            }
        }
    }

    #[inline(always)]
    fn unproven_bucket_mut(&mut self) -> Option<&mut RateBucket> {
        // SAFETY: this CPU's value of a per-CPU map (each gate its own);
        // a program interrupted on its CPU can at worst lose or double one
        // token (plain integers), which leaves the budget approximate.
        self.unproven.get_ptr_mut(0).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn fragment(&self, index: u32, key: &FragKey) -> Option<FragEntry> {
        let slot = GW_FRAGMENTS.get_ptr(index)?;
        // SAFETY: `slot` points at a map value of FragSlot's size, `key` at
        // a live FragKey; both keys are compared as five u64 words (no
        // memcmp call). A concurrent update can at worst give a torn read,
        // which only decides this one fragment.
        unsafe {
            if same_words::<5>(slot as *const u64, key as *const FragKey as *const u64) {
                Some((*slot).entry)
            } else {
                None
            }
        }
    }

    #[inline(always)]
    fn record_fragment(&mut self, index: u32, key: &FragKey, entry: FragEntry) {
        if let Some(slot) = GW_FRAGMENTS.get_ptr_mut(index) {
            // SAFETY: `slot` points at this map value, `key` at a live
            // FragKey, both 8-aligned; plain integers, written word by word
            // (a struct copy becomes a memcpy call).
            unsafe {
                let dst = slot as *mut u64;
                let src = key as *const FragKey as *const u64;
                let mut i = 0;
                while i < 5 {
                    *dst.add(i) = *src.add(i);
                    i += 1;
                }
                (*slot).entry = entry;
            }
        }
    }
}

/// Whether `N` u64 words at `a` and `b` are equal (a derived `==` on byte
/// arrays becomes a memcmp call). Keys are 8-aligned (`repr(align(8))`) and
/// so are map values, so these are plain 8-byte loads; unaligned reads
/// were lowered to byte loads.
///
/// # Safety
/// Both pointers must be 8-aligned and valid for `N * 8` bytes.
#[inline(always)]
unsafe fn same_words<const N: usize>(a: *const u64, b: *const u64) -> bool {
    let mut i = 0;
    while i < N {
        // SAFETY: i < N, inside both ranges by the caller's promise.
        if unsafe { *a.add(i) != *b.add(i) } {
            return false;
        }
        i += 1;
    }
    true
}

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    try_gateway_xdp(&ctx)
}

#[inline(always)]
fn try_gateway_xdp(ctx: &XdpContext) -> u32 {
    let cfg = match GW_CONFIG.get(0) {
        Some(c) => *c,
        None => return xdp_action::XDP_PASS,
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let mut maps = Maps { buckets: &GW_RATE_LIMIT, unproven: &GW_UNPROVEN_BUDGET, late: false };
    let reason = classify(&Frame(ctx), &cfg, &mut maps, || unsafe { bpf_ktime_get_coarse_ns() });
    count(&GW_STATS, reason);
    if reason.is_drop() && cfg.mode == MODE_ENFORCE {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn count(map: &PerCpuArray<XdpStats, 1>, reason: XdpVerdict) {
    if let Some(stats) = map.get_ptr_mut(0) {
        // XdpStats is #[repr(C)] with one u64 per XdpVerdict, in XdpVerdict order.
        let idx = reason as usize;
        if idx < XdpVerdict::COUNT {
            // SAFETY: idx < COUNT keeps the pointer inside this CPU's value.
            unsafe {
                let counter = (stats as *mut u64).add(idx);
                *counter += 1;
            }
        }
    }
}

/// Benchmark anchor: the cheapest useful XDP program, a per-CPU counter and
/// a drop. Loaded only by `gateway xdp bench`, never attached.
#[xdp]
pub fn anchor_drop_count(_ctx: XdpContext) -> u32 {
    count(&GW_STATS, XdpVerdict::DropMalformed);
    xdp_action::XDP_DROP
}

/// Benchmark anchor: Ethernet/IPv4/UDP parsing plus one hash lookup (the deny
/// map, keyed by the source endpoint), then pass. Loaded only by
/// `gateway xdp bench`.
#[xdp]
pub fn anchor_parse_lookup(ctx: XdpContext) -> u32 {
    let frame = Frame(&ctx);
    // Sequential reads: a tuple of Options compiles to a register read the
    // verifier rejects (see classify's UDP header parsing).
    let Some(src) = frame.ne32_at(14 + 12) else {
        return xdp_action::XDP_PASS;
    };
    let Some(port) = frame.be16_at(14 + 20) else {
        return xdp_action::XDP_PASS;
    };
    let key = EndpointKey::v4(src.to_ne_bytes(), port);
    // The classic per-endpoint hash lookup the deny table replaced.
    // SAFETY: read-only lookup of a Copy value.
    if unsafe { ANCHOR_HASH.get(&key) }.is_some() {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}


/// A datagram at a socket, read through `bpf_skb_load_bytes_relative` from
/// its IP header (a socket filter has no direct packet access; the helper
/// also reads across the fragments of a reassembled datagram).
struct Datagram {
    skb: *mut __sk_buff,
    len: usize,
}

impl Datagram {
    #[inline(always)]
    fn new(skb: *mut __sk_buff) -> Self {
        let mut d = Datagram { skb, len: 0 };
        d.len = declared_ip_len(&d);
        d
    }

    /// `N` bytes (at most 8) at `off` from the IP header, in memory order.
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<u64> {
        let mut v: u64 = 0;
        // SAFETY: the helper writes at most N <= 8 bytes into `v`.
        let r = unsafe {
            bpf_skb_load_bytes_relative(
                self.skb as *const aya_ebpf::cty::c_void,
                off as u32,
                &mut v as *mut u64 as *mut aya_ebpf::cty::c_void,
                N as u32,
                BPF_HDR_START_NET,
            )
        };
        if r == 0 {
            Some(v)
        } else {
            None
        }
    }
}

impl Packet for Datagram {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.load::<1>(off).map(|v| v.to_ne_bytes()[0])
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.load::<2>(off).map(|v| {
            let b = v.to_ne_bytes();
            u16::from_be_bytes([b[0], b[1]])
        })
    }

    #[inline(always)]
    fn ne32_at(&self, off: usize) -> Option<u32> {
        self.load::<4>(off).map(|v| {
            let b = v.to_ne_bytes();
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    #[inline(always)]
    fn ne64_at(&self, off: usize) -> Option<u64> {
        self.load::<8>(off)
    }

    #[inline(always)]
    fn forget(&self, v: usize) -> usize {
        // Exists for the verifier: see `Packet::forget`.
        match GW_LATE_SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU map, one u64.
            Some(slot) => unsafe {
                core::ptr::write_volatile(slot, v as u64);
                core::ptr::read_volatile(slot) as usize
            },
            None => v,
        }
    }
}

/// The late gate: a socket filter attached to each WireGuard socket. It
/// returns how many bytes of the datagram to keep: all of it, or none.
#[socket_filter]
pub fn gateway_late_gate(ctx: SkBuffContext) -> i64 {
    try_gateway_late_gate(&ctx)
}

#[inline(always)]
fn try_gateway_late_gate(ctx: &SkBuffContext) -> i64 {
    let keep = ctx.len() as i64;
    let cfg = match GW_CONFIG.get(0) {
        Some(c) => *c,
        None => return keep,
    };
    let skb = ctx.skb.skb;
    // SAFETY: two __sk_buff fields every socket filter may read.
    let (segments, segment) = unsafe { ((*skb).gso_segs, (*skb).gso_size) };
    let coalesced = Coalesced { segment: segment as usize, count: segments as usize };
    let mut maps = Maps { buckets: &GW_LATE_RATE_LIMIT, unproven: &GW_LATE_UNPROVEN_BUDGET, late: true };
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let verdict = classify_datagram(&Datagram::new(skb), &cfg, &mut maps, || unsafe { bpf_ktime_get_coarse_ns() }, coalesced);
    count(&GW_LATE_STATS, verdict);
    if verdict.is_drop() && cfg.mode == MODE_ENFORCE {
        0
    } else {
        keep
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
