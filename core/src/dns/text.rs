//! Presentation format of record data, as the HTTP API and the CLI take
//! and show it: `10.1.0.15`, `::1`, `target.local`, `10 mail.local`
//! (MX), `0 5 5060 sip.local` (SRV), free text or `"a" "b"` (TXT), and
//! `\# 4 0a000001` for any type (RFC 3597).

use super::message::{RData, RType, Soa};
use super::name::Name;
use super::wire;
use core::fmt::Write as _;
use core::net::{Ipv4Addr, Ipv6Addr};

/// Longest character string in TXT rdata.
pub const TXT_STRING_MAX_BYTES: usize = 255;
/// Longest TXT text accepted from the API (split into 255-byte strings).
pub const TXT_TEXT_MAX_BYTES: usize = 4000;

/// Parses `text` as rdata of type `rtype`, with a message fit for a user.
pub fn rdata_from_text(rtype: RType, text: &str) -> Result<RData, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("\\#") {
        return generic_from_text(rtype, rest);
    }
    let mut fields = text.split_ascii_whitespace();
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("{rtype} data is missing its {what}"));
    let name = |s: &str| Name::from_ascii(s).map_err(|e| format!("bad name {s:?}: {e}"));
    let num = |s: &str, what: &str| s.parse::<u16>().map_err(|_| format!("bad {what} {s:?}"));
    let data = match rtype {
        RType::A => RData::A(text.parse::<Ipv4Addr>().map_err(|_| format!("bad IPv4 address {text:?}"))?),
        RType::AAAA => RData::Aaaa(text.parse::<Ipv6Addr>().map_err(|_| format!("bad IPv6 address {text:?}"))?),
        RType::CNAME => RData::Cname(name(next("target")?)?),
        RType::NS => RData::Ns(name(next("name server")?)?),
        RType::PTR => RData::Ptr(name(next("target")?)?),
        RType::MX => {
            RData::Mx { preference: num(next("preference")?, "preference")?, exchange: name(next("exchange")?)? }
        }
        RType::SRV => RData::Srv {
            priority: num(next("priority")?, "priority")?,
            weight: num(next("weight")?, "weight")?,
            port: num(next("port")?, "port")?,
            target: name(next("target")?)?,
        },
        RType::SOA => {
            let mname = name(next("mname")?)?;
            let rname = name(next("rname")?)?;
            let mut n = [0u32; 5];
            for (i, what) in ["serial", "refresh", "retry", "expire", "minimum"].iter().enumerate() {
                let f = next(what)?;
                n[i] = f.parse().map_err(|_| format!("bad {what} {f:?}"))?;
            }
            RData::Soa(Soa { mname, rname, serial: n[0], refresh: n[1], retry: n[2], expire: n[3], minimum: n[4] })
        }
        RType::TXT => RData::Txt(txt_from_text(text)?),
        RType::OPT | RType::ANY | RType::AXFR => {
            return Err(format!("{rtype} is not a record type that can be stored"))
        }
        other => return Err(format!("{other} data must be given as \\# LENGTH HEX (RFC 3597)")),
    };
    if !matches!(rtype, RType::A | RType::AAAA | RType::TXT) && fields.next().is_some() {
        return Err(format!("too many fields for {rtype}"));
    }
    Ok(data)
}

fn txt_from_text(text: &str) -> Result<Vec<Vec<u8>>, String> {
    if text.len() > TXT_TEXT_MAX_BYTES {
        return Err(format!("TXT text longer than {TXT_TEXT_MAX_BYTES} bytes"));
    }
    if !text.starts_with('"') {
        let chunks: Vec<Vec<u8>> = text.as_bytes().chunks(TXT_STRING_MAX_BYTES).map(<[u8]>::to_vec).collect();
        return Ok(if chunks.is_empty() { vec![Vec::new()] } else { chunks });
    }
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            None => break,
            Some(b'"') => i += 1,
            Some(&c) => return Err(format!("unexpected {:?} between TXT strings", c as char)),
        }
        let mut s = Vec::new();
        loop {
            match bytes.get(i) {
                None => return Err("unterminated TXT string".into()),
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    let digits = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(u8::is_ascii_digit));
                    if let Some(d) = digits {
                        let v = (d[0] - b'0') as u32 * 100 + (d[1] - b'0') as u32 * 10 + (d[2] - b'0') as u32;
                        s.push(u8::try_from(v).map_err(|_| format!("bad escape \\{v}"))?);
                        i += 4;
                    } else {
                        let c = *bytes.get(i + 1).ok_or("unterminated TXT string")?;
                        s.push(c);
                        i += 2;
                    }
                }
                Some(&c) => {
                    s.push(c);
                    i += 1;
                }
            }
        }
        if s.len() > TXT_STRING_MAX_BYTES {
            return Err(format!("TXT string longer than {TXT_STRING_MAX_BYTES} bytes"));
        }
        out.push(s);
    }
    Ok(out)
}

fn generic_from_text(rtype: RType, rest: &str) -> Result<RData, String> {
    let mut fields = rest.split_ascii_whitespace();
    let len: usize = fields.next().and_then(|l| l.parse().ok()).ok_or("\\# needs a length")?;
    let hex: String = fields.collect();
    if hex.len() != len * 2 {
        return Err(format!("\\# length {len} does not match {} hex digits", hex.len()));
    }
    let mut bytes = Vec::with_capacity(len);
    for i in 0..len {
        bytes.push(u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| "bad hex in \\# data".to_string())?);
    }
    wire::decode_rdata(rtype, &bytes).map_err(|e| format!("bad {rtype} data: {e}"))
}

/// Shows rdata in the presentation format [`rdata_from_text`] reads.
pub fn rdata_to_text(data: &RData) -> String {
    match data {
        RData::A(ip) => ip.to_string(),
        RData::Aaaa(ip) => ip.to_string(),
        RData::Cname(n) | RData::Ns(n) | RData::Ptr(n) => n.to_string(),
        RData::Mx { preference, exchange } => format!("{preference} {exchange}"),
        RData::Srv { priority, weight, port, target } => format!("{priority} {weight} {port} {target}"),
        RData::Soa(s) => {
            format!("{} {} {} {} {} {} {}", s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum)
        }
        RData::Txt(strings) => {
            let mut out = String::new();
            for (i, s) in strings.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push('"');
                for &b in s {
                    match b {
                        b'"' | b'\\' => {
                            out.push('\\');
                            out.push(b as char);
                        }
                        0x20..=0x7e => out.push(b as char),
                        _ => {
                            let _ = write!(out, "\\{b:03}");
                        }
                    }
                }
                out.push('"');
            }
            out
        }
        RData::Unknown { data, .. } => {
            let mut out = format!("\\# {}", data.len());
            if !data.is_empty() {
                out.push(' ');
            }
            for b in data {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_type_reads_and_shows_the_same() {
        for (t, text) in [
            (RType::A, "10.1.0.15"),
            (RType::AAAA, "2001:db8::1"),
            (RType::CNAME, "free.local."),
            (RType::MX, "10 mail.local."),
            (RType::SRV, "0 5 5060 sip.local."),
            (RType::TXT, "\"hello world\" \"two\""),
            (RType::PTR, "host.local."),
            (RType::NS, "ns1.local."),
            (RType(99), "\\# 3 616263"),
        ] {
            let d = rdata_from_text(t, text).unwrap();
            assert_eq!(rdata_to_text(&d), text, "{t}");
        }
    }

    #[test]
    fn bad_data_is_refused_with_a_reason() {
        assert!(rdata_from_text(RType::A, "10.1.0").unwrap_err().contains("IPv4"));
        assert!(rdata_from_text(RType::MX, "mail.local").is_err());
        assert!(rdata_from_text(RType::CNAME, "a b").unwrap_err().contains("too many"));
        assert!(rdata_from_text(RType::OPT, "x").is_err());
    }

    #[test]
    fn long_plain_txt_is_split_into_255_byte_strings() {
        let d = rdata_from_text(RType::TXT, &"x".repeat(600)).unwrap();
        let RData::Txt(s) = d else { panic!() };
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), vec![255, 255, 90]);
    }
}
