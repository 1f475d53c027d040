//! `rumor dns ...`: a client of a node's HTTP API and of its DNS port.

use clap::{Args, Subcommand};
use rumor_core::dns::text::rdata_to_text;
use rumor_core::dns::{decode, encode, Edns, Header, Message, Name, Question, RType, CLASS_IN};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

/// Where the node's API is and how to authenticate.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The node's API address.
    #[arg(long, env = "RUMOR_API", default_value = "127.0.0.1:6969")]
    pub(crate) api: String,
    /// Bearer token, if the node needs one.
    // `--token` was this flag's name before it matched the other commands';
    // it keeps working, unlisted.
    #[arg(long, alias = "token", env = "RUMOR_API_TOKEN", hide_env_values = true)]
    pub(crate) api_token: Option<String>,
}

/// What a refusal from the API's address most likely means.
const NODE_HINT: &str = "is `rumor node` running?";

/// The `dns` subcommands.
#[derive(Subcommand, Debug)]
pub enum DnsCmd {
    /// Add records: `add free.local 10.1.0.15 [IP...]`, or with --type any
    /// type: `add local --type MX "10 mail.local"`.
    Add {
        /// The name.
        name: String,
        /// Addresses, or record data with --type.
        #[arg(required = true)]
        data: Vec<String>,
        /// Record type (default: A/AAAA from the addresses).
        #[arg(long = "type")]
        rtype: Option<String>,
        /// Seconds the records live.
        #[arg(long, default_value_t = 300)]
        ttl: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a name's records (or only one type).
    Rm {
        /// The name.
        name: String,
        /// Only this type.
        #[arg(long = "type")]
        rtype: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List records (all, or one name's).
    Ls {
        /// Only this name.
        name: Option<String>,
        /// Print the JSON as the API returns it.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask a node's DNS port, like a small dig.
    Query {
        /// The name.
        name: String,
        /// The type.
        #[arg(default_value = "A")]
        rtype: String,
        /// The DNS server, HOST:PORT.
        #[arg(long, short, env = "RUMOR_DNS_SERVER", default_value = "127.0.0.1:8053")]
        server: String,
        /// Use TCP.
        #[arg(long)]
        tcp: bool,
    },
}

/// Runs a `dns` subcommand.
pub fn run(cmd: DnsCmd) -> ExitCode {
    let result = match cmd {
        DnsCmd::Add { name, data, rtype, ttl, api } => match rtype {
            None => post(&api, "/add", json!({ "name": name, "ips": data, "ttl": ttl })),
            Some(t) => post(&api, "/records", json!({ "name": name, "type": t, "ttl": ttl, "data": data })),
        },
        DnsCmd::Rm { name, rtype, api } => post(&api, "/del", json!({ "name": name, "type": rtype })),
        DnsCmd::Ls { name, json, api } => list(&api, name.as_deref(), json),
        DnsCmd::Query { name, rtype, server, tcp } => query(&name, &rtype, &server, tcp),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumor: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn url(api: &ApiArgs, path: &str) -> String {
    let base = if api.api.starts_with("http") { api.api.clone() } else { format!("http://{}", api.api) };
    format!("{}{path}", base.trim_end_matches('/'))
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build()
}

/// The API's address as the person gave it, for messages.
fn shown(api: &ApiArgs) -> &str {
    let a = api.api.trim_end_matches('/');
    a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")).unwrap_or(a)
}

pub(crate) fn explain(api: &ApiArgs, e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            let body: Value = resp.into_json().unwrap_or(Value::Null);
            let msg = body.get("error").and_then(Value::as_str).unwrap_or("no details");
            format!("the node said {code}: {msg}")
        }
        ureq::Error::Transport(t) => crate::net::http_unreachable("the node", shown(api), &t, NODE_HINT),
    }
}

fn post(api: &ApiArgs, path: &str, body: Value) -> Result<(), String> {
    let mut req = agent().post(&url(api, path));
    if let Some(t) = &api.api_token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp: Value = req.send_json(body).map_err(|e| explain(api, e))?.into_json().map_err(|e| e.to_string())?;
    println!("{resp}");
    Ok(())
}

fn list(api: &ApiArgs, name: Option<&str>, raw: bool) -> Result<(), String> {
    let path = match name {
        Some(n) => format!("/records/{n}"),
        None => "/list".to_string(),
    };
    let resp: Value =
        agent().get(&url(api, &path)).call().map_err(|e| explain(api, e))?.into_json().map_err(|e| e.to_string())?;
    if raw {
        println!("{resp}");
        return Ok(());
    }
    for r in resp.as_array().into_iter().flatten() {
        let data = r["data"].as_array().cloned().unwrap_or_default();
        for d in data {
            println!(
                "{:<40} {:>8} IN {:<6} {}",
                r["name"].as_str().unwrap_or("?"),
                r["ttl"],
                r["type"].as_str().unwrap_or("?"),
                d.as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn query(name: &str, rtype: &str, server_arg: &str, tcp: bool) -> Result<(), String> {
    let qname = Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
    let qtype = RType::from_mnemonic(rtype).ok_or_else(|| format!("unknown type {rtype:?}"))?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let q = encode(&Message {
        header: Header { id, rd: true, ..Header::default() },
        questions: vec![Question { name: qname, qtype, qclass: CLASS_IN }],
        edns: Some(Edns::default()),
        ..Message::default()
    });
    let server: SocketAddr = crate::net::resolve(server_arg)?[0];
    let unreachable = |e: std::io::Error| crate::net::unreachable("the DNS server", server_arg, &e, NODE_HINT);
    let timeout = Duration::from_secs(3);
    let bytes = if tcp {
        let mut s = TcpStream::connect_timeout(&server, timeout).map_err(unreachable)?;
        s.set_read_timeout(Some(timeout)).ok();
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).map_err(unreachable)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(unreachable)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(unreachable)?;
        buf
    } else {
        let local = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout)).ok();
        // Connected, so that a port nobody listens on comes back as a
        // refusal (ICMP port unreachable) instead of a silent timeout.
        s.connect(server).map_err(unreachable)?;
        s.send(&q).map_err(unreachable)?;
        let mut buf = vec![0u8; 65_535];
        let n = s.recv(&mut buf).map_err(unreachable)?;
        buf.truncate(n);
        buf
    };
    let m = decode(&bytes).map_err(|e| format!("undecodable answer: {e}"))?;
    if m.header.id != id {
        return Err("the answer's id does not match the query".into());
    }
    println!(
        ";; {} id={} aa={} tc={} answers={}",
        m.rcode().name(),
        m.header.id,
        m.header.aa,
        m.header.tc,
        m.answers.len()
    );
    for (section, recs) in [("", &m.answers), (";; authority: ", &m.authorities), (";; additional: ", &m.additionals)] {
        for r in recs {
            println!("{section}{}\t{}\tIN\t{}\t{}", r.name, r.ttl, r.data.rtype(), rdata_to_text(&r.data));
        }
    }
    Ok(())
}
