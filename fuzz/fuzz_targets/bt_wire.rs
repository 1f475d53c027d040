#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::wire::{Decoder, DecoderConfig, ExtHandshake};

fuzz_target!(|data: &[u8]| {
    // First byte picks the piece count and whether a handshake leads.
    let (cfg_byte, rest) = match data.split_first() {
        Some((b, r)) => (*b, r),
        None => return,
    };
    let mut d = Decoder::new(DecoderConfig {
        piece_count: (cfg_byte & 0x7F) as u32,
        expect_handshake: cfg_byte & 0x80 != 0,
        ..DecoderConfig::default()
    });
    // Feed in two parts to exercise partial frames: the first copied,
    // the second as a shared chunk (messages sliced out of it). The cut is
    // in the middle, or after 13 bytes when the input is long enough to
    // hold a piece message, which reaches the decoder's case of a header
    // fed apart from its payload.
    let cut = if cfg_byte & 0x40 != 0 && rest.len() > 13 { 13 } else { rest.len() / 2 };
    let (a, b) = rest.split_at(cut);
    for (i, part) in [a, b].into_iter().enumerate() {
        if i == 0 {
            d.feed(part);
        } else {
            d.feed_bytes(bytes::Bytes::copy_from_slice(part));
        }
        let _ = d.take_handshake();
        while let Some(r) = d.next() {
            if let Ok(m) = r {
                let _ = m.to_vec();
            }
        }
    }
    let _ = ExtHandshake::parse(rest);
});
