//! DNS message model (RFC 1035 section 4, EDNS0 from RFC 6891).

use super::name::Name;
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

/// A resource record type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RType(pub u16);

impl RType {
    /// IPv4 address.
    pub const A: RType = RType(1);
    /// Authoritative name server.
    pub const NS: RType = RType(2);
    /// Canonical name (alias).
    pub const CNAME: RType = RType(5);
    /// Start of authority.
    pub const SOA: RType = RType(6);
    /// Domain name pointer.
    pub const PTR: RType = RType(12);
    /// Mail exchange.
    pub const MX: RType = RType(15);
    /// Text strings.
    pub const TXT: RType = RType(16);
    /// IPv6 address.
    pub const AAAA: RType = RType(28);
    /// Service locator.
    pub const SRV: RType = RType(33);
    /// EDNS0 pseudo-record.
    pub const OPT: RType = RType(41);
    /// Zone transfer (query type only).
    pub const AXFR: RType = RType(252);
    /// Any type (query type only).
    pub const ANY: RType = RType(255);

    /// The mnemonic of a type we know, if any.
    pub fn mnemonic(self) -> Option<&'static str> {
        Some(match self {
            RType::A => "A",
            RType::NS => "NS",
            RType::CNAME => "CNAME",
            RType::SOA => "SOA",
            RType::PTR => "PTR",
            RType::MX => "MX",
            RType::TXT => "TXT",
            RType::AAAA => "AAAA",
            RType::SRV => "SRV",
            RType::OPT => "OPT",
            RType::AXFR => "AXFR",
            RType::ANY => "ANY",
            _ => return None,
        })
    }

    /// Parses a mnemonic (`"MX"`, case-insensitive) or `TYPEnnn` (RFC 3597).
    pub fn from_mnemonic(text: &str) -> Option<RType> {
        let upper = text.to_ascii_uppercase();
        for t in [
            RType::A,
            RType::NS,
            RType::CNAME,
            RType::SOA,
            RType::PTR,
            RType::MX,
            RType::TXT,
            RType::AAAA,
            RType::SRV,
            RType::OPT,
            RType::AXFR,
            RType::ANY,
        ] {
            if t.mnemonic() == Some(upper.as_str()) {
                return Some(t);
            }
        }
        upper.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()).map(RType)
    }
}

impl fmt::Display for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mnemonic() {
            Some(m) => f.write_str(m),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl fmt::Debug for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The Internet class, the only one rumor serves.
pub const CLASS_IN: u16 = 1;
/// Query class ANY.
pub const CLASS_ANY: u16 = 255;

/// Operation codes (header OPCODE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// Standard query.
    Query,
    /// Any other opcode, by number.
    Other(u8),
}

impl Opcode {
    /// From the 4-bit header field.
    pub fn from_u8(v: u8) -> Opcode {
        match v & 0x0f {
            0 => Opcode::Query,
            n => Opcode::Other(n),
        }
    }
    /// To the 4-bit header field.
    pub fn to_u8(self) -> u8 {
        match self {
            Opcode::Query => 0,
            Opcode::Other(n) => n & 0x0f,
        }
    }
}

/// Response codes (the 4 header bits; extended codes via EDNS are kept as
/// their full 12-bit value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rcode(pub u16);

impl Rcode {
    /// No error.
    pub const NOERROR: Rcode = Rcode(0);
    /// The query could not be interpreted.
    pub const FORMERR: Rcode = Rcode(1);
    /// The server failed.
    pub const SERVFAIL: Rcode = Rcode(2);
    /// The name does not exist.
    pub const NXDOMAIN: Rcode = Rcode(3);
    /// The server does not do this kind of query.
    pub const NOTIMP: Rcode = Rcode(4);
    /// The server refuses to answer for this name.
    pub const REFUSED: Rcode = Rcode(5);
    /// EDNS version not supported (extended rcode 16).
    pub const BADVERS: Rcode = Rcode(16);

    /// Name as used by dig and in metrics.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            16 => "BADVERS",
            _ => "OTHER",
        }
    }
}

/// The fixed 12-byte header, flags unpacked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Transaction id, echoed in the response.
    pub id: u16,
    /// Response (true) or query (false).
    pub qr: bool,
    /// Kind of query.
    pub opcode: u8,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion desired.
    pub rd: bool,
    /// Recursion available.
    pub ra: bool,
    /// The reserved Z bit (must be zero; echoed as zero).
    pub z: bool,
    /// Authentic data (DNSSEC).
    pub ad: bool,
    /// Checking disabled (DNSSEC).
    pub cd: bool,
    /// The low 4 bits of the response code.
    pub rcode: u8,
}

/// One question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name asked about, in the client's letter case.
    pub name: Name,
    /// The type asked for.
    pub qtype: RType,
    /// The class asked for.
    pub qclass: u16,
}

/// Record data, decoded for the types rumor serves, raw for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias target.
    Cname(Name),
    /// Name server.
    Ns(Name),
    /// Pointer target.
    Ptr(Name),
    /// Mail exchange.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The mail host.
        exchange: Name,
    },
    /// One or more character strings of at most 255 bytes each.
    Txt(Vec<Vec<u8>>),
    /// Service locator (RFC 2782).
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// Port of the service.
        port: u16,
        /// Host of the service.
        target: Name,
    },
    /// Start of authority.
    Soa(Soa),
    /// Any other type, kept as raw bytes (RFC 3597).
    Unknown {
        /// The record type.
        rtype: RType,
        /// The raw rdata.
        data: Vec<u8>,
    },
}

/// SOA rdata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    /// Primary name server.
    pub mname: Name,
    /// Mailbox of the person responsible, as a name.
    pub rname: Name,
    /// Zone serial.
    pub serial: u32,
    /// Secondary refresh interval, seconds.
    pub refresh: u32,
    /// Secondary retry interval, seconds.
    pub retry: u32,
    /// Secondary expiry, seconds.
    pub expire: u32,
    /// Negative-caching TTL, seconds (RFC 2308).
    pub minimum: u32,
}

impl RData {
    /// The record type of this data.
    pub fn rtype(&self) -> RType {
        match self {
            RData::A(_) => RType::A,
            RData::Aaaa(_) => RType::AAAA,
            RData::Cname(_) => RType::CNAME,
            RData::Ns(_) => RType::NS,
            RData::Ptr(_) => RType::PTR,
            RData::Mx { .. } => RType::MX,
            RData::Txt(_) => RType::TXT,
            RData::Srv { .. } => RType::SRV,
            RData::Soa(_) => RType::SOA,
            RData::Unknown { rtype, .. } => *rtype,
        }
    }
}

/// A resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name.
    pub name: Name,
    /// Class (normally IN).
    pub class: u16,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data; its type is the record's type.
    pub data: RData,
}

/// An EDNS0 option (RFC 6891 section 6.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdnsOption {
    /// Option code.
    pub code: u16,
    /// Option payload.
    pub data: Vec<u8>,
}

/// The EDNS0 OPT pseudo-record, lifted out of the additional section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Largest UDP payload the sender can reassemble.
    pub udp_size: u16,
    /// Upper 8 bits of the 12-bit extended rcode.
    pub ext_rcode: u8,
    /// EDNS version (0 is the only one defined).
    pub version: u8,
    /// DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// Options, in order.
    pub options: Vec<EdnsOption>,
}

impl Default for Edns {
    fn default() -> Self {
        Edns { udp_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false, options: Vec::new() }
    }
}

/// A whole DNS message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// The header; its section counts are derived from the vectors.
    pub header: Header,
    /// Question section.
    pub questions: Vec<Question>,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section, OPT excluded.
    pub additionals: Vec<Record>,
    /// The OPT record, if present.
    pub edns: Option<Edns>,
}

impl Message {
    /// The full response code, joining the header's 4 bits with EDNS's 8.
    pub fn rcode(&self) -> Rcode {
        let ext = self.edns.as_ref().map_or(0, |e| e.ext_rcode as u16);
        Rcode((ext << 4) | self.header.rcode as u16)
    }

    /// Sets the response code, spilling into EDNS for extended codes.
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.header.rcode = (rcode.0 & 0x0f) as u8;
        if let Some(e) = self.edns.as_mut() {
            e.ext_rcode = (rcode.0 >> 4) as u8;
        }
    }
}
