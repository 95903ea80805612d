//! The XDP front: runs the shared classifier on every frame arriving on the
//! underlay interface, counts the reason per CPU, and drops what it must when
//! enforcing. All verdict logic lives in `gateway_common::classify`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, LruHashMap, PerCpuArray},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use gateway_common::{
    classify, AllowSlot, DenyEntry, EndpointKey, Gate, Packet, RateBucket, Reason, SourceKey,
    XdpConfig, XdpStats, MAX_DENY_ENDPOINTS, MAX_PEER_SLOTS, MAX_RATE_SOURCES, MODE_ENFORCE,
};

#[btf_map]
static GW_CONFIG: Array<XdpConfig, 1> = Array::new();

#[btf_map]
static GW_STATS: PerCpuArray<XdpStats, 1> = PerCpuArray::new();

#[btf_map]
static GW_ALLOW_SLOTS: Array<AllowSlot, { MAX_PEER_SLOTS as usize }> = Array::new();

#[btf_map]
static GW_DENY_ENDPOINTS: LruHashMap<EndpointKey, DenyEntry, { MAX_DENY_ENDPOINTS as usize }> =
    LruHashMap::new();

#[btf_map]
static GW_RATE_LIMIT: LruHashMap<SourceKey, RateBucket, { MAX_RATE_SOURCES as usize }> =
    LruHashMap::new();

/// The deepest offset the classifier ever reads: two VLAN tags, a maximal
/// IPv4 header, UDP and the WireGuard receiver index. Reads beyond it are
/// refused before pointer arithmetic, which also gives the verifier a bound.
const MAX_READ_OFFSET: usize = 14 + 8 + 60 + 8 + 16 + 16;

struct Frame<'a>(&'a XdpContext);

impl Packet for Frame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // For the verifier: a constant bound on the variable offset.
        if off > MAX_READ_OFFSET {
            return None;
        }
        let start = self.0.data();
        let end = self.0.data_end();
        if start + off + N > end {
            return None;
        }
        // SAFETY: [start + off, start + off + N) lies inside the packet, checked above.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }
}

/// The maps, seen through the classifier's `Gate`.
struct Maps;

impl Gate for Maps {
    #[inline(always)]
    fn slot_allowed(&self, slot: u32) -> bool {
        match GW_ALLOW_SLOTS.get(slot) {
            Some(s) => s.allowed != 0,
            None => false,
        }
    }

    #[inline(always)]
    fn deny_entry(&self, endpoint: &EndpointKey) -> Option<DenyEntry> {
        // SAFETY: DenyEntry is Copy and read once; a concurrent userspace
        // update can at worst give a torn expiry, which only shifts when the
        // deny lapses.
        unsafe { GW_DENY_ENDPOINTS.get(endpoint).copied() }
    }

    #[inline(always)]
    fn bucket_mut(&mut self, source: &SourceKey) -> Option<&mut RateBucket> {
        // SAFETY: the bucket is per source and races between CPUs only make
        // the limiter approximate, never unsafe (plain integers).
        GW_RATE_LIMIT.get_ptr_mut(source).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn insert_bucket(&mut self, source: &SourceKey, bucket: RateBucket) {
        // A full LRU map evicts; a failed insert only means this source
        // starts with a full bucket again next time.
        let _ = GW_RATE_LIMIT.insert(source, bucket, 0);
    }
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
    let now = unsafe { bpf_ktime_get_ns() };
    let reason = classify(&Frame(ctx), &cfg, &mut Maps, now);
    count(reason);
    if reason.is_drop() && cfg.mode == MODE_ENFORCE {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn count(reason: Reason) {
    if let Some(stats) = GW_STATS.get_ptr_mut(0) {
        // XdpStats is #[repr(C)] with one u64 per Reason, in Reason order.
        let idx = reason as usize;
        if idx < Reason::COUNT {
            // SAFETY: idx < COUNT keeps the pointer inside this CPU's value.
            unsafe {
                let counter = (stats as *mut u64).add(idx);
                *counter += 1;
            }
        }
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
