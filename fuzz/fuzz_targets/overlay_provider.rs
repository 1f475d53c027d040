#![no_main]
//! Any key and value as a provider entry: the overlay indexes it or
//! rejects it, never panics, and lookups stay bounded.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::overlay::Overlay;
use rumor_core::replica::{Change, Entry, Namespace, Version};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = (data[0] as usize).min(data.len() - 1);
    let (key, value) = data[1..].split_at(split.min(data.len() - 1));
    let e = Entry {
        ns: Namespace::PROVIDERS,
        key: key.to_vec().into(),
        value: value.to_vec().into(),
        writer: 1,
        version: Version(1),
        expires_ms: 0,
        deleted: false,
    };
    let mut o = Overlay::new();
    o.follow(&Change::Applied(e));
    let ih = InfoHash(key.get(..20).and_then(|k| k.try_into().ok()).unwrap_or([0; 20]));
    assert!(o.lookup(&ih, 0, 1000, None).len() <= rumor_core::overlay::LOOKUP_MAX);
});
