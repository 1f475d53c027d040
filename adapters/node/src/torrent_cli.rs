//! `rumor torrent ...`: a client of a node's torrent session over its HTTP
//! API, the way transmission-remote is one of transmission-daemon's. A
//! torrent is named by its infohash or the first hex digits of it (as `ls`
//! shows them); every command prints a table or lines a person reads, or
//! with `--json` the API's answer as it came.

use crate::dns_cli::{agent, explain, url, ApiArgs};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

/// The `torrent` subcommands.
#[derive(Subcommand, Debug)]
pub enum TorrentCmd {
    /// Add a torrent: a .torrent file, a magnet link, or an infohash (40
    /// hex digits or 32 base32 characters).
    Add {
        /// The .torrent file, magnet link or infohash.
        what: String,
        /// Add it without starting it.
        #[arg(long)]
        paused: bool,
        /// Its download limit, bytes/s (suffixes k, m, g: KiB, MiB, GiB).
        #[arg(long, value_parser = parse_rate)]
        download_limit: Option<u64>,
        /// Its upload limit, bytes/s (suffixes k, m, g: KiB, MiB, GiB).
        #[arg(long, value_parser = parse_rate)]
        upload_limit: Option<u64>,
        #[command(flatten)]
        out: Out,
    },
    /// List the node's torrents.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        out: Out,
    },
    /// One torrent in full: state, rates, files, trackers, peers.
    Show {
        /// Infohash, or its first hex digits.
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Stop a torrent's transfers (it keeps its place and its data).
    Pause {
        /// Infohash, or its first hex digits.
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Start a paused torrent again.
    Resume {
        /// Infohash, or its first hex digits.
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Hash a torrent's data on disk again.
    Recheck {
        /// Infohash, or its first hex digits.
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Remove a torrent from the node (its files stay unless --delete-data).
    #[command(alias = "remove")]
    Rm {
        /// Infohash, or its first hex digits.
        id: String,
        /// Delete its downloaded files too.
        #[arg(long)]
        delete_data: bool,
        #[command(flatten)]
        out: Out,
    },
}

/// The API to talk to and how to print its answer.
#[derive(Args, Debug)]
pub struct Out {
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// Runs a `torrent` subcommand.
pub fn run(cmd: TorrentCmd) -> ExitCode {
    match run_cmd(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cmd(cmd: TorrentCmd) -> Result<(), String> {
    match cmd {
        TorrentCmd::Add { what, paused, download_limit, upload_limit, out } => {
            let answer = add(&out.api, &what, paused, download_limit, upload_limit)?;
            print_or(&out, &answer, || {
                let ih = answer["infohash"].as_str().unwrap_or("?");
                // A magnet link's name comes with its metadata; until then
                // the node may answer the infohash as the name.
                let name = answer["name"].as_str().filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(ih));
                println!("added {ih} {}", name.map_or("(name not known yet)".to_string(), clean));
            });
        }
        TorrentCmd::Ls { out } => {
            let list = call(&out.api, "GET", "/torrents", None)?;
            print_or(&out, &list, || print!("{}", table(list["torrents"].as_array().map_or(&[][..], |v| v), width())));
        }
        TorrentCmd::Show { id, out } => {
            let ih = resolve(&out.api, &id)?;
            let t = call(&out.api, "GET", &format!("/torrents/{ih}"), None)?;
            print_or(&out, &t, || print!("{}", details(&t, width())));
        }
        TorrentCmd::Pause { id, out } => action(&out, &id, "pause")?,
        TorrentCmd::Resume { id, out } => action(&out, &id, "resume")?,
        TorrentCmd::Recheck { id, out } => action(&out, &id, "recheck")?,
        TorrentCmd::Rm { id, delete_data, out } => {
            let ih = resolve(&out.api, &id)?;
            let query = if delete_data { "?delete_data=true" } else { "" };
            let answer = call(&out.api, "DELETE", &format!("/torrents/{ih}{query}"), None)?;
            print_or(&out, &answer, || {
                println!("removed {ih}{}", if delete_data { " and its files" } else { " (its files stay)" })
            });
        }
    }
    Ok(())
}

fn print_or(out: &Out, answer: &Value, human: impl FnOnce()) {
    if out.json {
        println!("{answer}");
    } else {
        human();
    }
}

/// `POST /torrents/IH/ACTION`, then the torrent's new state.
fn action(out: &Out, id: &str, what: &str) -> Result<(), String> {
    let ih = resolve(&out.api, id)?;
    let t = call(&out.api, "POST", &format!("/torrents/{ih}/{what}"), None)?;
    print_or(out, &t, || {
        println!("{ih} {}: {}", clean(t["name"].as_str().unwrap_or("")), t["state"].as_str().unwrap_or("?"))
    });
    Ok(())
}

/// One API request with the token; the answer's JSON, or why it failed.
fn call(api: &ApiArgs, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let mut req = agent().request(method, &url(api, path));
    if method != "GET" {
        if let Some(t) = &api.api_token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
    }
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = resp.map_err(|e| explain(api, e))?;
    resp.into_json().map_err(|e| format!("the node's answer is not JSON: {e}"))
}

/// What `rumor torrent add` was given.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    File(std::path::PathBuf),
    /// The JSON body of `POST /torrents`.
    Link(Value),
}

fn target(what: &str) -> Result<Target, String> {
    let path = std::path::Path::new(what);
    if path.is_file() {
        return Ok(Target::File(path.to_path_buf()));
    }
    let text = what.trim();
    if text.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("magnet:")) {
        return Ok(Target::Link(json!({ "magnet": text })));
    }
    if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Target::Link(json!({ "infohash": text.to_ascii_lowercase() })));
    }
    if text.len() == 32 && text.bytes().all(|b| matches!(b.to_ascii_uppercase(), b'A'..=b'Z' | b'2'..=b'7')) {
        // The API takes hex; a base32 infohash goes as the magnet link it
        // is short for.
        return Ok(Target::Link(json!({ "magnet": format!("magnet:?xt=urn:btih:{}", text.to_ascii_uppercase()) })));
    }
    Err(format!(
        "{what:?} is no file, no magnet link (magnet:?xt=urn:btih:...) and no infohash (40 hex digits or 32 \
         base32 characters)"
    ))
}

fn add(api: &ApiArgs, what: &str, paused: bool, down: Option<u64>, up: Option<u64>) -> Result<Value, String> {
    match target(what)? {
        Target::File(path) => {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut query = Vec::new();
            if paused {
                query.push("paused=true".to_string());
            }
            query.extend(down.map(|n| format!("download_limit={n}")));
            query.extend(up.map(|n| format!("upload_limit={n}")));
            let path =
                if query.is_empty() { "/torrents".to_string() } else { format!("/torrents?{}", query.join("&")) };
            let mut req = agent().post(&url(api, &path)).set("Content-Type", "application/x-bittorrent");
            if let Some(t) = &api.api_token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let resp = req.send_bytes(&bytes).map_err(|e| explain(api, e))?;
            resp.into_json().map_err(|e| format!("the node's answer is not JSON: {e}"))
        }
        Target::Link(mut body) => {
            if paused {
                body["paused"] = json!(true);
            }
            if let Some(n) = down {
                body["download_limit"] = json!(n);
            }
            if let Some(n) = up {
                body["upload_limit"] = json!(n);
            }
            call(api, "POST", "/torrents", Some(body))
        }
    }
}

/// The infohash an ID names: a whole infohash as it is, else the one
/// torrent of the node's whose infohash starts with it.
fn resolve(api: &ApiArgs, id: &str) -> Result<String, String> {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() > 40 {
        return Err(format!("{id:?} is no torrent ID: give its infohash, or the first hex digits of it"));
    }
    if id.len() == 40 {
        return Ok(id);
    }
    let list = call(api, "GET", "/torrents", None)?;
    let hashes: Vec<&str> =
        list["torrents"].as_array().into_iter().flatten().filter_map(|t| t["infohash"].as_str()).collect();
    pick(&hashes, &id)
}

fn pick(hashes: &[&str], prefix: &str) -> Result<String, String> {
    let found: Vec<&&str> = hashes.iter().filter(|h| h.starts_with(prefix)).collect();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!("no torrent's infohash starts with {prefix} (rumor torrent ls lists them)")),
        many => Err(format!(
            "{prefix} is the start of {} torrents' infohashes ({}): give more digits",
            many.len(),
            many.iter().map(|h| &h[..12.min(h.len())]).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A rate or limit in bytes/s: digits, with an optional k, m or g (KiB,
/// MiB, GiB).
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(t);
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("{text:?} is no rate: give bytes/s, e.g. 500k or 2m"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
}

/// Columns to fit: the terminal's when stdout is one, else `COLUMNS`, else
/// 80.
fn width() -> usize {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ only writes the winsize struct it is given.
        if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col >= 40 {
            return ws.ws_col as usize;
        }
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c: &usize| c >= 40).unwrap_or(80)
}

/// Bytes as a person reads them, in at most 8 characters: `0 B`, `999 B`,
/// `1.50 KiB`, `12.3 MiB`, `1023 GiB`, up to `16.0 EiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut i = 0;
    // 1023.6 of a unit would print as 1024: that is one of the next.
    while v >= 1023.5 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    match i {
        0 => format!("{n} B"),
        _ if v < 9.995 => format!("{v:.2} {}", UNITS[i]),
        _ if v < 99.95 => format!("{v:.1} {}", UNITS[i]),
        _ => format!("{v:.0} {}", UNITS[i]),
    }
}

/// Seconds left as `45s`, `4m12s`, `3h05m`, `2d04h`; `-` when unknown.
fn eta(v: &Value) -> String {
    let Some(s) = v.as_u64() else { return "-".into() };
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ if s < 100 * 86_400 => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
        _ => "long".into(),
    }
}

/// A name as a terminal should show it: control characters (a torrent's
/// name is anybody's text, and could move the cursor) become `?`.
fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `text` in at most `n` characters, cut with an ellipsis.
fn fit(text: &str, n: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= n {
        return text;
    }
    let mut s: String = text.chars().take(n.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn percent(v: &Value) -> String {
    let p = v.as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
    // Floor, so 99.99% never shows as 100% before it is.
    format!("{}%", (p * 100.0).floor() as u64)
}

/// The columns before the name, and their widths: what fits 80.
const COLUMNS: [(&str, usize); 7] =
    [("ID", 8), ("Done", 4), ("Size", 8), ("Down/s", 8), ("Up/s", 8), ("ETA", 6), ("State", 11)];

/// The `ls` table, every line at most `width` characters.
fn table(torrents: &[Value], width: usize) -> String {
    let fixed: usize = COLUMNS.iter().map(|(_, w)| w + 1).sum();
    let name_w = width.saturating_sub(fixed).max(8);
    let mut out = String::new();
    let mut line = |cells: [String; 7], name: &str| {
        let mut l = String::new();
        for (i, ((_, w), c)) in COLUMNS.iter().zip(cells).enumerate() {
            // The ID, ETA and state read left to right; numbers line up right.
            if matches!(i, 0 | 5 | 6) {
                l.push_str(&format!("{c:<w$} "));
            } else {
                l.push_str(&format!("{c:>w$} "));
            }
        }
        l.push_str(&fit(name, name_w));
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(COLUMNS.map(|(h, _)| h.to_string()), "Name");
    let (mut size, mut down, mut up) = (0u64, 0u64, 0u64);
    for t in torrents {
        size += u(&t["size"]);
        down += u(&t["download_rate"]);
        up += u(&t["upload_rate"]);
        let ih = t["infohash"].as_str().unwrap_or("?");
        let state = t["state"].as_str().unwrap_or("?");
        let eta = if state == "downloading" { eta(&t["eta"]) } else { "-".into() };
        line(
            [
                ih.get(..8).unwrap_or(ih).to_string(),
                percent(&t["progress"]),
                human(u(&t["size"])),
                human(u(&t["download_rate"])),
                human(u(&t["upload_rate"])),
                eta,
                fit(state, 11),
            ],
            t["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("(fetching metadata)"),
        );
    }
    let n = torrents.len();
    line(
        [
            "Sum:".into(),
            String::new(),
            human(size),
            human(down),
            human(up),
            String::new(),
            format!("{n} torrent{}", if n == 1 { "" } else { "s" }),
        ],
        "",
    );
    out
}

/// `show`: one torrent, a field a line, then its files, trackers and peers.
fn details(t: &Value, width: usize) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<10} {}\n", format!("{k}:"), v));
    let limit = |v: &Value| v.as_u64().map_or("none".to_string(), |n| format!("{}/s", human(n)));
    kv("Name", clean(t["name"].as_str().unwrap_or("")));
    kv("Infohash", t["infohash"].as_str().unwrap_or("?").to_string());
    kv("State", t["state"].as_str().unwrap_or("?").to_string());
    kv(
        "Progress",
        format!(
            "{:.1}% ({} of {})",
            t["progress"].as_f64().unwrap_or(0.0) * 100.0,
            human(u(&t["done"])),
            human(u(&t["size"]))
        ),
    );
    kv(
        "Download",
        format!(
            "{}/s (limit {}), {} this session",
            human(u(&t["download_rate"])),
            limit(&t["download_limit"]),
            human(u(&t["downloaded"]))
        ),
    );
    kv(
        "Upload",
        format!(
            "{}/s (limit {}), {} this session",
            human(u(&t["upload_rate"])),
            limit(&t["upload_limit"]),
            human(u(&t["uploaded"]))
        ),
    );
    let seeds = u(&t["seeds"]);
    kv("Peers", format!("{} ({seeds} seed{})", u(&t["peers"]), if seeds == 1 { "" } else { "s" }));
    kv("ETA", eta(&t["eta"]));
    kv("Queue", u(&t["queue_position"]).to_string());
    kv("Added", t["added_at_ms"].as_u64().map_or("?".into(), utc));
    if let Some(e) = t["error"].as_str() {
        kv("Error", clean(e));
    }
    if let Some(files) = t["files"].as_array() {
        out.push_str("\nFiles:\n");
        let path_w = width.saturating_sub(2 + 5 + 1 + 7 + 1 + 5 + 1 + 8 + 1).max(10);
        out.push_str(&format!("  {:>5} {:<7} {:>5} {:>8} Path\n", "#", "Prio", "Done", "Size"));
        for f in files {
            let size = u(&f["size"]);
            let done = u(&f["done"]).saturating_mul(100).checked_div(size).map_or("-".to_string(), |p| format!("{p}%"));
            let prio = match f["priority"].as_u64() {
                Some(0) => "skip",
                Some(1) => "normal",
                Some(2) => "high",
                _ => "?",
            };
            out.push_str(&format!(
                "  {:>5} {:<7} {:>5} {:>8} {}\n",
                u(&f["index"]),
                prio,
                done,
                human(size),
                fit(f["path"].as_str().unwrap_or("?"), path_w)
            ));
        }
    }
    if let Some(trackers) = t["trackers"].as_array().filter(|t| !t.is_empty()) {
        out.push_str("\nTrackers:\n");
        for tr in trackers {
            let mut l = format!(
                "  {} [{}]",
                fit(tr["url"].as_str().unwrap_or("?"), width.saturating_sub(20).max(20)),
                tr["status"].as_str().unwrap_or("?")
            );
            if let Some(n) = tr["peers"].as_u64() {
                l.push_str(&format!(" {n} peers"));
            }
            if let Some(e) = tr["error"].as_str() {
                l.push_str(&format!(": {}", clean(e)));
            }
            out.push_str(&fit(&l, width));
            out.push('\n');
        }
    }
    if let Some(peers) = t["peer_list"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("\nPeers:\n");
        out.push_str(&format!("  {:<21} {:>8} {:>8} {:>5} Client\n", "Address", "Down/s", "Up/s", "Has"));
        for p in peers {
            let l = format!(
                "  {:<21} {:>8} {:>8} {:>5} {}",
                fit(p["addr"].as_str().unwrap_or("?"), 21),
                human(u(&p["download_rate"])),
                human(u(&p["upload_rate"])),
                percent(&p["progress"]),
                clean(p["client"].as_str().unwrap_or(""))
            );
            out.push_str(&fit(&l, width));
            out.push('\n');
        }
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (civil from days, after
/// Howard Hinnant's algorithm: no date crate for one line of output).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3_600, (rem % 3_600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(ih: &str, name: &str, state: &str) -> Value {
        json!({
            "infohash": ih, "name": name, "state": state, "progress": 0.4215, "size": 3u64 << 30,
            "done": 1u64 << 30, "download_rate": 12_900_000, "upload_rate": 0, "eta": 3_725,
            "peers": 3, "seeds": 1, "queue_position": 0,
        })
    }

    #[test]
    fn sizes_fit_eight_characters_from_bytes_to_exbibytes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(12_900_000), "12.3 MiB");
        assert_eq!(human((1 << 30) - 1), "1.00 GiB");
        for n in [0, 9, 999, 1023, 1024, 10_234, 104_857_599, u64::MAX / 3, u64::MAX] {
            assert!(human(n).chars().count() <= 8, "{n} -> {}", human(n));
        }
    }

    #[test]
    fn an_eta_is_short_and_unknown_is_a_dash() {
        assert_eq!(eta(&json!(45)), "45s");
        assert_eq!(eta(&json!(252)), "4m12s");
        assert_eq!(eta(&json!(3_725)), "1h02m");
        assert_eq!(eta(&json!(187_200)), "2d04h");
        assert_eq!(eta(&Value::Null), "-");
        for s in [0u64, 59, 3_599, 86_399, 99 * 86_400, u64::MAX] {
            assert!(eta(&json!(s)).chars().count() <= 6, "{s}");
        }
    }

    #[test]
    fn the_table_fits_eighty_columns_and_cuts_long_names() {
        let long = "A very long torrent name that would never fit in the column it is given.mkv";
        let t = [
            summary("3f2a9c1d00112233445566778899aabbccddeeff", long, "downloading"),
            summary("0011223344556677889900112233445566778899", "short", "seeding"),
        ];
        let text = table(&t, 80);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{} columns: {line}", line.chars().count());
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID       Done     Size   Down/s     Up/s ETA    State       Name"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("3f2a9c1d  42% 3.00 GiB 12.3 MiB      0 B 1h02m  downloading A very"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with('…'));
        assert!(lines[2].ends_with("seeding     short"), "{}", lines[2]);
        assert!(lines[3].starts_with("Sum:"), "{}", lines[3]);
        assert!(lines[3].contains("6.00 GiB") && lines[3].contains("2 torrents"), "{}", lines[3]);
    }

    #[test]
    fn a_name_with_control_characters_cannot_move_the_cursor() {
        let t = [summary("3f2a9c1d00112233445566778899aabbccddeeff", "evil\x1b[2J\rname", "paused")];
        let text = table(&t, 80);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("evil?[2J?name"));
    }

    #[test]
    fn show_lists_files_trackers_and_peers_within_the_width() {
        let mut t = summary("3f2a9c1d00112233445566778899aabbccddeeff", "payload", "downloading");
        t["files"] = json!([
            {"index": 0, "path": "payload/a.bin", "size": 1048576, "done": 524288, "priority": 1},
            {"index": 1, "path": "payload/a/really/deep/folder/with/a/long/name/that/goes/on/and/on/b.bin", "size": 0, "done": 0, "priority": 0},
        ]);
        t["trackers"] = json!([{"url": "http://127.0.0.1:1/announce", "status": "error", "peers": 0, "error": "connection refused"}]);
        t["peer_list"] = json!([{"addr": "127.0.0.1:6881", "client": "libtorrent 2.0", "download_rate": 2048, "upload_rate": 0, "progress": 1.0}]);
        t["added_at_ms"] = json!(1_764_617_045_000u64);
        let text = details(&t, 80);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert!(text.contains("Progress:  42.1% (1.00 GiB of 3.00 GiB)"), "{text}");
        assert!(text.contains("    0 normal    50% 1.00 MiB payload/a.bin"), "{text}");
        assert!(text.contains("    1 skip        -      0 B payload/a/really"), "{text}");
        assert!(text.contains("[error] 0 peers: connection refused"), "{text}");
        assert!(text.contains("127.0.0.1:6881"), "{text}");
        assert!(text.contains("Added:     2025-12-01 19:24:05 UTC"), "{text}");
    }

    #[test]
    fn an_id_is_a_unique_prefix_of_an_infohash() {
        let hs = ["3f2a9c1d00112233445566778899aabbccddeeff", "3f2b000000000000000000000000000000000000"];
        assert_eq!(pick(&hs, "3f2a").unwrap(), hs[0]);
        let e = pick(&hs, "3f2").unwrap_err();
        assert!(e.contains("start of 2 torrents") && e.contains("3f2a9c1d0011"), "{e}");
        assert!(pick(&hs, "ff").unwrap_err().contains("no torrent's infohash starts with ff"));
    }

    #[test]
    fn add_takes_a_magnet_link_a_hex_or_base32_infohash_and_names_what_it_cannot_read() {
        let hex = "3F2A9C1D00112233445566778899AABBCCDDEEFF";
        assert_eq!(target(hex).unwrap(), Target::Link(json!({"infohash": hex.to_ascii_lowercase()})));
        let m = "magnet:?xt=urn:btih:3f2a9c1d00112233445566778899aabbccddeeff&dn=x";
        assert_eq!(target(m).unwrap(), Target::Link(json!({"magnet": m})));
        let b32 = "aarcem2ekvthq6fkxo6n57yaeirtgrk2";
        assert_eq!(
            target(b32).unwrap(),
            Target::Link(json!({"magnet": "magnet:?xt=urn:btih:AARCEM2EKVTHQ6FKXO6N57YAEIRTGRK2"}))
        );
        let e = target("no-such-file.torrent").unwrap_err();
        assert!(e.contains("is no file, no magnet link"), "{e}");
    }

    #[test]
    fn rates_take_binary_suffixes() {
        assert_eq!(parse_rate("1500"), Ok(1500));
        assert_eq!(parse_rate("500k"), Ok(500 * 1024));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert_eq!(parse_rate("1GiB/s"), Ok(1 << 30));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("99999999999999999999g").is_err());
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_617_045_000), "2025-12-01 19:24:05 UTC");
    }
}
