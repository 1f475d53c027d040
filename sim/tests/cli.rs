//! The `sim` command line, run as a user runs it: help exits 0, a bad flag
//! or an impossible value exits 2, and `--json` puts exactly one JSON
//! document on stdout (the human report on stderr) for every subcommand.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("the sim binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn gossip_help_prints_the_options_and_exits_0() {
    let o = sim(&["gossip", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let help = String::from_utf8(o.stdout).unwrap();
    for flag in ["--nodes", "--loss", "--sync-every", "--providers", "--json"] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_loss_of_10_is_refused_with_status_2_and_says_why() {
    let o = sim(&["gossip", "--loss", "10"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("between 0 and 1"), "{}", stderr(&o));
}

#[test]
fn an_unknown_flag_is_refused_with_status_2() {
    for args in [&["gossip", "--no-such-flag"][..], &["chaos", "--seeds", "many"], &["swarm", "--peers", "0"]] {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn json_is_exactly_one_document_on_stdout_for_every_subcommand() {
    let runs: [&[&str]; 3] = [
        &["gossip", "--nodes", "8", "--secs", "4", "--warmup-secs", "1", "--json"],
        &["chaos", "--seed", "3", "--json"],
        &["swarm", "--peers", "3", "--pieces", "8", "--piece-kib", "16", "--json"],
    ];
    for args in runs {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8(o.stdout.clone()).unwrap();
        // from_str refuses trailing text: one document and nothing else.
        let doc: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON document ({e}):\n{out}"));
        assert!(doc.is_object(), "{args:?}: {doc}");
        assert!(!o.stderr.is_empty(), "{args:?}: the human report goes to stderr");
    }
    let chaos = sim(&["chaos", "--seed", "3", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&chaos.stdout).unwrap();
    assert_eq!(doc["violations"], 0);
    assert_eq!(doc["seeds"], 1);
}

#[test]
fn no_seal_says_so_and_changes_no_protocol_figure() {
    let run = |extra: &[&str]| {
        let mut args = vec!["gossip", "--nodes", "30", "--secs", "12", "--warmup-secs", "4", "--json"];
        args.extend_from_slice(extra);
        let o = sim(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
        (j, stderr(&o))
    };
    let (sealed, sealed_text) = run(&[]);
    let (plain, plain_text) = run(&["--no-seal"]);
    assert_eq!(sealed["sealed"], true);
    assert_eq!(plain["sealed"], false);
    assert!(sealed_text.contains("messages: sealed"), "{sealed_text}");
    assert!(plain_text.contains("NOT sealed"), "{plain_text}");
    for k in ["writes", "converged", "rounds_50", "rounds_100", "bytes_per_node_per_s", "pair_rounds_999"] {
        assert_eq!(sealed[k], plain[k], "{k} differs with --no-seal");
    }
    assert_ne!(sealed["trace_hash"], plain["trace_hash"], "the bytes on the wire differ");
}
