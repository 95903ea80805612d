//! WireGuard-shaped UDP payloads for tests: right sizes and types, random-ish
//! contents (the XDP verdict never looks past the header fields).

/// A handshake initiation (type 1, 148 bytes).
pub fn handshake_init(sender: u32) -> Vec<u8> {
    let mut m = vec![0u8; 148];
    m[0] = 1;
    m[4..8].copy_from_slice(&sender.to_le_bytes());
    fill(&mut m[8..]);
    m
}

/// A transport data message (type 4) to `receiver_index` with `payload` bytes
/// of ciphertext after the 16-byte header (at least 16: the tag).
pub fn transport(receiver_index: u32, payload: usize) -> Vec<u8> {
    let mut m = vec![0u8; 16 + payload.max(16)];
    m[0] = 4;
    m[4..8].copy_from_slice(&receiver_index.to_le_bytes());
    fill(&mut m[16..]);
    m
}

/// A message of an unknown type: dropped as malformed.
pub fn unknown_type() -> Vec<u8> {
    let mut m = vec![0u8; 64];
    m[0] = 9;
    m
}

/// The session index boringtun gives slot `slot`'s first session.
pub fn index_for_slot(slot: u32) -> u32 {
    slot << 8
}

fn fill(b: &mut [u8]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
}
