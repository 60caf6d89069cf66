//! Streamed answers against holds of model requests, and model prices reloaded while the daemon
//! runs — through the client library against a real daemon.

use std::time::Duration;

use tally_daemon::config::ConfigSource;
use tally_protocol::message::{ModelUsage, ReportItem, Role, TallyError};
use tally_protocol::Error;

use crate::test_daemon::{wallet, TestDaemon};

/// Rate units charged for `cost_units` of provider cost on plan `assistant` (+20%), rounded up.
fn charged(cost_units: u64) -> i64 {
    (u128::from(cost_units) * 12_000).div_ceil(10_000_000_000) as i64
}

/// gpt-4o's example prices, in cost units per prompt and per answer token.
const INPUT: u64 = 25_000;
const OUTPUT: u64 = 100_000;

#[tokio::test]
async fn streams_of_one_wallet_at_once_never_overspend_and_pay_for_what_they_delivered() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    wallet(&admin, "ann", 10_000).await;
    // Six answers of up to 40,000 tokens each on a $1.00 wallet (about 83,000 tokens' worth):
    // some are cut off, and none may take the wallet below zero.
    let mut streams = Vec::new();
    for _ in 0..6 {
        let client = daemon.client(Role::Client).await;
        streams.push(tokio::spawn(async move {
            let holds = client.holds();
            let opened = holds
                .reserve_tokens(
                    "ann",
                    "chat",
                    ModelUsage::new("gpt-4o", 1_000, 256),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
            let Some(hold) = opened.hold else {
                return 0; // not even the first 256 tokens were affordable
            };
            let (mut delivered, mut allowed) = (0u64, 256u64);
            while delivered < 40_000 {
                delivered = (delivered + 1_500).min(allowed);
                let answer = holds.progress(hold, delivered).await.unwrap();
                assert!(answer.output_tokens_allowed >= delivered);
                allowed = answer.output_tokens_allowed;
                if answer.cut_off && delivered == allowed {
                    break;
                }
            }
            holds.settle_output(hold, delivered, None).await.unwrap();
            delivered
        }));
    }
    let mut delivered = Vec::new();
    for stream in streams {
        delivered.push(stream.await.unwrap());
    }
    let view = admin.admin().get_customer("ann").await.unwrap();
    assert!(view.holds.is_empty());
    assert!(view.balance_units >= 0, "overspent: {view:?}");
    let started = delivered.iter().filter(|&&d| d > 0).count() as u64;
    let cost: u64 = started * 1_000 * INPUT + delivered.iter().sum::<u64>() * OUTPUT;
    assert_eq!(
        10_000 - view.balance_units,
        charged(cost),
        "charged exactly the tokens delivered: {delivered:?}"
    );
    assert!(
        delivered.iter().any(|&d| d < 40_000),
        "the wallet ran out: {delivered:?}"
    );
    let line = &view.models[0];
    assert_eq!(line.output_tokens, delivered.iter().sum::<u64>());
    assert_eq!(line.charged, charged(cost));
    // The console's counts per model (no customer in them) say the same.
    let stats = daemon
        .client(Role::Monitor)
        .await
        .monitor()
        .stats()
        .await
        .unwrap();
    let counted = &stats.models[0];
    assert_eq!(
        (counted.feature.as_str(), counted.model.as_str()),
        ("chat", "gpt-4o")
    );
    assert_eq!(counted.output_tokens, line.output_tokens);
    assert_eq!((counted.requests, counted.cost_units), (started, cost));
}

#[tokio::test]
async fn model_prices_reload_whole_or_not_at_all_and_open_holds_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let shipped = tally_daemon::config::DEFAULT_CONFIG_TOML;
    std::fs::write(&path, shipped).unwrap();
    let source = ConfigSource {
        path: path.clone(),
        overrides: Vec::new(),
    };
    let daemon = TestDaemon::start_with(|config| config.source = Some(source), Default::default());
    let admin = daemon.client(Role::Admin).await;
    wallet(&admin, "ann", 100_000).await;
    let request = || ReportItem::tokens("ann", "chat", ModelUsage::new("gpt-4o", 1_200, 350));
    let first = admin.usage().report(request()).await.unwrap();
    assert_eq!(first.charged, 78, "$0.0065 + 20%");
    let hold = admin
        .holds()
        .reserve_tokens(
            "ann",
            "chat",
            ModelUsage::new("gpt-4o", 1_200, 4_096),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .hold
        .unwrap();

    // A file with an unrepresentable price is refused whole; the old prices stay.
    let gpt_4o = "[models.\"gpt-4o\"]\ninput = \"2.50\"\noutput = \"10.00\"";
    assert!(shipped.contains(gpt_4o), "the shipped example prices");
    std::fs::write(
        &path,
        shipped.replace(
            gpt_4o,
            "[models.\"gpt-4o\"]\ninput = \"2.50\"\noutput = \"-1\"",
        ),
    )
    .unwrap();
    let refused = admin.admin().reload_models().await.unwrap_err();
    let Error::Rejected(TallyError::InvalidRequest { reason }) = refused else {
        panic!("{refused:?}")
    };
    assert!(reason.contains("models.gpt-4o.output"), "{reason}");
    assert_eq!(admin.usage().report(request()).await.unwrap().charged, 78);

    // Answer tokens at $20.00 a million from now on.
    std::fs::write(
        &path,
        shipped.replace(
            gpt_4o,
            "[models.\"gpt-4o\"]\ninput = \"2.50\"\noutput = \"20.00\"",
        ),
    )
    .unwrap();
    let reloaded = admin.admin().reload_models().await.unwrap();
    assert!(reloaded.models.contains(&"gpt-4o".to_string()));
    let third = admin.usage().report(request()).await.unwrap();
    assert_eq!(third.charged, 120, "$0.003 + $0.007, + 20%");
    // The hold was opened at the old prices and settles at them.
    let settled = admin.holds().settle_output(hold, 350, None).await.unwrap();
    let used_before = 2 * 65_000_000 + 100_000_000;
    assert_eq!(
        settled.charged,
        charged(used_before + 65_000_000) - charged(used_before)
    );

    // The invoice bills every request at the prices it was priced at, per model.
    daemon.clock.advance_ms(1_000);
    let invoice = admin.admin().close_period("ann").await.unwrap();
    let line = &invoice.models[0];
    assert_eq!((line.model.as_str(), line.requests), ("gpt-4o", 4));
    assert_eq!(line.cost_units, used_before + 65_000_000);
    assert_eq!(line.charged, charged(used_before + 65_000_000));
    let listed = admin.admin().list_invoices("ann").await.unwrap();
    assert_eq!(listed.last().unwrap().models, invoice.models, "as stored");
    // And `tally reconcile` accepts it: the events carry each request's cost at its prices.
    let check = tally_tui::run::reconcile(&admin, invoice).await.unwrap();
    assert!(check.is_reconciled(), "{check:?}");
}

#[tokio::test]
async fn the_http_door_streams_against_a_hold_and_settles_with_the_output_alone() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    wallet(&admin, "ann", 10_000).await;
    let http = tally::http::HttpClient::new(
        daemon.daemon().http_addr().unwrap(),
        Some(daemon.key(Role::Client)),
    );
    let body = serde_json::json!({"customerId": "ann", "featureCode": "chat", "ttlSeconds": 60,
                                  "model": "gpt-4o", "inputTokens": 1_000, "maxOutputTokens": 256});
    let opened = http.post("/x-tally/holds", &body).await.unwrap();
    assert_eq!(opened.status, 201, "{:?}", opened.body);
    let id = opened.data()["id"].as_str().unwrap().to_owned();
    let progress = |output: u64| {
        let (http, path) = (&http, format!("/x-tally/holds/{id}/progress"));
        async move {
            http.post(&path, &serde_json::json!({ "outputTokens": output }))
                .await
                .unwrap()
        }
    };
    let grown = progress(256).await;
    assert_eq!(grown.status, 200, "{:?}", grown.body);
    assert_eq!(grown.data()["cutOff"], false);
    assert_eq!(grown.data()["outputTokensAllowed"], 512);
    let cut = progress(200_000).await;
    assert_eq!(cut.data()["cutOff"], true);
    assert_eq!(cut.data()["outputTokensAllowed"], 83_083);
    let settled = http
        .post(
            &format!("/x-tally/holds/{id}/settle"),
            &serde_json::json!({ "outputTokens": 83_083 }),
        )
        .await
        .unwrap();
    assert_eq!(settled.status, 200, "{:?}", settled.body);
    assert_eq!(settled.data()["charged"], 10_000);
    let gone = progress(1).await;
    assert_eq!((gone.status, gone.code()), (404, "hold_not_found"));
    assert_eq!(
        admin
            .admin()
            .get_customer("ann")
            .await
            .unwrap()
            .balance_units,
        0
    );
}
