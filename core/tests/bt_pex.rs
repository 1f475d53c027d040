use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use proptest::prelude::*;
use rumor_core::bt::pex::*;

#[test]
fn a_pex_message_round_trips_with_flags_and_both_families() {
    let m = PexMessage {
        added: vec![
            PexPeer { addr: "1.2.3.4:5".parse().unwrap(), flags: 2 },
            PexPeer { addr: "[::1]:6881".parse().unwrap(), flags: 0x10 },
        ],
        dropped: vec!["9.9.9.9:1".parse().unwrap()],
    };
    assert_eq!(PexMessage::parse(&m.encode()).unwrap(), m);
}

#[test]
fn missing_flags_read_as_zero_and_bad_lengths_are_refused() {
    let m = PexMessage::parse(b"d5:added6:\x01\x02\x03\x04\x00\x50e").unwrap();
    assert_eq!(m.added, vec![PexPeer { addr: "1.2.3.4:80".parse().unwrap(), flags: 0 }]);
    assert_eq!(PexMessage::parse(b"d5:added5:abcdee").unwrap_err(), PexError::BadLength("added"));
    assert!(PexMessage::parse(b"le").is_err());
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<bool>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(v6, o, port)| {
        let ip = if v6 { IpAddr::V6(Ipv6Addr::from(o)) } else { IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])) };
        SocketAddr::new(ip, port)
    })
}

proptest! {
    #[test]
    fn pex_messages_round_trip(
        added in proptest::collection::vec((addr(), any::<u8>()), 0..30),
        dropped in proptest::collection::vec(addr(), 0..30),
    ) {
        let mut added: Vec<PexPeer> = added.into_iter().map(|(addr, flags)| PexPeer { addr, flags }).collect();
        let mut dropped = dropped;
        // The decoder yields IPv4 before IPv6.
        added.sort_by_key(|p| p.addr.is_ipv6());
        dropped.sort_by_key(|a| a.is_ipv6());
        let m = PexMessage { added, dropped };
        prop_assert_eq!(PexMessage::parse(&m.encode()).unwrap(), m);
    }

    #[test]
    fn parsing_arbitrary_pex_payloads_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = PexMessage::parse(&b);
    }
}
