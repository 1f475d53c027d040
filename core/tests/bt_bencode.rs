use proptest::prelude::*;
use rumor_core::bt::bencode::{decode, Value};
use std::borrow::Cow;

fn value() -> impl Strategy<Value = Value<'static>> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::bytes),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6).prop_map(Cow::Owned),
                inner,
                0..6
            )
            .prop_map(Value::Dict),
        ]
    })
}

/// Encodes with every dictionary's keys in reverse order (not canonical).
fn encode_reversed(v: &Value<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Dict(d) => {
            out.push(b'd');
            for (k, x) in d.iter().rev() {
                out.extend_from_slice(format!("{}:", k.len()).as_bytes());
                out.extend_from_slice(k);
                encode_reversed(x, out);
            }
            out.push(b'e');
        }
        Value::List(l) => {
            out.push(b'l');
            for x in l {
                encode_reversed(x, out);
            }
            out.push(b'e');
        }
        other => other.encode(out),
    }
}

proptest! {
    #[test]
    fn canonical_encodings_round_trip(v in value()) {
        let b = v.to_bytes();
        prop_assert_eq!(decode(&b).unwrap(), v);
    }

    #[test]
    fn unsorted_encodings_decode_to_the_same_value(v in value()) {
        let mut b = Vec::new();
        encode_reversed(&v, &mut b);
        prop_assert_eq!(decode(&b).unwrap(), v);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&b);
    }

    #[test]
    fn decoding_mutated_unsorted_encodings_never_panics(v in value(), i in any::<usize>(), x in any::<u8>()) {
        let mut b = Vec::new();
        encode_reversed(&v, &mut b);
        let n = b.len();
        b[i % n] = x;
        if let Ok(d) = decode(&b) {
            // Whatever is accepted re-encodes canonically and decodes the same.
            let again = d.to_bytes();
            prop_assert_eq!(decode(&again).unwrap(), d);
        }
    }
}
