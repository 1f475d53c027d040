#![no_main]
//! Fast resume records from the disk: any bytes either decode or are
//! refused, never a panic; what decodes round-trips; and the restart plan
//! built from any decoded record never trusts a piece it also rechecks.
//! The first byte picks the layer: even = a whole stored record (version,
//! checksum, body), odd = a body alone (past the checksum, where the
//! postcard decoder meets the bytes).
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metainfo::{Limits, Metainfo, TorrentBuilder};
use rumor_core::bt::resume::{decode, decode_body, encode, plan};

const KEY: [u8; 20] = [0x5a; 20];

static META: std::sync::OnceLock<Metainfo> = std::sync::OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let got = if mode & 1 == 0 { decode(&KEY, bytes) } else { decode_body(bytes) };
    let Ok(record) = got else {
        return;
    };
    assert_eq!(decode(&KEY, &encode(&KEY, &record)).as_ref(), Ok(&record));
    let meta = META.get_or_init(|| {
        // Three files over five 16 KiB pieces; pieces 1 and 3 are shared.
        let files =
            vec![(vec!["a".to_string()], 20_000), (vec!["b".to_string()], 30_000), (vec!["c".to_string()], 20_000)];
        TorrentBuilder::multi("t", files, 16384, vec![[0; 20]; 5]).build(&Limits::default()).expect("fixed torrent").1
    });
    for now in [record.stamps.clone(), Vec::new()] {
        let p = plan(meta, &record, &now);
        assert_eq!(p.trusted.len(), 5);
        assert!(p.recheck.iter().all(|r| *r < 5 && !p.trusted.get(*r)));
        assert!(p.changed_files.iter().all(|f| *f < 3));
    }
});
