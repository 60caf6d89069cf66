//! What HTTP/1.1 keep-alive itself costs on this machine: a hyper server on one current-thread
//! runtime (as Tally's server thread) answering every request with a fixed 200-byte JSON body,
//! driven by the same client `tally-bench --http` uses, `N` connections with one request in
//! flight each. Not Tally code: the floor under `POST /usage/check`.
//!
//! Run: `cargo run --release --example http_floor -- 64 [seconds]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use tally::http::HttpClient;
use tally::local::arg_or;

const BODY: &str = r#"{"success":true,"data":{"allowed":true,"consumptionModel":"metered","feature":"tokens","featureCode":"tokens","quantity":1,"current":12,"included":100000,"remaining":99988,"object":"usage_check","livemode":false}}"#;

fn main() -> anyhow::Result<()> {
    let connections: usize = arg_or(1, 64)?;
    let seconds: u64 = arg_or(2, 5)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                tokio::spawn(async move {
                    let service = service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                                .expect("a response"),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let body =
            serde_json::json!({"customerId": "bench-1", "featureCode": "tokens", "quantity": 1});
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (client, stop, body) = (HttpClient::new(addr, None), stop.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut micros = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let begin = Instant::now();
                    let answer = client
                        .send(Method::POST, "/api/v1/usage/check", Some(&body), &[])
                        .await
                        .expect("an answer");
                    assert_eq!(answer.status, 200);
                    micros.push(begin.elapsed().as_micros() as u64);
                }
                micros
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut micros = Vec::new();
        for task in tasks {
            micros.extend(task.await.expect("a task"));
        }
        micros.sort_unstable();
        let q = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
        println!(
            "{connections} connections: {:.0} req/s, p50 {} µs, p99 {} µs, p99.9 {} µs",
            micros.len() as f64 / seconds as f64,
            q(0.5),
            q(0.99),
            q(0.999)
        );
    });
    Ok(())
}
