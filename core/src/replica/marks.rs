//! The wire form of `(writer, version)` lists: digests, the watermarks a
//! delta or full transfer completes, the recent writers beside a summary.
//!
//! Plain postcard spent a varint of up to 10 bytes on each writer id and 9
//! on each version (a hybrid-logical-clock version is wall-clock
//! milliseconds shifted left 16 bits, about 2^57), so a 1,024-writer
//! digest was about 19 KB, and digests were most of anti-entropy's bytes.
//! Here a list is one sequence of varints: the largest version in the
//! list, then for each pair the zigzagged difference from the previous
//! writer id (small between the sorted ids of a digest) and how far the
//! version lies below the largest (versions of one cluster are close:
//! within an hour of each other is under 2^38, 5 bytes). The order of the
//! list is kept exactly.

use core::fmt;

use serde::de::{Error, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};

use super::entry::{NodeId, Version};

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Writes `marks` in the compact form (for `#[serde(with = ...)]`).
pub fn serialize<S: Serializer>(marks: &[(NodeId, Version)], s: S) -> Result<S::Ok, S::Error> {
    let base = marks.iter().map(|(_, v)| v.0).max().unwrap_or(0);
    let mut seq = s.serialize_seq(Some(1 + 2 * marks.len()))?;
    seq.serialize_element(&base)?;
    let mut prev = 0u64;
    for (w, v) in marks {
        seq.serialize_element(&zigzag(w.wrapping_sub(prev) as i64))?;
        seq.serialize_element(&(base - v.0))?;
        prev = *w;
    }
    seq.end()
}

/// Reads a list written by [`serialize`]; a sequence of the wrong shape is
/// an error, never a panic.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(NodeId, Version)>, D::Error> {
    d.deserialize_seq(MarksVisitor)
}

struct MarksVisitor;

impl<'de> Visitor<'de> for MarksVisitor {
    type Value = Vec<(NodeId, Version)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base version, then (writer delta, version offset) pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(base) = seq.next_element::<u64>()? else {
            return Ok(Vec::new());
        };
        // The message's size bounds the list; the hint only sizes the
        // first allocation, so a lying length costs nothing.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096) / 2);
        let mut prev = 0u64;
        while let Some(dw) = seq.next_element::<u64>()? {
            let Some(dv) = seq.next_element::<u64>()? else {
                return Err(A::Error::custom("a writer without its version"));
            };
            let Some(v) = base.checked_sub(dv) else {
                return Err(A::Error::custom("a version below zero"));
            };
            let w = prev.wrapping_add(unzigzag(dw) as u64);
            out.push((w, Version(v)));
            prev = w;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "super")] Vec<(NodeId, Version)>);

    #[test]
    fn any_list_comes_back_as_it_was_in_order() {
        let mut rng = crate::rand::Rng::new(16);
        for round in 0..2_000 {
            let n = rng.index(40);
            let mut list: Vec<(NodeId, Version)> = (0..n)
                .map(|_| {
                    let w = if round % 2 == 0 { rng.next_u64() } else { rng.below(50) };
                    let v = match rng.below(3) {
                        0 => rng.next_u64(),
                        1 => u64::MAX - rng.below(10),
                        _ => rng.below(1_000),
                    };
                    (w, Version(v))
                })
                .collect();
            if round % 3 == 0 {
                list.sort();
            }
            let bytes = postcard::to_allocvec(&Wrapped(list.clone())).expect("serializes");
            let back: Wrapped = postcard::from_bytes(&bytes).expect("parses");
            assert_eq!(back.0, list);
        }
    }

    #[test]
    fn a_sorted_digest_of_recent_versions_is_small() {
        // 1,024 random writer ids, versions within the last minute.
        let mut rng = crate::rand::Rng::new(7);
        let now = Version::new(1_800_000_000_000, 0).0;
        let mut list: Vec<(NodeId, Version)> =
            (0..1024).map(|_| (rng.next_u64(), Version(now - rng.below(60_000 << 16)))).collect();
        list.sort();
        let compact = postcard::to_allocvec(&Wrapped(list.clone())).expect("serializes");
        let plain = postcard::to_allocvec(&list).expect("serializes");
        assert!(compact.len() * 4 < plain.len() * 3, "{} bytes against {}", compact.len(), plain.len());
    }

    #[test]
    fn malformed_lists_are_errors() {
        // Odd count: a writer without its version.
        let odd = postcard::to_allocvec(&vec![5u64, 1, 1, 2]).expect("serializes");
        assert!(postcard::from_bytes::<Wrapped>(&odd).is_err());
        // An offset larger than the base.
        let under = postcard::to_allocvec(&vec![5u64, 1, 6]).expect("serializes");
        assert!(postcard::from_bytes::<Wrapped>(&under).is_err());
        // A length that promises more than there is.
        assert!(postcard::from_bytes::<Wrapped>(&[200, 1, 1]).is_err());
        assert_eq!(postcard::from_bytes::<Wrapped>(&[0]).expect("empty").0, vec![]);
    }
}
