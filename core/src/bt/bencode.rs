//! Bencode (BEP 3) values: decoding with hard limits on top of `bendy`'s
//! tokenizer, and a deterministic encoder (dictionary keys sorted).
//!
//! Use [`decode`] on bytes that came from outside (a .torrent, a tracker
//! response, an extension message) and [`Value::encode`] to produce bytes.
//! Every decode error carries the byte offset where the problem was seen.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bendy::decoding::{Decoder, Object};

/// Limits applied while decoding; every collection a peer can make us build
/// is bounded by one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries accepted.
    pub depth_max: usize,
    /// Most values (of any kind, counted over the whole document) accepted.
    pub values_max: usize,
    /// Longest input accepted, in bytes.
    pub bytes_max: usize,
}

impl Default for Limits {
    /// 32 levels deep, one million values, 16 MiB of input: enough for any
    /// sane torrent or tracker response.
    fn default() -> Self {
        Limits { depth_max: 32, values_max: 1_000_000, bytes_max: 16 << 20 }
    }
}

/// Why bencoded bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BencodeErrorKind {
    /// The bytes are not well-formed bencode (the text comes from the tokenizer).
    Syntax(String),
    /// Nesting went deeper than [`Limits::depth_max`].
    TooDeep,
    /// More values than [`Limits::values_max`].
    TooManyValues,
    /// Input longer than [`Limits::bytes_max`].
    TooLong,
    /// An integer does not fit in an `i64`.
    IntegerOverflow,
    /// A dictionary holds the same key twice.
    DuplicateKey,
    /// Bytes follow the end of the top-level value.
    TrailingBytes,
    /// The input is empty.
    Empty,
}

/// A decode error: what went wrong and the byte offset where it was noticed
/// (for tokenizer errors, the start of the innermost value being decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BencodeError {
    /// Byte offset into the input.
    pub offset: usize,
    /// What went wrong.
    pub kind: BencodeErrorKind,
}

impl fmt::Display for BencodeError {
    /// A sentence for a person: "bad bencode at byte 12: an integer with a
    /// leading zero".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad bencode at byte {}: {}", self.offset, self.kind)
    }
}

impl fmt::Display for BencodeErrorKind {
    /// What is wrong, without the position (the error carries it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BencodeErrorKind::Syntax(text) => f.write_str(&describe_syntax(text)),
            BencodeErrorKind::TooDeep => f.write_str("lists and dictionaries nested too deep"),
            BencodeErrorKind::TooManyValues => f.write_str("too many values"),
            BencodeErrorKind::TooLong => f.write_str("the data is longer than the limit"),
            BencodeErrorKind::IntegerOverflow => f.write_str("an integer too large for 64 bits"),
            BencodeErrorKind::DuplicateKey => f.write_str("a dictionary holds the same key twice"),
            BencodeErrorKind::TrailingBytes => f.write_str("more bytes after the end of the value"),
            BencodeErrorKind::Empty => f.write_str("the data is empty"),
        }
    }
}

/// Puts a tokenizer message (bendy's, or the lenient decoder's) into plain
/// words. bendy's texts look like "Error: bencode encoding corrupted
/// (Malformed number of unexpected character: Expected 'e', got '1' at
/// offset 3)"; the offset is already in the error, so it is dropped here.
fn describe_syntax(text: &str) -> String {
    let inner = text.strip_prefix("Error: ").unwrap_or(text);
    let inner = inner.strip_prefix("bencode encoding corrupted (").and_then(|t| t.strip_suffix(')')).unwrap_or(inner);
    let inner = inner.strip_prefix("Malformed number of unexpected character: ").unwrap_or(inner);
    let inner = inner.split(" at offset ").next().unwrap_or(inner);
    let got = |t: &str| t.split("got ").nth(1).map(str::to_owned).unwrap_or_default();
    if inner.contains("Reached EOF") || inner == "unexpected end" || inner.starts_with("unterminated") {
        "the data ends in the middle of a value (truncated?)".into()
    } else if inner.contains("Keys were not sorted") {
        "dictionary keys out of order".into()
    } else if inner.contains("Map keys must be strings") {
        "a dictionary key that is not a byte string".into()
    } else if inner.contains("Missing map value") {
        "a dictionary key without a value".into()
    } else if inner.contains("End not allowed at top level") {
        "an 'e' that closes nothing".into()
    } else if let Some(tok) = inner.strip_prefix("Invalid token starting with ") {
        format!("unexpected {tok} where a value should start (i, l, d or a digit)")
    } else if inner.starts_with("Invalid integer") {
        "a string length too large".into()
    } else if inner.starts_with("Expected '1'..'9'") {
        // After '-' only 1-9 may follow: "-0" and "-01" land here.
        "a negative zero or a number with a leading zero".into()
    } else if inner.starts_with("Expected 'e', got") || inner.starts_with("Expected ':', got") {
        // bendy expects the terminator right after a lone '0'.
        format!("a number with a leading zero (then {})", got(inner))
    } else if inner.starts_with("Expected") {
        format!("a malformed number (found {})", got(inner))
    } else if inner == "bad number" || inner == "bad length" || inner.starts_with("number too long") {
        format!("a malformed number ({inner})")
    } else {
        inner.to_owned()
    }
}

impl std::error::Error for BencodeError {}

/// A bencoded value. Byte strings and keys borrow from the input when
/// decoded and own their bytes when built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i...e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Cow<'a, [u8]>),
    /// `l...e`
    List(Vec<Value<'a>>),
    /// `d...e`, keys kept sorted so encoding is canonical.
    Dict(BTreeMap<Cow<'a, [u8]>, Value<'a>>),
}

impl<'a> Value<'a> {
    /// A byte-string value that owns `b`; use when building messages.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value<'static> {
        Value::Bytes(Cow::Owned(b.into()))
    }

    /// An empty dictionary, to fill with [`Value::insert`].
    pub fn dict() -> Value<'static> {
        Value::Dict(BTreeMap::new())
    }

    /// Inserts `key -> v` if `self` is a dictionary (does nothing otherwise);
    /// returns `self` for chaining while building.
    pub fn insert(mut self, key: &str, v: Value<'a>) -> Self {
        if let Value::Dict(d) = &mut self {
            d.insert(Cow::Owned(key.as_bytes().to_vec()), v);
        }
        self
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, if this is a byte string holding UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The list items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&BTreeMap<Cow<'a, [u8]>, Value<'a>>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks `key` up if this is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_dict().and_then(|d| d.get(key.as_bytes()))
    }

    /// Appends the canonical bencoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The canonical bencoding of `self` as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// The offset of `part` inside `whole`; `part` must be a sub-slice of it.
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

struct Ctx<'a> {
    src: &'a [u8],
    limits: Limits,
    values: usize,
}

fn syntax(offset: usize, e: bendy::decoding::Error) -> BencodeError {
    let text = e.to_string();
    // bendy names the exact position in some messages; prefer it.
    let offset = text
        .split("at offset ")
        .nth(1)
        .and_then(|t| {
            let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(offset);
    let kind = if text.contains("nesting depth") { BencodeErrorKind::TooDeep } else { BencodeErrorKind::Syntax(text) };
    BencodeError { offset, kind }
}

impl<'a> Ctx<'a> {
    fn object<'o>(&mut self, obj: Object<'o, 'a>, depth: usize, at: usize) -> Result<Value<'a>, BencodeError> {
        self.values += 1;
        if self.values > self.limits.values_max {
            return Err(BencodeError { offset: at, kind: BencodeErrorKind::TooManyValues });
        }
        match obj {
            Object::Integer(s) => {
                let off = offset_in(self.src, s.as_bytes());
                s.parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| BencodeError { offset: off, kind: BencodeErrorKind::IntegerOverflow })
            }
            Object::Bytes(b) => Ok(Value::Bytes(Cow::Borrowed(b))),
            Object::List(mut l) => {
                if depth >= self.limits.depth_max {
                    return Err(BencodeError { offset: at, kind: BencodeErrorKind::TooDeep });
                }
                let mut items = Vec::new();
                while let Some(o) = l.next_object().map_err(|e| syntax(at, e))? {
                    items.push(self.object(o, depth + 1, at)?);
                }
                Ok(Value::List(items))
            }
            Object::Dict(mut d) => {
                if depth >= self.limits.depth_max {
                    return Err(BencodeError { offset: at, kind: BencodeErrorKind::TooDeep });
                }
                let mut map = BTreeMap::new();
                while let Some((k, o)) = d.next_pair().map_err(|e| syntax(at, e))? {
                    let koff = offset_in(self.src, k);
                    let v = self.object(o, depth + 1, koff)?;
                    if map.insert(Cow::Borrowed(k), v).is_some() {
                        return Err(BencodeError { offset: koff, kind: BencodeErrorKind::DuplicateKey });
                    }
                }
                Ok(Value::Dict(map))
            }
        }
    }
}

/// Decodes exactly one value spanning all of `buf`, within `limits`.
///
/// Use for any bencode that arrives from outside. Dictionary keys should be
/// sorted as BEP 3 requires; unsorted keys are accepted (see
/// [`decode_prefix_with`]), repeated keys are not.
pub fn decode_with(buf: &[u8], limits: Limits) -> Result<Value<'_>, BencodeError> {
    if buf.len() > limits.bytes_max {
        return Err(BencodeError { offset: limits.bytes_max, kind: BencodeErrorKind::TooLong });
    }
    let (v, used) = decode_prefix_with(buf, limits)?;
    if used != buf.len() {
        return Err(BencodeError { offset: used, kind: BencodeErrorKind::TrailingBytes });
    }
    Ok(v)
}

/// [`decode_with`] under the default [`Limits`].
pub fn decode(buf: &[u8]) -> Result<Value<'_>, BencodeError> {
    decode_with(buf, Limits::default())
}

/// Decodes the one value at the start of `buf` and returns it with the
/// number of bytes it spans; use where bencode is followed by other data
/// (BEP 9 metadata pieces).
///
/// bendy decodes; it insists on sorted dictionary keys, so input it refuses
/// for that reason alone goes through a small lenient decoder instead
/// (same limits, duplicates still refused): a few trackers and torrent
/// editors write unsorted keys, and libtorrent accepts them.
pub fn decode_prefix_with(buf: &[u8], limits: Limits) -> Result<(Value<'_>, usize), BencodeError> {
    match strict_prefix(buf, limits) {
        Err(e) if matches!(&e.kind, BencodeErrorKind::Syntax(t) if t.contains("not sorted")) => {
            let mut l = Lenient { buf, limits, values: 0 };
            l.value(0, 0)
        }
        r => r,
    }
}

fn strict_prefix(buf: &[u8], limits: Limits) -> Result<(Value<'_>, usize), BencodeError> {
    if buf.is_empty() {
        return Err(BencodeError { offset: 0, kind: BencodeErrorKind::Empty });
    }
    let mut dec = Decoder::new(buf).with_max_depth(limits.depth_max.max(1));
    let mut ctx = Ctx { src: buf, limits, values: 0 };
    let obj = dec
        .next_object()
        .map_err(|e| syntax(0, e))?
        .ok_or(BencodeError { offset: 0, kind: BencodeErrorKind::Empty })?;
    let end_probe;
    let v = match obj {
        Object::Dict(d) => {
            let raw = d.into_raw().map_err(|e| syntax(0, e))?;
            end_probe = raw.len();
            let mut sub = Decoder::new(raw).with_max_depth(limits.depth_max.max(1));
            let o = sub.next_object().map_err(|e| syntax(0, e))?;
            match o {
                Some(o) => ctx.object(o, 0, 0)?,
                None => unreachable!("a dictionary's raw bytes decode to an object"),
            }
        }
        Object::List(l) => {
            let raw = l.into_raw().map_err(|e| syntax(0, e))?;
            end_probe = raw.len();
            let mut sub = Decoder::new(raw).with_max_depth(limits.depth_max.max(1));
            let o = sub.next_object().map_err(|e| syntax(0, e))?;
            match o {
                Some(o) => ctx.object(o, 0, 0)?,
                None => unreachable!("a list's raw bytes decode to an object"),
            }
        }
        Object::Integer(s) => {
            end_probe = offset_in(buf, s.as_bytes()) + s.len() + 1;
            ctx.object(Object::Integer(s), 0, 0)?
        }
        Object::Bytes(b) => {
            end_probe = offset_in(buf, b) + b.len();
            Value::Bytes(Cow::Borrowed(b))
        }
    };
    Ok((v, end_probe))
}

/// The exact bytes of the value under `key` in the top-level dictionary of
/// `buf` (which may have unsorted keys); `None` if absent or malformed.
pub(crate) fn top_level_value_span<'a>(buf: &'a [u8], key: &[u8], limits: Limits) -> Option<&'a [u8]> {
    let mut l = Lenient { buf, limits, values: 0 };
    if buf.first() != Some(&b'd') {
        return None;
    }
    let mut pos = 1;
    loop {
        if *buf.get(pos)? == b'e' {
            return None;
        }
        let (k, after_key) = l.bytes(pos).ok()?;
        let (_, end) = l.value(after_key, 1).ok()?;
        if k == key {
            return Some(&buf[after_key..end]);
        }
        pos = end;
    }
}

/// A plain recursive-descent decoder that accepts unsorted keys; see
/// [`decode_prefix_with`].
struct Lenient<'a> {
    buf: &'a [u8],
    limits: Limits,
    values: usize,
}

impl<'a> Lenient<'a> {
    fn err(at: usize, kind: BencodeErrorKind) -> BencodeError {
        BencodeError { offset: at, kind }
    }

    fn syntax(at: usize, what: &str) -> BencodeError {
        Self::err(at, BencodeErrorKind::Syntax(what.to_owned()))
    }

    /// The digits (with an optional leading `-` when `signed`) from `pos`
    /// up to `end_byte`; returns the text and the index of `end_byte`.
    fn number(&self, pos: usize, end_byte: u8, signed: bool) -> Result<(&'a str, usize), BencodeError> {
        let window = &self.buf[pos..self.buf.len().min(pos + 22)];
        let len = window
            .iter()
            .position(|&b| b == end_byte)
            .ok_or_else(|| Self::syntax(pos, "number too long or unterminated"))?;
        let text = std::str::from_utf8(&window[..len]).map_err(|_| Self::syntax(pos, "bad number"))?;
        let digits = if signed { text.strip_prefix('-').unwrap_or(text) } else { text };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && text != "-0";
        if !canonical {
            return Err(Self::syntax(pos, "bad number"));
        }
        Ok((text, pos + len))
    }

    fn bytes(&self, pos: usize) -> Result<(&'a [u8], usize), BencodeError> {
        let (text, colon) = self.number(pos, b':', false)?;
        let len: usize = text.parse().map_err(|_| Self::syntax(pos, "bad length"))?;
        let start = colon + 1;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| Self::syntax(pos, "string runs past the end"))?;
        Ok((&self.buf[start..end], end))
    }

    fn value(&mut self, pos: usize, depth: usize) -> Result<(Value<'a>, usize), BencodeError> {
        self.values += 1;
        if self.values > self.limits.values_max {
            return Err(Self::err(pos, BencodeErrorKind::TooManyValues));
        }
        let b = *self.buf.get(pos).ok_or_else(|| Self::syntax(pos, "unexpected end"))?;
        match b {
            b'i' => {
                let (text, e) = self.number(pos + 1, b'e', true)?;
                let i = text.parse::<i64>().map_err(|_| Self::err(pos + 1, BencodeErrorKind::IntegerOverflow))?;
                Ok((Value::Int(i), e + 1))
            }
            b'0'..=b'9' => {
                let (v, end) = self.bytes(pos)?;
                Ok((Value::Bytes(Cow::Borrowed(v)), end))
            }
            b'l' | b'd' => {
                if depth >= self.limits.depth_max {
                    return Err(Self::err(pos, BencodeErrorKind::TooDeep));
                }
                let mut p = pos + 1;
                let mut items = Vec::new();
                let mut map = BTreeMap::new();
                loop {
                    match self.buf.get(p) {
                        None => return Err(Self::syntax(p, "unterminated container")),
                        Some(b'e') => break,
                        Some(_) if b == b'l' => {
                            let (v, end) = self.value(p, depth + 1)?;
                            items.push(v);
                            p = end;
                        }
                        Some(_) => {
                            let (k, after) = self.bytes(p)?;
                            let (v, end) = self.value(after, depth + 1)?;
                            if map.insert(Cow::Borrowed(k), v).is_some() {
                                return Err(Self::err(p, BencodeErrorKind::DuplicateKey));
                            }
                            p = end;
                        }
                    }
                }
                let v = if b == b'l' { Value::List(items) } else { Value::Dict(map) };
                Ok((v, p + 1))
            }
            other => Err(Self::syntax(pos, &format!("unexpected byte {other:#04x}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_round_trips_canonically() {
        let v =
            Value::dict().insert("b", Value::Int(-3)).insert("a", Value::List(vec![Value::bytes("x"), Value::Int(0)]));
        let bytes = v.to_bytes();
        assert_eq!(bytes, b"d1:al1:xi0ee1:bi-3ee");
        assert_eq!(decode(&bytes).unwrap(), v);
    }

    #[test]
    fn trailing_bytes_are_refused_with_their_offset() {
        let e = decode(b"i1ei2e").unwrap_err();
        assert_eq!(e.offset, 3);
        assert_eq!(e.kind, BencodeErrorKind::TrailingBytes);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = vec![b'l'; 100];
        b.extend(vec![b'e'; 100]);
        let e = decode(&b).unwrap_err();
        assert_eq!(e.kind, BencodeErrorKind::TooDeep);
    }

    #[test]
    fn unsorted_keys_are_accepted_but_duplicates_are_not() {
        let v = decode(b"d1:bi1e1:ali2ei3eee").unwrap();
        assert_eq!(v.get("b").and_then(Value::as_int), Some(1));
        assert_eq!(v.to_bytes(), b"d1:ali2ei3ee1:bi1ee");
        let e = decode(b"d1:bi1e1:ai2e1:bi3ee").unwrap_err();
        assert_eq!(e.kind, BencodeErrorKind::DuplicateKey);
        assert_eq!(e.offset, 13, "offset of the repeated key");
        let e = decode(b"d1:ai1e1:ai2ee").unwrap_err();
        assert_eq!(e.kind, BencodeErrorKind::DuplicateKey);
    }

    #[test]
    fn the_lenient_path_keeps_the_limits_and_canonical_numbers() {
        let deep = [&b"d1:bi1e1:a"[..], &[b'l'; 40], &[b'e'; 40], b"e"].concat();
        assert_eq!(decode(&deep).unwrap_err().kind, BencodeErrorKind::TooDeep);
        for bad in [&b"d1:bi1e1:ai01ee"[..], b"d1:bi1e1:ai-0ee", b"d1:bi1e1:a05:xe", b"d1:bi1e1:a3:xe"] {
            assert!(matches!(decode(bad).unwrap_err().kind, BencodeErrorKind::Syntax(_)), "{bad:?}");
        }
        assert_eq!(top_level_value_span(b"d1:zi1e4:infod1:xi2eee", b"info", Limits::default()), Some(&b"d1:xi2ee"[..]));
    }

    #[test]
    fn a_syntax_error_names_the_offending_byte() {
        let e = decode(b"d1:ai1e1:bxe").unwrap_err();
        assert!(matches!(e.kind, BencodeErrorKind::Syntax(_)));
        assert_eq!(e.offset, 10);
    }

    #[test]
    fn integers_beyond_i64_are_refused() {
        let e = decode(b"i99999999999999999999e").unwrap_err();
        assert_eq!(e.kind, BencodeErrorKind::IntegerOverflow);
        assert_eq!(e.offset, 1);
    }

    #[test]
    fn a_prefix_decode_reports_how_many_bytes_it_used() {
        let (v, n) = decode_prefix_with(b"d1:xi5eeRAW", Limits::default()).unwrap();
        assert_eq!(n, 8);
        assert_eq!(v.get("x").and_then(Value::as_int), Some(5));
        let (_, n) = decode_prefix_with(b"3:abcRAW", Limits::default()).unwrap();
        assert_eq!(n, 5);
        let (_, n) = decode_prefix_with(b"i-12eRAW", Limits::default()).unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn errors_read_as_sentences_with_the_byte_where_they_were_seen() {
        let shown = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert_eq!(shown(b"li1ei01ee"), "bad bencode at byte 6: a number with a leading zero (then '1')");
        assert!(shown(b"x").starts_with("bad bencode at byte 0: unexpected 'x' where a value should start"));
        assert!(shown(b"d1:ai1e").contains("ends in the middle of a value"), "{}", shown(b"d1:ai1e"));
        assert_eq!(shown(b""), "bad bencode at byte 0: the data is empty");
        assert_eq!(shown(b"i1ei2e"), "bad bencode at byte 3: more bytes after the end of the value");
        for bad in [&b"i-0e"[..], b"di1ei2ee", b"e", b"9999999999999999999999:x", b"i1"] {
            let text = shown(bad);
            assert!(!text.contains("Error") && !text.contains('{') && !text.contains("offset"), "{text}");
        }
    }
}
