#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::{bencode, metainfo};

/// A component that is safe to join under the download directory.
fn safe(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && c.len() <= 255 && !c.contains(['/', '\\']) && !c.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::decode(data) {
        // Canonical re-encoding must decode to the same value.
        let again = v.to_bytes();
        assert_eq!(bencode::decode(&again).ok(), Some(v));
    }
    if let Ok(m) = metainfo::Metainfo::parse(data) {
        assert_eq!(m.info_hash, metainfo::InfoHash::of_info_bytes(&m.info_bytes));
        let layout = m.layout();
        assert_eq!(layout.piece_count() as usize, m.pieces.len());
        let prio = m.piece_priorities(&data[..data.len().min(m.files.len())]);
        assert_eq!(prio.len(), m.pieces.len());
        assert!(prio.iter().all(|p| *p <= 2));
        let full = rumor_core::bt::bitfield::Bitfield::full(m.pieces.len() as u32);
        let lengths: Vec<u64> = m.files.iter().map(|f| f.length).collect();
        assert_eq!(m.file_progress(&full), lengths);
        // Whatever the names in the torrent, what reaches the disk is safe
        // and no two written files share a path (ignoring case).
        assert!(safe(&m.name), "{:?}", m.name);
        let mut seen = std::collections::BTreeSet::new();
        for f in &m.files {
            assert!(f.path.iter().all(|c| safe(c)), "{:?}", f.path);
            if let Some(link) = &f.symlink {
                assert!(link.target.iter().all(|c| safe(c)), "{:?}", link.target);
                assert_eq!(f.length, 0);
            }
            if !f.padding {
                let key: Vec<String> = f.path.iter().map(|c| c.to_lowercase()).collect();
                assert!(seen.insert(key), "two files at {:?}", f.path);
            }
        }
        assert_eq!(m.files.iter().map(|f| f.length).sum::<u64>(), m.total_length);
    }
});
