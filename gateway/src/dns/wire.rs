//! The DNS message codec of the zone (pure): one query datagram in, the
//! response datagram out (RFC 1035 section 4).

use std::net::Ipv4Addr;

/// How long resolvers may cache an address: short, so a revoked node's name
/// stops answering soon after its access does.
pub const TTL_SECONDS: u32 = 30;

const HEADER_LEN: usize = 12;
const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const RD: u16 = 0x0100;
const CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
/// The A record type, for callers building queries.
pub const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

/// Response codes the zone uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The answer to one datagram, or `None` when it deserves none (shorter than
/// a header, or itself a response: answering those could loop).
/// `resolve` maps a node id (the first label) to its tunnel address.
pub fn respond(query: &[u8], domain: &str, resolve: impl Fn(&str) -> Option<Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN {
        return None;
    }
    let id = [query[0], query[1]];
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & QR != 0 {
        return None;
    }
    // Copied into the response (RFC 1035 4.1.1; CD per RFC 4035 3.1.6).
    let rd = flags & (RD | CD | OPCODE_MASK);
    if flags & OPCODE_MASK != 0 {
        return Some(header_only(id, rd, Rcode::NotImp));
    }
    if u16::from_be_bytes([query[4], query[5]]) != 1 {
        return Some(header_only(id, rd, Rcode::FormErr));
    }
    let Some((name, question_end)) = read_question(query) else {
        return Some(header_only(id, rd, Rcode::FormErr));
    };
    let qtype = u16::from_be_bytes([query[question_end - 4], query[question_end - 3]]);
    let qclass = u16::from_be_bytes([query[question_end - 2], query[question_end - 1]]);
    let question = &query[HEADER_LEN..question_end];
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let in_zone = name == domain || name.ends_with(&format!(".{domain}"));
    if !in_zone || !(qclass == CLASS_IN || qclass == CLASS_ANY) {
        return Some(with_question(id, rd, Rcode::Refused, false, question, None));
    }
    if name == domain {
        return Some(with_question(id, rd, Rcode::NoError, true, question, None));
    }
    let node_id = &name[..name.len() - domain.len() - 1];
    // Only `<node_id>.<domain>` exists: no deeper names, no empty label.
    let address = if node_id.contains('.') { None } else { resolve(node_id) };
    match address {
        None => Some(with_question(id, rd, Rcode::NxDomain, true, question, None)),
        Some(ip) if qtype == TYPE_A || qtype == TYPE_ANY => {
            Some(with_question(id, rd, Rcode::NoError, true, question, Some(ip)))
        }
        // The name exists, the type does not (AAAA, MX, ...): NODATA.
        Some(_) => Some(with_question(id, rd, Rcode::NoError, true, question, None)),
    }
}

/// The question's name (lower case, dots between labels) and where the
/// question section ends, or `None` when it is malformed: a label or name
/// too long, a compression pointer (a query has nothing to point at), or
/// the datagram ending early.
fn read_question(query: &[u8]) -> Option<(String, usize)> {
    let mut at = HEADER_LEN;
    let mut name = String::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > MAX_LABEL_LEN {
            return None;
        }
        let label = query.get(at..at + len)?;
        at += len;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            // Bytes outside printable ASCII, and a dot inside a label, never
            // match a node id; keep them visibly wrong rather than failing
            // the whole query (a one-label `a.vpn.dstack` is not our name).
            name.push(if b.is_ascii_graphic() && b != b'.' { b.to_ascii_lowercase() as char } else { '?' });
        }
        if name.len() > MAX_NAME_LEN {
            return None;
        }
    }
    query.get(at..at + 4)?;
    Some((name, at + 4))
}

fn header(id: [u8; 2], rd: u16, rcode: Rcode, authoritative: bool, questions: u16, answers: u16) -> Vec<u8> {
    let flags = QR | rd | if authoritative { AA } else { 0 } | rcode as u16;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id);
    out.extend_from_slice(&flags.to_be_bytes());
    for count in [questions, answers, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

fn header_only(id: [u8; 2], rd: u16, rcode: Rcode) -> Vec<u8> {
    header(id, rd, rcode, false, 0, 0)
}

/// The question echoed as it came (its case too), then the A record if any;
/// the record's name points back at the question's (offset 12).
fn with_question(id: [u8; 2], rd: u16, rcode: Rcode, authoritative: bool, question: &[u8], a: Option<Ipv4Addr>) -> Vec<u8> {
    let mut out = header(id, rd, rcode, authoritative, 1, u16::from(a.is_some()));
    out.extend_from_slice(question);
    if let Some(ip) = a {
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A standard query for `name` (dots between labels) of type `qtype`: what
/// a stub resolver sends, for tests and `gateway` tools.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// A response's code and the A records of its answer section, when it parses.
pub fn parse_response(response: &[u8]) -> Option<(Rcode, Vec<Ipv4Addr>)> {
    let flags = u16::from_be_bytes([*response.get(2)?, *response.get(3)?]);
    let rcode = match flags & 0x000f {
        0 => Rcode::NoError,
        1 => Rcode::FormErr,
        3 => Rcode::NxDomain,
        4 => Rcode::NotImp,
        5 => Rcode::Refused,
        _ => return None,
    };
    let questions = u16::from_be_bytes([*response.get(4)?, *response.get(5)?]);
    let answers = u16::from_be_bytes([*response.get(6)?, *response.get(7)?]);
    let mut at = HEADER_LEN;
    if questions == 1 {
        at = read_question(response)?.1;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        // Our answers name the question by pointer: 2 bytes.
        let rr = response.get(at..at + 12)?;
        let rtype = u16::from_be_bytes([rr[2], rr[3]]);
        let len = u16::from_be_bytes([rr[10], rr[11]]) as usize;
        let data = response.get(at + 12..at + 12 + len)?;
        if rtype == TYPE_A && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 12 + len;
    }
    Some((rcode, addresses))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const AAAA: u16 = 28;

    fn zone(node_id: &str) -> Option<Ipv4Addr> {
        (node_id == "alpha").then_some(Ipv4Addr::new(10, 0, 0, 2))
    }

    fn ask(name: &str, qtype: u16) -> (Rcode, Vec<Ipv4Addr>, Vec<u8>) {
        let response = respond(&query(0x1234, name, qtype), "vpn.dstack", zone).unwrap();
        let (rcode, addresses) = parse_response(&response).unwrap();
        (rcode, addresses, response)
    }

    #[test]
    fn a_granted_node_resolves_to_its_tunnel_address() {
        let (rcode, addresses, response) = ask("alpha.vpn.dstack", TYPE_A);
        assert_eq!((rcode, addresses), (Rcode::NoError, vec![Ipv4Addr::new(10, 0, 0, 2)]));
        assert_eq!(&response[..2], &[0x12, 0x34], "the query's id");
        let flags = u16::from_be_bytes([response[2], response[3]]);
        assert_eq!(flags & (QR | AA | RD), QR | AA | RD, "a response, authoritative, RD echoed, RA clear");
        assert_eq!(ask("ALPHA.Vpn.Dstack.", TYPE_A).1, vec![Ipv4Addr::new(10, 0, 0, 2)], "names are case-insensitive");
        assert_eq!(ask("alpha.vpn.dstack", TYPE_ANY).1.len(), 1);
    }

    #[test]
    fn the_zone_answers_nxdomain_nodata_and_refuses_the_rest() {
        assert_eq!(ask("beta.vpn.dstack", TYPE_A).0, Rcode::NxDomain, "no granted token");
        assert_eq!(ask("x.alpha.vpn.dstack", TYPE_A).0, Rcode::NxDomain, "no deeper names");
        assert_eq!(ask("alpha.vpn.dstack", AAAA).0, Rcode::NoError);
        assert!(ask("alpha.vpn.dstack", AAAA).1.is_empty(), "NODATA for other types");
        assert_eq!(ask("vpn.dstack", TYPE_A).0, Rcode::NoError, "the apex exists");
        assert_eq!(ask("example.com", TYPE_A).0, Rcode::Refused, "no recursion");
        assert_eq!(ask("alphavpn.dstack", TYPE_A).0, Rcode::Refused, "a suffix, not the zone");
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        assert_eq!(respond(&[0u8; 11], "vpn.dstack", zone), None, "shorter than a header");
        let mut response_bit = query(1, "alpha.vpn.dstack", TYPE_A);
        response_bit[2] |= 0x80;
        assert_eq!(respond(&response_bit, "vpn.dstack", zone), None, "responses are never answered");
        let mut cut = query(1, "alpha.vpn.dstack", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert_eq!(parse_response(&respond(&cut, "vpn.dstack", zone).unwrap()).unwrap().0, Rcode::FormErr);
        let mut pointer = query(1, "alpha.vpn.dstack", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(parse_response(&respond(&pointer, "vpn.dstack", zone).unwrap()).unwrap().0, Rcode::FormErr);
        let mut two = query(1, "alpha.vpn.dstack", TYPE_A);
        two[5] = 2;
        assert_eq!(parse_response(&respond(&two, "vpn.dstack", zone).unwrap()).unwrap().0, Rcode::FormErr);
        let mut notify = query(1, "alpha.vpn.dstack", TYPE_A);
        notify[2] |= 4 << 3;
        let answer = respond(&notify, "vpn.dstack", zone).unwrap();
        assert_eq!(parse_response(&answer).unwrap().0, Rcode::NotImp);
        assert_eq!(answer[2] & 0x78, 4 << 3, "the opcode is copied");
        // One label holding dots is not the name `alpha.vpn.dstack`.
        let mut dotted = std::vec![0u8; 12];
        dotted[5] = 1;
        dotted.push(16);
        dotted.extend_from_slice(b"alpha.vpn.dstack");
        dotted.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_response(&respond(&dotted, "vpn.dstack", zone).unwrap()).unwrap().0, Rcode::Refused);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4000))]

        /// Any datagram: no panic, and an answer, when there is one, carries
        /// the query's id and a response flag.
        #[test]
        fn any_datagram_is_answered_safely(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Some(response) = respond(&bytes, "vpn.dstack", zone) {
                proptest::prop_assert_eq!(&response[..2], &bytes[..2]);
                proptest::prop_assert!(response[2] & 0x80 != 0);
            }
        }

        /// Queries for names built from arbitrary labels: only `alpha` in the
        /// zone ever gets an address.
        #[test]
        fn only_granted_names_get_addresses(labels in proptest::collection::vec("[a-zA-Z0-9-]{1,10}", 1..5), in_zone: bool) {
            let mut name = labels.join(".");
            if in_zone {
                name.push_str(".vpn.dstack");
            }
            let (rcode, addresses) = parse_response(&respond(&query(7, &name, TYPE_A), "vpn.dstack", zone).unwrap()).unwrap();
            let expected = name.eq_ignore_ascii_case("alpha.vpn.dstack");
            proptest::prop_assert_eq!(!addresses.is_empty(), expected);
            if !in_zone && !name.to_ascii_lowercase().ends_with("vpn.dstack") {
                proptest::prop_assert_eq!(rcode, Rcode::Refused);
            }
        }
    }
}
