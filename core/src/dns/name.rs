//! Domain names: stored in uncompressed wire form (length-prefixed labels
//! ending in the root label), letter case preserved as received.
//!
//! Equality and hashing are byte-wise, so a store keys its maps with
//! [`Name::to_lowercase`] and answers keep the case the client asked with.

use core::fmt;

/// Longest name on the wire, root label included (RFC 1035 section 2.3.4).
pub const NAME_MAX_BYTES: usize = 255;
/// Longest label (RFC 1035 section 2.3.4).
pub const LABEL_MAX_BYTES: usize = 63;

/// Name bytes: most names fit inline, so a map keyed by names keeps its
/// keys in its own buckets and a lookup does not chase a pointer.
pub(crate) type NameBytes = smallvec::SmallVec<[u8; 32]>;

/// A domain name in wire form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// Labels as `len, bytes...`, ending with the zero-length root label.
    wire: NameBytes,
}

/// Why text could not be made into a [`Name`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// A label is empty (two dots in a row, or a leading dot).
    EmptyLabel,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// The whole name is longer than 255 bytes on the wire.
    NameTooLong,
    /// A byte that is not allowed in a name (controls, spaces, non-ASCII).
    BadCharacter(u8),
    /// A `\` escape that is incomplete or out of range.
    BadEscape,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::EmptyLabel => f.write_str("empty label"),
            NameError::LabelTooLong => f.write_str("label longer than 63 bytes"),
            NameError::NameTooLong => f.write_str("name longer than 255 bytes"),
            NameError::BadCharacter(b) => write!(f, "character 0x{b:02x} is not allowed"),
            NameError::BadEscape => f.write_str("bad escape"),
        }
    }
}

impl std::error::Error for NameError {}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: smallvec::smallvec![0] }
    }

    /// Builds a name from labels already split; used by the wire decoder,
    /// which has checked the limits.
    pub(crate) fn from_wire_unchecked(wire: NameBytes) -> Name {
        debug_assert!(wire.last() == Some(&0));
        Name { wire }
    }

    /// Checks and adopts an uncompressed wire-form name (as stored on disk
    /// or in a replicated value).
    pub fn from_wire(wire: &[u8]) -> Result<Name, NameError> {
        if wire.len() > NAME_MAX_BYTES {
            return Err(NameError::NameTooLong);
        }
        let mut pos = 0;
        loop {
            let Some(&len) = wire.get(pos) else {
                return Err(NameError::EmptyLabel);
            };
            if len == 0 {
                if pos + 1 != wire.len() {
                    return Err(NameError::BadCharacter(0));
                }
                return Ok(Name { wire: NameBytes::from_slice(wire) });
            }
            if len as usize > LABEL_MAX_BYTES {
                return Err(NameError::LabelTooLong);
            }
            pos += 1 + len as usize;
        }
    }

    /// Parses presentation format (`free.local`, `free.local.`, with `\.`,
    /// `\\` and `\DDD` escapes). A trailing dot is optional: every name is
    /// taken as absolute.
    pub fn from_ascii(text: &str) -> Result<Name, NameError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes == b"." {
            return Ok(Name::root());
        }
        let mut wire = NameBytes::with_capacity(bytes.len() + 2);
        let mut label_start = 0usize;
        wire.push(0);
        let mut i = 0usize;
        let body = if bytes.ends_with(b".") && !bytes.ends_with(b"\\.") { &bytes[..bytes.len() - 1] } else { bytes };
        while i < body.len() {
            let c = body[i];
            match c {
                b'.' => {
                    close_label(&mut wire, label_start)?;
                    label_start = wire.len();
                    wire.push(0);
                    i += 1;
                    continue;
                }
                b'\\' => {
                    let (value, used) = unescape(&body[i + 1..])?;
                    wire.push(value);
                    i += 1 + used;
                }
                0x21..=0x7e => {
                    wire.push(c);
                    i += 1;
                }
                other => return Err(NameError::BadCharacter(other)),
            }
            if wire.len() - label_start - 1 > LABEL_MAX_BYTES {
                return Err(NameError::LabelTooLong);
            }
        }
        close_label(&mut wire, label_start)?;
        wire.push(0);
        if wire.len() > NAME_MAX_BYTES {
            return Err(NameError::NameTooLong);
        }
        Ok(Name { wire })
    }

    /// The name in wire form, uncompressed, root label included.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Length on the wire when not compressed.
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// True for the root name.
    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// Iterates the labels from the leftmost, root excluded.
    pub fn labels(&self) -> Labels<'_> {
        Labels { wire: &self.wire, pos: 0 }
    }

    /// Number of labels, root excluded.
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// The same name with ASCII letters folded to lower case; use it as the
    /// key of any map of names (DNS names compare case-insensitively).
    pub fn to_lowercase(&self) -> Name {
        let mut wire = self.wire.clone();
        let mut pos = 0;
        while pos < wire.len() {
            let len = wire[pos] as usize;
            if len == 0 {
                break;
            }
            wire[pos + 1..pos + 1 + len].make_ascii_lowercase();
            pos += 1 + len;
        }
        Name { wire }
    }

    /// True if the name is already all lower case.
    pub fn is_lowercase(&self) -> bool {
        !self.wire.iter().any(|b| b.is_ascii_uppercase())
    }

    /// Compares two names ignoring ASCII letter case.
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }

    /// The name without its leftmost label (`a.b.` gives `b.`); the root's
    /// parent is `None`.
    pub fn parent(&self) -> Option<Name> {
        if self.is_root() {
            return None;
        }
        let skip = 1 + self.wire[0] as usize;
        Some(Name { wire: NameBytes::from_slice(&self.wire[skip..]) })
    }

    /// True if `self` equals `zone` or lies below it (case-insensitive).
    pub fn is_within(&self, zone: &Name) -> bool {
        if zone.wire.len() > self.wire.len() {
            return false;
        }
        let offset = self.wire.len() - zone.wire.len();
        if !self.wire[offset..].eq_ignore_ascii_case(&zone.wire) {
            return false;
        }
        // The suffix must start on a label boundary.
        let mut pos = 0;
        while pos < offset {
            pos += 1 + self.wire[pos] as usize;
        }
        pos == offset
    }

    /// `label.self`, or an error if the result breaks the limits.
    pub fn prepend(&self, label: &[u8]) -> Result<Name, NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > LABEL_MAX_BYTES {
            return Err(NameError::LabelTooLong);
        }
        if self.wire.len() + 1 + label.len() > NAME_MAX_BYTES {
            return Err(NameError::NameTooLong);
        }
        let mut wire = NameBytes::with_capacity(self.wire.len() + 1 + label.len());
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
        wire.extend_from_slice(&self.wire);
        Ok(Name { wire })
    }

    /// A key whose byte order is DNS canonical order (RFC 4034 section 6.1)
    /// for lower-case names: labels from the root outward, each followed by
    /// a 0 separator. Names below `n` are exactly the keys that start with
    /// `n`'s key.
    pub fn canonical_key(&self) -> Vec<u8> {
        canonical_key_of_wire(&self.wire)
    }
}

/// [`Name::canonical_key`] of a name given in valid uncompressed wire form.
pub fn canonical_key_of_wire(wire: &[u8]) -> Vec<u8> {
    let labels: Vec<&[u8]> = Labels { wire, pos: 0 }.collect();
    let mut key = Vec::with_capacity(wire.len());
    for label in labels.iter().rev() {
        key.extend(label.iter().map(|b| b.to_ascii_lowercase()));
        key.push(0);
    }
    key
}

/// Lets maps keyed by lower-case [`Name`]s be searched with the wire bytes
/// of a name (no allocation on the query path). Consistent with `Eq` and
/// `Hash`, which both look at the wire bytes only.
impl core::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        &self.wire
    }
}

fn close_label(wire: &mut [u8], label_start: usize) -> Result<(), NameError> {
    let len = wire.len() - label_start - 1;
    if len == 0 {
        return Err(NameError::EmptyLabel);
    }
    if len > LABEL_MAX_BYTES {
        return Err(NameError::LabelTooLong);
    }
    wire[label_start] = len as u8;
    Ok(())
}

/// Decodes the escape after a backslash; returns the byte and how many input
/// bytes it used.
fn unescape(rest: &[u8]) -> Result<(u8, usize), NameError> {
    match rest {
        [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let v = (a - b'0') as u32 * 100 + (b - b'0') as u32 * 10 + (c - b'0') as u32;
            u8::try_from(v).map(|v| (v, 3)).map_err(|_| NameError::BadEscape)
        }
        [d, ..] if d.is_ascii_digit() => Err(NameError::BadEscape),
        [c, ..] => Ok((*c, 1)),
        [] => Err(NameError::BadEscape),
    }
}

/// Iterator over a name's labels.
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = &self.wire[self.pos + 1..self.pos + 1 + len];
        self.pos += 1 + len;
        Some(label)
    }
}

impl fmt::Display for Name {
    /// Presentation format with a trailing dot, escaping what needs it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => write!(f, "\\{}", b as char)?,
                    0x21..=0x7e => write!(f, "{}", b as char)?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl core::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::from_ascii(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_trailing_dot() {
        let n = Name::from_ascii("Free.Local").unwrap();
        assert_eq!(n.to_string(), "Free.Local.");
        assert_eq!(n.as_wire(), b"\x04Free\x05Local\x00");
        assert_eq!(Name::from_ascii("free.local.").unwrap().to_lowercase(), n.to_lowercase());
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(Name::from_ascii("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(Name::from_ascii(&"a".repeat(64)), Err(NameError::LabelTooLong));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(Name::from_ascii(&long), Err(NameError::NameTooLong));
        assert_eq!(Name::from_ascii("a b"), Err(NameError::BadCharacter(b' ')));
    }

    #[test]
    fn escapes_decode_and_display() {
        let n = Name::from_ascii("a\\.b.c").unwrap();
        assert_eq!(n.label_count(), 2);
        assert_eq!(n.to_string(), "a\\.b.c.");
        let n = Name::from_ascii("\\065x").unwrap();
        assert_eq!(n.to_string(), "Ax.");
        assert_eq!(Name::from_ascii("\\256"), Err(NameError::BadEscape));
    }

    #[test]
    fn within_respects_label_boundaries() {
        let zone = Name::from_ascii("local").unwrap();
        assert!(Name::from_ascii("free.LOCAL").unwrap().is_within(&zone));
        assert!(zone.is_within(&zone));
        assert!(!Name::from_ascii("freelocal").unwrap().is_within(&zone));
        assert!(Name::from_ascii("x").unwrap().is_within(&Name::root()));
    }

    #[test]
    fn canonical_keys_put_children_after_parent_with_common_prefix() {
        let parent = Name::from_ascii("b.local").unwrap().canonical_key();
        let child = Name::from_ascii("a.B.local").unwrap().canonical_key();
        assert!(child.starts_with(&parent));
        assert!(child > parent);
    }
}
