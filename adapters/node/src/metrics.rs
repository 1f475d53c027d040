//! Prometheus text exposition of the node's counters (`GET /metrics`).

use crate::node::NodeStats;
use std::fmt::Write;

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP rumor_{name} {help}\n# TYPE rumor_{name} {kind}");
    }
    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let _ = write!(self.0, "rumor_{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {v}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.value(name, &[], v);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every counter, with `# HELP` and `# TYPE` lines.
pub fn render(s: &NodeStats) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.one("dns_names", "gauge", "Owner names with live records.", s.names);
    o.one("dns_rrsets", "gauge", "Live record sets.", s.rrsets);
    o.one("store_entries", "gauge", "Replicated entries held, tombstones included.", s.entries);
    o.one("store_tombstones", "gauge", "Deleted or expired entries held until collected.", s.tombstones);
    o.family("members", "gauge", "Known cluster members by state, this node excluded.");
    for (state, n) in &s.members_by_state {
        o.value("members", &[("state", state)], n);
    }
    o.family("dns_queries_total", "counter", "DNS queries answered, by question type.");
    for (t, n) in &s.dns_by_qtype {
        o.value("dns_queries_total", &[("qtype", t)], n);
    }
    o.family("dns_responses_total", "counter", "DNS responses sent, by response code.");
    for (rc, n) in &s.dns_by_rcode {
        o.value("dns_responses_total", &[("rcode", rc)], n);
    }
    o.family("dns_decode_errors_total", "counter", "Queries that could not be decoded, by kind.");
    for (k, n) in &s.dns_decode_errors {
        o.value("dns_decode_errors_total", &[("kind", k)], n);
    }
    o.one("dns_truncated_total", "counter", "Responses sent with TC set.", s.dns_truncated);
    o.one("dns_dropped_total", "counter", "Queries dropped unanswered.", s.dns_dropped);
    o.one("dns_forwarded_total", "counter", "Queries forwarded upstream.", s.dns_forwarded);
    o.one("dns_udp_datagrams_total", "counter", "UDP datagrams received.", s.dns_udp_datagrams);
    o.one("dns_udp_batches_total", "counter", "recvmmsg calls that returned datagrams.", s.dns_udp_batches);
    o.family("gossip_messages_total", "counter", "Gossip messages, by direction.");
    o.value("gossip_messages_total", &[("direction", "in")], s.gossip_messages_in);
    o.value("gossip_messages_total", &[("direction", "out")], s.gossip_messages_out);
    o.family("gossip_bytes_total", "counter", "Gossip bytes on the wire, by direction.");
    o.value("gossip_bytes_total", &[("direction", "in")], s.gossip_bytes_in);
    o.value("gossip_bytes_total", &[("direction", "out")], s.gossip_bytes_out);
    o.family("gossip_dropped_total", "counter", "Gossip messages dropped, by reason.");
    o.value("gossip_dropped_total", &[("reason", "auth")], s.gossip_dropped_auth);
    o.value("gossip_dropped_total", &[("reason", "format")], s.gossip_dropped_format);
    o.value("gossip_dropped_total", &[("reason", "queue_full")], s.gossip_dropped_queue);
    o.value("gossip_dropped_total", &[("reason", "bad_value")], s.gossip_rejected_values);
    o.value("gossip_dropped_total", &[("reason", "replay")], s.gossip_dropped_replay);
    o.one("gossip_entries_applied_total", "counter", "Remote entries applied.", s.gossip_entries_applied);
    o.one("gossip_full_transfers_total", "counter", "Full state transfers completed.", s.gossip_full_transfers);
    o.family(
        "gossip_convergence_lag_ms",
        "summary",
        "Time from a remote write (the writer's clock, in its version) to this node applying it.",
    );
    o.value("gossip_convergence_lag_ms_sum", &[], s.gossip_lag.sum_ms);
    o.value("gossip_convergence_lag_ms_count", &[], s.gossip_lag.count);
    o.one("gossip_convergence_lag_max_ms", "gauge", "The largest convergence lag seen, ms.", s.gossip_lag.max_ms);
    o.one("gossip_convergence_lag_last_ms", "gauge", "The last convergence lag seen, ms.", s.gossip_lag.last_ms);
    o.one("tracker_announces_total", "counter", "BitTorrent announces handled.", s.tracker_announces);
    o.family("tracker_answered_total", "counter", "Announces answered, by when.");
    o.value("tracker_answered_total", &[("when", "at_once")], s.tracker_answered_at_once);
    o.value("tracker_answered_total", &[("when", "after_lookup")], s.tracker_answered_after_lookup);
    o.value("tracker_answered_total", &[("when", "park_timeout")], s.tracker_answered_on_timeout);
    o.one("tracker_parked", "gauge", "Announces waiting on a providers lookup now.", s.tracker_parked);
    o.one(
        "tracker_late_after_stop_total",
        "counter",
        "Announces delivered after the same peer's stop, not listing it again.",
        s.tracker_late_after_stop,
    );
    o.one(
        "tracker_rate_limited_total",
        "counter",
        "Announces refused over their address's rate (announce rate limit).",
        s.tracker_rate_limited,
    );
    o.one(
        "tracker_not_recorded_total",
        "counter",
        "Announces answered but not recorded: a bound on providers per torrent, per address or in total.",
        s.tracker_not_recorded,
    );
    o.one("tracker_providers", "gauge", "Providers indexed, all torrents.", s.tracker_providers);
    o.one(
        "store_provider_entries",
        "gauge",
        "Replicated entries of the providers namespace, tombstones included.",
        s.provider_entries as u64,
    );
    o.one(
        "dns_tcp_write_timeouts_total",
        "counter",
        "DNS over TCP connections closed: the client did not read its answers in time.",
        s.dns_tcp_write_timeouts,
    );
    o.0
}
