#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metadata::MetadataMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = MetadataMessage::parse(&data.to_vec().into()) {
        let again = MetadataMessage::parse(&m.encode().into()).expect("own encoding parses");
        assert_eq!(again, m);
    }
});
