#![no_main]
//! Feeds the metadata fetcher arbitrary inputs from up to four peers.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::magnet::{self, FetchConfig, MetadataFetch};
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::wire::Handshake;
use rumor_core::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let ih = InfoHash([4; 20]);
    let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), ih, Instant::ZERO);
    let mut now = Instant::ZERO;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let peer = (op >> 4) as u64 % 4;
        let len = (*tail.first().unwrap_or(&0) as usize).min(tail.len().saturating_sub(1));
        let body = tail.get(1..1 + len).unwrap_or(&[]);
        rest = tail.get(1 + len..).unwrap_or(&[]);
        let input = match op % 5 {
            0 => magnet::Input::Peer(PeerInput::Connected { peer }),
            1 => {
                let mut hs = Vec::new();
                Handshake::new(ih, [peer as u8 + 2; 20]).encode(&mut hs);
                magnet::Input::Peer(PeerInput::Bytes { peer, bytes: hs.into() })
            }
            2 => magnet::Input::Peer(PeerInput::Bytes { peer, bytes: body.to_vec().into() }),
            3 => magnet::Input::Peer(PeerInput::Closed { peer, reason: CloseReason::Hangup }),
            _ => {
                now += Duration::from_millis(len as u64 * 200);
                magnet::Input::Timeout
            }
        };
        f.handle(now, input);
        while !matches!(f.poll_output(), magnet::Output::Timeout(_)) {}
    }
});
