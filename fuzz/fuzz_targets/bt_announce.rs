#![no_main]
//! Feeds the announcer arbitrary tracker answers, failures and time.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::announce::{AnnounceConfig, Input, Output, Announcer};
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let tiers = vec![
        vec!["http://a/announce".to_string(), "udp://b:1".to_string()],
        vec!["udp://c:2/announce".to_string()],
    ];
    let mut a = Announcer::new(AnnounceConfig::new([7; 20], 1), InfoHash([1; 20]), &tiers, 5, Instant::ZERO, 3);
    let mut now = Instant::ZERO;
    let mut last = 0;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = (*tail.first().unwrap_or(&0) as usize).min(tail.len().saturating_sub(1));
        let body = tail.get(1..1 + len).unwrap_or(&[]).to_vec();
        rest = tail.get(1 + len..).unwrap_or(&[]);
        loop {
            match a.poll_output() {
                Output::Timeout(_) => break,
                Output::HttpGet { id, .. } | Output::UdpSend { id, .. } => last = id,
                _ => {}
            }
        }
        let input = match op % 6 {
            0 => Input::HttpBody { id: last, body },
            1 => Input::UdpDatagram { id: last, bytes: body, ipv6: op & 0x80 != 0 },
            2 => Input::RequestFailed { id: last },
            3 => Input::Completed,
            4 => Input::Stop,
            _ => {
                now += Duration::from_secs(len as u64);
                Input::Timeout
            }
        };
        a.handle(now, input);
    }
});
