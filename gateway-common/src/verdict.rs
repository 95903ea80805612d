//! The XDP verdicts and their per-CPU counters, declared once (pure): the
//! enum, its stable names and the `#[repr(C)]` counter struct with one named
//! field per verdict all come from the one list below, so adding a verdict
//! is one line here (append only: the discriminant indexes the counters).

macro_rules! xdp_verdicts {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal => $field:ident, $verdict:ident; )*) => {
        /// Why a packet got its verdict. The discriminant indexes
        /// [`XdpStats`]; never reorder, only append.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum XdpVerdict {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl XdpVerdict {
            pub const COUNT: usize = [$($code),*].len();
            pub const ALL: [XdpVerdict; XdpVerdict::COUNT] = [$(XdpVerdict::$variant),*];

            /// Whether an enforcing program drops packets with this verdict.
            #[inline(always)]
            pub const fn is_drop(self) -> bool {
                match self {
                    $( XdpVerdict::$variant => xdp_verdicts!(@drop $verdict), )*
                }
            }

            /// Stable snake_case name, used for metrics labels and CLI output.
            pub const fn name(self) -> &'static str {
                match self {
                    $( XdpVerdict::$variant => stringify!($field), )*
                }
            }
        }

        /// Per-verdict packet counters, one field per [`XdpVerdict`] in the
        /// same order, so `bpftool map dump` shows named fields (BTF) and the
        /// program can add to field `verdict as usize` of the array view.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct XdpStats {
            $( pub $field: u64, )*
        }

        impl XdpStats {
            /// The counters in [`XdpVerdict`] order.
            pub fn as_array(&self) -> [u64; XdpVerdict::COUNT] {
                [$(self.$field),*]
            }

            pub fn from_array(a: [u64; XdpVerdict::COUNT]) -> Self {
                let mut i = 0;
                $( let $field = a[i]; i += 1; )*
                let _ = i;
                XdpStats { $($field),* }
            }
        }
    };
    (@drop pass) => { false };
    (@drop drop) => { true };
}

xdp_verdicts! {
    PassNotIp = 0 => pass_not_ip, pass;
    PassNotUdp = 1 => pass_not_udp, pass;
    /// A later fragment of a datagram whose first fragment passed.
    PassFragment = 2 => pass_fragment, pass;
    PassOtherPort = 3 => pass_other_port, pass;
    PassHandshakeInit = 4 => pass_handshake_init, pass;
    PassHandshakeResponse = 5 => pass_handshake_response, pass;
    PassCookieReply = 6 => pass_cookie_reply, pass;
    PassTransport = 7 => pass_transport, pass;
    DropMalformed = 8 => drop_malformed, drop;
    DropUnknownSlot = 9 => drop_unknown_slot, drop;
    DropDeniedEndpoint = 10 => drop_denied_endpoint, drop;
    DropRateLimited = 11 => drop_rate_limited, drop;
    /// A later fragment of a datagram whose first fragment was dropped.
    DropFragmentFirstDropped = 12 => drop_fragment_first_dropped, drop;
    /// A later fragment with no first fragment on record (never seen,
    /// evicted, or arrived before it).
    DropFragmentNeverSeen = 13 => drop_fragment_never_seen, drop;
    /// A first fragment too short to show the UDP header, the WireGuard
    /// type and the receiver index.
    DropFragmentTooShort = 14 => drop_fragment_too_short, drop;
    /// IPv6 behind an extension-header chain longer than the walk's bounds,
    /// or cut short inside it.
    DropExtHeaderUnwalkable = 15 => drop_ext_header_unwalkable, drop;
    /// A handshake initiation from an endpoint without a recent completed
    /// handshake, over the unproven budget (a spoofed-source flood).
    DropUnprovenBudget = 16 => drop_unproven_budget, drop;
}

const _: () = assert!(core::mem::size_of::<XdpStats>() == XdpVerdict::COUNT * 8);

impl XdpStats {
    /// The counter for one verdict.
    pub fn get(&self, verdict: XdpVerdict) -> u64 {
        self.as_array()[verdict as usize]
    }

    /// Adds another CPU's counters into these.
    pub fn accumulate(&mut self, other: &XdpStats) {
        let mut sum = self.as_array();
        for (s, o) in sum.iter_mut().zip(other.as_array()) {
            *s = s.wrapping_add(o);
        }
        *self = XdpStats::from_array(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminants_index_the_counters_in_order() {
        for (i, v) in XdpVerdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i, "{v:?}");
            let mut a = [0u64; XdpVerdict::COUNT];
            a[i] = 7;
            assert_eq!(XdpStats::from_array(a).get(*v), 7);
        }
        assert!(!XdpVerdict::PassFragment.is_drop());
        assert!(XdpVerdict::DropFragmentNeverSeen.is_drop());
        assert_eq!(XdpVerdict::DropExtHeaderUnwalkable.name(), "drop_ext_header_unwalkable");
    }
}
