//! Hostile bytes never panic the envelope/message decoder, nor the machine.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use proptest::prelude::*;
use rumor_core::gossip::{open, Config, Gossip, Input, Keyring, Now, Output, PeerAddr};

const KEY: [u8; 32] = [5; 32];

/// Seals arbitrary plaintext under the cluster key, so the parser behind the
/// AEAD sees hostile input too (a peer that holds the key but misbehaves).
fn seal_raw(plain: &[u8]) -> Vec<u8> {
    let c = XChaCha20Poly1305::new(&KEY.into());
    let header = [1u8, 1u8];
    let nonce = [9u8; 24];
    let ct = c.encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &header }).unwrap();
    let mut out = header.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn opening_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let ring = Keyring::new(1, KEY);
        let _ = open(&ring, &bytes, 65_536);
    }

    #[test]
    fn parsing_arbitrary_authenticated_plaintext_never_panics(
        flag in 0u8..3,
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let ring = Keyring::new(1, KEY);
        let mut plain = vec![flag];
        plain.extend_from_slice(&body);
        let _ = open(&ring, &seal_raw(&plain), 65_536);
    }

    #[test]
    fn the_machine_drops_arbitrary_authenticated_messages_without_panicking(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
    ) {
        let now = Now { at: rumor_core::time::Instant::ZERO, wall_ms: 1_700_000_000_000 };
        let mut g = Gossip::new(Config::new(PeerAddr::from("me"), Keyring::new(1, KEY)), 1, now, 3);
        for m in msgs {
            let mut plain = vec![0u8];
            plain.extend_from_slice(&m);
            g.handle(now, Input::Receive { from: PeerAddr::from("x"), bytes: seal_raw(&plain) });
            while !matches!(g.poll_output(), Output::Timeout(_)) {}
        }
    }
}
