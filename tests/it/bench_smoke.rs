//! A smoke test of `tally-bench` (not a timed test): one second against a spawned daemon with
//! tiny parameters; the JSON line has the fields of SPEC §9 and the run made no errors.

use clap::Parser;
use tally::driver::{run, Args};

/// A one-second run against a spawned daemon with tiny parameters, plus `extra` flags.
fn tiny_run(extra: &[&str]) -> Args {
    let common = [
        "tally-bench",
        "--spawn",
        "--durability",
        "buffered",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--customers",
        "20",
        "--connections",
        "2",
        "--inflight",
        "4",
    ];
    Args::parse_from(common.iter().chain(extra))
}

#[test]
fn tally_bench_runs_for_a_second_and_reports_every_field() {
    let args = tiny_run(&[
        "--mix",
        "check=50,report=20,consume=10,reserve-settle=10,batch=10",
        "--batch",
        "10",
        "--dist",
        "zipf:1.1",
    ]);
    let report = run(args).unwrap();
    let json = report.json.as_object().unwrap();
    for field in [
        "ops",
        "ops_per_sec",
        "errors",
        "report_p50_us",
        "report_p99_us",
        "report_p999_us",
        "check_p50_us",
        "check_p99_us",
        "check_p999_us",
        "max_us",
        "connections",
        "inflight",
        "mix",
        "customers",
        "dist",
        "batch",
        "duration_s",
        "durability",
    ] {
        assert!(
            json.contains_key(field),
            "missing {field} in {}",
            report.json
        );
    }
    assert_eq!(json["errors"], 0, "{}", report.json);
    assert!(json["ops"].as_u64().unwrap() > 0);
    assert!(json["check_p50_us"].as_u64().unwrap() > 0);
    assert!(json["batch_ops"].as_u64().unwrap() > 0);
    assert!(report.table.contains("reserve-settle"));
}

#[test]
fn open_loop_runs_at_its_rate_and_shows_the_daemons_own_latency() {
    let args = tiny_run(&["--mix", "check=50,report=50", "--rate", "2000"]);
    let report = run(args).unwrap();
    let json = report.json.as_object().unwrap();
    assert_eq!(json["errors"], 0, "{}", report.json);
    assert_eq!(json["mode"], "open", "{}", report.json);
    // Paced, not as fast as the daemon allows: about 2,000 in the second, never many more (the
    // lower bound is loose: a slow debug build on a shared machine sends late ones late).
    let ops = json["ops"].as_u64().unwrap();
    assert!((200..=2_200).contains(&ops), "{ops} ops: {}", report.json);
    let daemon = json["daemon_side"].as_object().unwrap();
    for op in ["check", "report"] {
        assert!(
            daemon[op]["p50_us"].as_u64().unwrap() > 0,
            "{}",
            report.json
        );
    }
}
