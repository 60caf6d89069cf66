//! The ops listener over real HTTP on loopback: `/livez`, `/readyz` through start-up, serving and
//! a storage failure, `/metrics` in Prometheus text, and junk requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

use tally_daemon::config::Config;
use tally_daemon::store::StoreFaults;
use tally_daemon::{Daemon, ManualClock, StartOptions};
use tally_protocol::message::*;
use tally_protocol::Client;

/// Sends `request` as is and returns the status code and body.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: tally\r\nconnection: close\r\n\r\n"),
    )
}

#[test]
fn probes_follow_the_daemon_from_recovery_to_serving_to_a_storage_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::loopback_in(dir.path());
    // Hold start-up just before recovery, and learn the ops address there.
    let (bound, ops_addr) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let faults = StoreFaults::default();
    let options = StartOptions {
        store_faults: faults.clone(),
        before_recovery: Some(Arc::new(move |addr| {
            bound.send(addr).unwrap();
            released.lock().unwrap().recv().unwrap();
        })),
        ..StartOptions::default()
    };
    let starting = std::thread::spawn(move || {
        Daemon::start_with(config, Arc::new(ManualClock::new(0)), options).unwrap()
    });
    let ops = ops_addr.recv().unwrap().expect("[ops] http_listen is set");

    assert_eq!(get(ops, "/livez"), (200, "ok\n".into()));
    let (status, body) = get(ops, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("recovering"), "{body}");
    let (status, body) = get(ops, "/metrics");
    assert_eq!(status, 200);
    assert!(body.lines().any(|l| l == "tally_ready 0"), "{body}");

    release.send(()).unwrap();
    let daemon = starting.join().unwrap();
    assert_eq!(daemon.ops_addr(), Some(ops));
    assert_eq!(get(ops, "/readyz"), (200, "ready\n".into()));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = Client::connect(daemon.dev_client_config(Role::Admin).unwrap())
            .await
            .unwrap();
        admin.admin().create_customer("acme", "pro").await.unwrap();
        for _ in 0..3 {
            admin
                .entitlements()
                .check("acme", "tokens", 1)
                .await
                .unwrap();
        }
        let (status, body) = get(ops, "/metrics");
        assert_eq!(status, 200);
        for line in [
            "tally_ready 1",
            "tally_requests_total{operation=\"check\"} 3",
            "tally_checks_total{result=\"allowed\"} 3",
            "tally_connections 1",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{line} missing from\n{body}"
            );
        }
        assert!(!body.contains("acme"), "no per-customer labels");

        // A failed write makes the daemon unready (it refuses all work until restarted).
        faults.fail_writes(true);
        let failed = admin
            .usage()
            .report(ReportItem::new("acme", "tokens", 1))
            .await;
        assert!(failed.is_err());
        let (status, body) = get(ops, "/readyz");
        assert_eq!(status, 503);
        assert!(body.contains("storage failed"), "{body}");
        let (_, metrics) = get(ops, "/metrics");
        assert!(
            metrics.lines().any(|l| l == "tally_store_healthy 0"),
            "{metrics}"
        );
    });

    // Junk gets an HTTP error, not a hang or a crash.
    assert_eq!(get(ops, "/nope").0, 404);
    assert_eq!(
        http(ops, "POST /metrics HTTP/1.1\r\nconnection: close\r\n\r\n").0,
        405
    );
    assert_eq!(http(ops, "\u{1}\u{2}garbage\r\n\r\n").0, 400);
    assert_eq!(get(ops, "/livez").0, 200);
    let stopped = daemon.shutdown();
    assert!(
        matches!(
            stopped,
            Err(tally_daemon::ShutdownError::StoreFailed { .. })
        ),
        "{stopped:?}"
    );
    assert!(
        TcpStream::connect(ops).is_err(),
        "the listener stops with the daemon"
    );
}
