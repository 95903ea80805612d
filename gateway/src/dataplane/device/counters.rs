//! Device-wide drop and event counters, summed over the shards for metrics.

/// Device-wide drop and event counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    pub malformed: u64,
    pub invalid_mac: u64,
    pub cookie_replies: u64,
    pub rejected_handshakes: u64,
    pub unknown_slot: u64,
    pub decrypt_errors: u64,
    pub spoofed_source: u64,
    pub no_route: u64,
    pub no_endpoint: u64,
    pub forwarded: u64,
    pub events_dropped: u64,
    /// Packets passed to the shard (worker) that owns their peer.
    pub handed_off: u64,
    /// Of those, dropped because the owner's queue was full.
    pub handoffs_dropped: u64,
    /// Handshake initiations and responses whose ephemeral key is a
    /// low-order point (its Diffie-Hellman is all zeros), dropped before
    /// boringtun sees them.
    pub low_order_ephemeral: u64,
}

impl DeviceCounters {
    /// Adds another shard's counters to these.
    pub fn add(&mut self, other: &DeviceCounters) {
        let DeviceCounters {
            malformed,
            invalid_mac,
            cookie_replies,
            rejected_handshakes,
            unknown_slot,
            decrypt_errors,
            spoofed_source,
            no_route,
            no_endpoint,
            forwarded,
            events_dropped,
            handed_off,
            handoffs_dropped,
            low_order_ephemeral,
        } = other;
        self.malformed += malformed;
        self.invalid_mac += invalid_mac;
        self.cookie_replies += cookie_replies;
        self.rejected_handshakes += rejected_handshakes;
        self.unknown_slot += unknown_slot;
        self.decrypt_errors += decrypt_errors;
        self.spoofed_source += spoofed_source;
        self.no_route += no_route;
        self.no_endpoint += no_endpoint;
        self.forwarded += forwarded;
        self.events_dropped += events_dropped;
        self.handed_off += handed_off;
        self.handoffs_dropped += handoffs_dropped;
        self.low_order_ephemeral += low_order_ephemeral;
    }
}
