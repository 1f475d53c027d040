#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::pex::PexMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PexMessage::parse(data) {
        let again = PexMessage::parse(&m.encode()).expect("own encoding parses");
        assert!(again.added.len() <= m.added.len());
    }
});
