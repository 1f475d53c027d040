#![no_main]
//! Feeds a torrent machine (a seed, so it also serves reads) an arbitrary
//! sequence of inputs built from the fuzz bytes: connections, raw peer
//! bytes (after a valid handshake or not), read and hash results, piece
//! priorities, time.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::metainfo::{Limits, TorrentBuilder};
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::torrent::{Input, Output, Torrent, TorrentConfig};
use rumor_core::bt::wire::{BlockRef, Handshake};
use rumor_core::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let pieces = vec![[0u8; 20]; 5];
    let (_, meta) = TorrentBuilder::single("f", 5 * 32768 - 100, 32768, pieces)
        .build(&Limits::default())
        .expect("fixed torrent builds");
    let seeding = data.first().is_some_and(|b| b & 1 == 1);
    let have = if seeding { Bitfield::full(5) } else { Bitfield::new(5) };
    let mut t = Torrent::new(TorrentConfig::new([1; 20]), &meta, &have, Instant::ZERO, 3);
    let mut now = Instant::ZERO;
    let mut rest = data.get(1..).unwrap_or(&[]);
    while let Some((&op, tail)) = rest.split_first() {
        let peer = (op >> 4) as u64 % 4;
        let len = (*tail.first().unwrap_or(&0) as usize).min(tail.len().saturating_sub(1));
        let body = tail.get(1..1 + len).unwrap_or(&[]);
        rest = tail.get(1 + len..).unwrap_or(&[]);
        let input = match op % 7 {
            0 => Input::Peer(PeerInput::Connected { peer }),
            1 => {
                let mut hs = Vec::new();
                Handshake::new(meta.info_hash, [peer as u8 + 2; 20]).encode(&mut hs);
                Input::Peer(PeerInput::Bytes { peer, bytes: hs.into() })
            }
            2 => Input::Peer(PeerInput::Bytes { peer, bytes: body.to_vec().into() }),
            3 => Input::Peer(PeerInput::Closed { peer, reason: CloseReason::Hangup }),
            4 => Input::PieceChecked { piece: len as u32 % 6, ok: op & 8 != 0 },
            5 => Input::BlockRead {
                peer,
                block: BlockRef { index: len as u32 % 5, begin: 0, length: 16384 },
                data: vec![0; 16384].into(),
            },
            // Piece priorities (0 skip, 1 normal, 2 high), from the body.
            _ if op & 8 != 0 && len & 1 == 1 => Input::SetPiecePriorities(body.iter().map(|b| b % 3).collect()),
            // A newcomer wants a slot: someone may give way.
            _ if op & 8 != 0 => Input::MakeRoom,
            _ => {
                now += Duration::from_millis(len as u64 * 100);
                Input::Timeout
            }
        };
        t.handle(now, input);
        loop {
            if let Output::Timeout(_) = t.poll_output() {
                break;
            }
        }
        t.check_invariants();
    }
});
