#![no_main]
//! The MSE handshake machine. The first byte picks the case:
//! bit 0 and 1: 0 = a responder fed the rest as a peer's bytes, 1 = an
//! initiator fed them, 2 or 3 = an initiator and a responder driven
//! against each other with the rest as cut sizes (they must agree);
//! bits 2-3: the methods; bit 4: plain handshakes allowed; bit 5: prefer
//! RC4; bits 5-7: the chunk size for the first two cases. The seeds hold real transcripts
//! toward a responder with secret [7; 20] and pad seed 1, so mutations
//! reach every stage, not only the key exchange.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::mse::{Config, Handshake, Method, Methods, Output, Secret, HANDSHAKE_MAX};

const IH: InfoHash = InfoHash([0xab; 20]);

fn drain(h: &mut Handshake, wire: &mut Vec<u8>, done: &mut Option<Method>) {
    loop {
        match h.poll_output() {
            Output::Transmit(b) => {
                assert!(b.len() <= 96 + 512 + 20 + 20 + 14 + 512 + 2, "our own messages are bounded");
                wire.extend_from_slice(&b);
            }
            Output::Done(o) => {
                assert!(done.is_none(), "one outcome");
                *done = Some(o.method);
            }
            Output::Failed(_) => assert!(h.is_ended()),
            Output::Pending => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let methods = Methods((mode as u32 >> 2) & 3);
    let prefer_rc4 = mode & 32 != 0;
    let config = Config { methods, allow_plain: mode & 16 != 0, prefer_rc4 };
    if mode & 2 == 0 {
        let secret = Secret { private_key: [7; 20], pad_seed: 1 };
        let mut h = if mode & 1 == 0 {
            Handshake::responder(config, &[InfoHash([1; 20]), IH], secret)
        } else {
            Handshake::initiator(config, IH, secret, Vec::new())
        };
        let chunk = ((mode >> 5) as usize + 1) * 61;
        let (mut wire, mut done) = (Vec::new(), None);
        for c in rest.chunks(chunk) {
            h.receive(c);
            drain(&mut h, &mut wire, &mut done);
        }
        if rest.len() > HANDSHAKE_MAX {
            assert!(h.is_ended(), "no handshake is longer than HANDSHAKE_MAX");
        }
        return;
    }
    if rest.len() < 2 {
        return;
    }
    let theirs = Methods((rest[0] as u32) & 3);
    let cuts: Vec<usize> = rest[1..].iter().map(|&b| b as usize * 4 + 1).collect();
    let mut a = Handshake::initiator(config, IH, Secret { private_key: [5; 20], pad_seed: rest[0] as u64 }, Vec::new());
    let mut b = Handshake::responder(
        Config { methods: theirs, allow_plain: false, prefer_rc4 },
        &[IH],
        Secret { private_key: [7; 20], pad_seed: rest[1] as u64 },
    );
    let (mut ab, mut ba, mut da, mut db) = (Vec::new(), Vec::new(), None, None);
    let mut i = 0;
    for _ in 0..10_000 {
        drain(&mut a, &mut ab, &mut da);
        drain(&mut b, &mut ba, &mut db);
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        for (wire, to) in [(&mut ab, &mut b), (&mut ba, &mut a)] {
            let n = cuts[i % cuts.len()].min(wire.len());
            i += 1;
            let c: Vec<u8> = wire.drain(..n).collect();
            to.receive(&c);
        }
    }
    assert!(ab.is_empty() && ba.is_empty(), "the pair settles");
    let common = methods.0 & theirs.0;
    if common == 0 {
        assert!(da.is_none() && db.is_none());
    } else {
        assert_eq!(da, db, "both sides agree");
        let rc4 = common & 2 != 0 && (prefer_rc4 || common & 1 == 0);
        let want = if rc4 { Method::Rc4 } else { Method::Plaintext };
        assert_eq!(da, Some(want));
    }
});
