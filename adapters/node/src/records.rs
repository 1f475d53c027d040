//! The HTTP API's record requests, validated into RRsets. No runtime here:
//! this is the part of the API every adapter shares.

use rumor_core::dns::store::RRSET_RECORDS_MAX;
use rumor_core::dns::text::{rdata_from_text, rdata_to_text};
use rumor_core::dns::{Name, RData, RRset, RType};
use rumor_core::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Largest TTL a record may have (RFC 2181 section 8).
pub const TTL_MAX_S: u64 = 2_147_483_647;
/// TTL used when a request gives none.
pub const TTL_DEFAULT_S: u64 = 300;
/// Most records one request may write (a batch of `/add` objects).
pub const BATCH_MAX: usize = 10_000;

/// A request the client got wrong; becomes a 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl<T: Into<String>> From<T> for Invalid {
    fn from(s: T) -> Self {
        Invalid(s.into())
    }
}

/// The original system's `/add` body: addresses for a name.
#[derive(Debug, Deserialize)]
pub struct AddRequest {
    /// The name, e.g. `free.local`.
    pub name: String,
    /// IPv4 addresses become A records, IPv6 ones AAAA.
    pub ips: Vec<String>,
    /// Seconds the records live.
    pub ttl: Option<i64>,
}

/// The original system's `/del` body.
#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    /// The name whose records all go.
    pub name: String,
    /// Only this type, if given.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
}

/// The REST form for any type: one RRset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// Owner name.
    pub name: String,
    /// Type mnemonic (`MX`, `TXT`, ...).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Seconds the records live.
    pub ttl: Option<i64>,
    /// Each record's data in presentation format.
    pub data: Vec<String>,
}

/// How a stored RRset is shown by `GET /list` and `GET /records`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordView {
    /// Owner name, without the trailing dot.
    pub name: String,
    /// Type mnemonic.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Seconds left.
    pub ttl: u32,
    /// The TTL it was written with.
    pub ttl_written: u32,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Record data in presentation format.
    pub data: Vec<String>,
}

impl RecordView {
    /// Shows `set` as it stands at `now_ms`.
    pub fn of(set: &RRset, now_ms: UnixMillis) -> Self {
        RecordView {
            name: display_name(&set.owner),
            rtype: set.rtype.to_string(),
            ttl: set.remaining_ttl(now_ms),
            ttl_written: set.ttl,
            expires_at_ms: set.expires_at_ms,
            data: set.data.iter().map(rdata_to_text).collect(),
        }
    }
}

/// A name as users write it: no trailing dot.
pub fn display_name(name: &Name) -> String {
    rumor_core::member::display_name(name)
}

/// Parses and checks a host-style name: labels of letters, digits, `-`
/// and `_` (for SRV owners), not the root.
pub fn parse_name(text: &str) -> Result<Name, Invalid> {
    let name = Name::from_ascii(text.trim()).map_err(|e| format!("bad name {text:?}: {e}"))?;
    if name.is_root() {
        return Err("the name is empty".into());
    }
    for label in name.labels() {
        if let Some(&b) =
            label.iter().find(|b| !(b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_' || **b == b'*'))
        {
            return Err(format!("bad name {text:?}: character {:?} is not allowed", b as char).into());
        }
        if label.starts_with(b"-") || label.ends_with(b"-") {
            return Err(format!("bad name {text:?}: a label starts or ends with '-'").into());
        }
    }
    Ok(name)
}

/// Checks a TTL and turns it into an expiry.
pub fn parse_ttl(ttl: Option<i64>, now_ms: UnixMillis) -> Result<(u32, UnixMillis), Invalid> {
    let ttl = ttl.unwrap_or(TTL_DEFAULT_S as i64);
    if ttl <= 0 || ttl as u64 > TTL_MAX_S {
        return Err(format!("ttl must be between 1 and {TTL_MAX_S} seconds, got {ttl}").into());
    }
    Ok((ttl as u32, now_ms + ttl as u64 * 1000))
}

/// RRsets to put and (name, type) pairs to remove.
pub type AddWrite = (Vec<RRset>, Vec<(Name, RType)>);

/// The write an `/add` asks for: the name's A and AAAA sets become exactly
/// the given addresses (a set with no address given is removed).
pub fn add_request(req: &AddRequest, now_ms: UnixMillis) -> Result<AddWrite, Invalid> {
    let name = parse_name(&req.name)?;
    let (ttl, expires_at_ms) = parse_ttl(req.ttl, now_ms)?;
    if req.ips.is_empty() {
        return Err("ips is empty".into());
    }
    if req.ips.len() > RRSET_RECORDS_MAX {
        return Err(format!("at most {RRSET_RECORDS_MAX} ips per name").into());
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in &req.ips {
        match ip.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !v4.contains(&RData::A(a)) => v4.push(RData::A(a)),
            Ok(IpAddr::V6(a)) if !v6.contains(&RData::Aaaa(a)) => v6.push(RData::Aaaa(a)),
            Ok(_) => {}
            Err(_) => return Err(format!("bad IP address {ip:?}").into()),
        }
    }
    let mut puts = Vec::new();
    let mut removes = Vec::new();
    for (rtype, data) in [(RType::A, v4), (RType::AAAA, v6)] {
        if data.is_empty() {
            removes.push((name.clone(), rtype));
        } else {
            puts.push(RRset { owner: name.clone(), rtype, ttl, expires_at_ms, data });
        }
    }
    Ok((puts, removes))
}

/// The RRset a `POST /records` asks for.
pub fn record_request(req: &RecordRequest, now_ms: UnixMillis) -> Result<RRset, Invalid> {
    let name = parse_name(&req.name)?;
    let rtype = RType::from_mnemonic(&req.rtype).ok_or_else(|| format!("unknown record type {:?}", req.rtype))?;
    if matches!(rtype, RType::OPT | RType::ANY | RType::AXFR | RType::SOA) || rtype.0 == 251 {
        return Err(format!("{rtype} records cannot be written").into());
    }
    let (ttl, expires_at_ms) = parse_ttl(req.ttl, now_ms)?;
    if req.data.is_empty() {
        return Err("data is empty".into());
    }
    if req.data.len() > RRSET_RECORDS_MAX {
        return Err(format!("at most {RRSET_RECORDS_MAX} records per name and type").into());
    }
    if rtype == RType::CNAME && req.data.len() > 1 {
        return Err("a name has at most one CNAME".into());
    }
    let mut data: Vec<RData> = Vec::with_capacity(req.data.len());
    for text in &req.data {
        let d = rdata_from_text(rtype, text).map_err(Invalid)?;
        if !data.contains(&d) {
            data.push(d);
        }
    }
    Ok(RRset { owner: name, rtype, ttl, expires_at_ms, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_becomes_one_a_set() {
        let req: AddRequest = serde_json::from_str(r#"{"name":"free.local","ips":["10.1.0.15"],"ttl":360}"#).unwrap();
        let (puts, removes) = add_request(&req, 1_000).unwrap();
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].rtype, RType::A);
        assert_eq!(puts[0].expires_at_ms, 361_000);
        assert_eq!(removes, vec![(Name::from_ascii("free.local").unwrap(), RType::AAAA)]);
    }

    #[test]
    fn ipv6_addresses_become_aaaa() {
        let req = AddRequest { name: "v6.local".into(), ips: vec!["::1".into(), "10.0.0.1".into()], ttl: Some(60) };
        let (puts, removes) = add_request(&req, 0).unwrap();
        assert_eq!(puts.len(), 2);
        assert!(removes.is_empty());
    }

    #[test]
    fn bad_names_ips_and_ttls_are_refused() {
        let add = |name: &str, ip: &str, ttl: i64| {
            add_request(&AddRequest { name: name.into(), ips: vec![ip.into()], ttl: Some(ttl) }, 0)
        };
        assert!(add("bad name", "10.0.0.1", 60).is_err());
        assert!(add("", "10.0.0.1", 60).is_err());
        assert!(add("-x.local", "10.0.0.1", 60).is_err());
        assert!(add("ok.local", "10.0.0.256", 60).is_err());
        assert!(add("ok.local", "10.0.0.1", 0).is_err());
        assert!(add("ok.local", "10.0.0.1", -5).is_err());
        assert!(add("ok.local", "10.0.0.1", 1 << 40).is_err());
        assert!(add("ok.local", "10.0.0.1", 60).is_ok());
    }

    #[test]
    fn other_types_come_in_presentation_format() {
        let req = RecordRequest {
            name: "local".into(),
            rtype: "mx".into(),
            ttl: Some(60),
            data: vec!["10 mail.local".into(), "20 mx2.local".into()],
        };
        let set = record_request(&req, 0).unwrap();
        assert_eq!(set.rtype, RType::MX);
        assert_eq!(set.data.len(), 2);
        let bad = RecordRequest { rtype: "CNAME".into(), data: vec!["a.local".into(), "b.local".into()], ..req };
        assert!(record_request(&bad, 0).is_err());
    }
}
