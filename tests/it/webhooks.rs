//! Alerts reaching a product: a real receiver on loopback gets Commet-shaped events, signed
//! with its secret, in order, from the outbox written with each change — also after it was down
//! and the daemon restarted.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tally_daemon::config::Config;
use tally_daemon::webhooks::delivery::{DeliveryTerms, Endpoint};
use tally_protocol::message::{ModelUsage, ReportItem, Role, TopUpAmount};

use crate::receiver::{Received, Receiver};
use crate::test_daemon::{wallet, TestDaemon};

const SECRET: &str = "whsec_test_0123456789abcdef";

fn with_endpoint(config: &mut Config, receiver: &Receiver) {
    config.webhooks.endpoints = vec![Endpoint::configured(
        receiver.url().parse().unwrap(),
        SECRET.into(),
        None,
    )];
    config.webhooks.terms = DeliveryTerms {
        retry_for: Duration::from_secs(3_600),
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        retention: Duration::from_secs(3_600),
        sandbox: true,
    };
}

fn signed_by_the_secret(received: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&received.body);
    hex::encode(mac.finalize().into_bytes()) == received.signature
}

/// 1,000 prompt tokens and `output` answer tokens of gpt-4o: 0.03 + 0.12 × output rate units.
fn request(customer: &str, output: u64) -> ReportItem {
    ReportItem::tokens(customer, "chat", ModelUsage::new("gpt-4o", 1_000, output))
}

#[tokio::test]
async fn alerts_reach_a_signed_endpoint_in_order_and_a_crossing_fires_once() {
    let receiver = Receiver::start().await;
    let daemon = TestDaemon::start_with(|c| with_endpoint(c, &receiver), Default::default());
    let admin = daemon.client(Role::Admin).await;
    wallet(&admin, "ann", 10_000).await;
    // Eight clients at once take $1.00 down in steps of $0.051: the balance crosses
    // $0.10 (a tenth of the refill) and zero exactly once each, whoever's report does it.
    let mut reporters = Vec::new();
    for _ in 0..8 {
        let client = daemon.client(Role::Client).await;
        reporters.push(tokio::spawn(async move {
            for _ in 0..3 {
                client.usage().report(request("ann", 4_000)).await.unwrap();
            }
        }));
    }
    for reporter in reporters {
        reporter.await.unwrap();
    }
    let received = receiver.accepted(4).await;
    let events: Vec<&str> = received.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "customer.created",
            "balance.topped_up",
            "balance.low",
            "balance.depleted"
        ]
    );
    assert!(received.iter().all(signed_by_the_secret));
    let bodies: Vec<serde_json::Value> = received.iter().map(Received::json).collect();
    for (body, event) in bodies.iter().zip(&events) {
        assert_eq!(body["event"], *event);
        assert_eq!(body["mode"], "sandbox");
        assert_eq!(body["apiVersion"], "2026-07-11");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let ids: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "unique and in order: {ids:?}"
    );
    assert_eq!(bodies[1]["data"]["amount"], 10_000);
    assert_eq!(bodies[2]["data"]["customerId"], "ann");
    assert_eq!(bodies[2]["data"]["thresholdBalance"], 1_000);
    let low = bodies[2]["data"]["currentBalance"].as_i64().unwrap();
    assert!((0..1_000).contains(&low), "{low}");
    let depleted = bodies[3]["data"]["currentBalance"].as_i64().unwrap();
    let view = admin.admin().get_customer("ann").await.unwrap();
    assert!(depleted <= 0 && depleted >= view.balance_units);
    assert_eq!(
        receiver.received().len(),
        4,
        "nothing else was sent: each crossing once"
    );
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_the_backlog_in_order_after_a_restart() {
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let mut daemon = TestDaemon::start_with(|c| with_endpoint(c, &receiver), Default::default());
    let admin = daemon.client(Role::Admin).await;
    for customer in ["a", "b", "c"] {
        admin
            .admin()
            .create_customer(customer, "assistant")
            .await
            .unwrap();
    }
    // Refused while down, retried with backoff: nothing is lost by it.
    let refused = receiver.attempts(3).await;
    assert!(refused.iter().all(|r| !r.accepted));
    assert!(
        refused.iter().all(|r| r.json()["data"]["id"] == "a"),
        "the first event is retried, the others wait behind it"
    );
    admin.close().await;
    daemon.restart();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .top_up("b", TopUpAmount::Units(20_000), None)
        .await
        .unwrap();
    receiver.set_failing(false);
    let received = receiver.accepted(4).await;
    let seen: Vec<(String, String)> = received
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["event"].as_str().unwrap().to_string(),
                body["data"]["id"]
                    .as_str()
                    .or(body["data"]["customerId"].as_str())
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("customer.created".to_string(), "a".to_string()),
            ("customer.created".into(), "b".into()),
            ("customer.created".into(), "c".into()),
            ("balance.topped_up".into(), "b".into()),
        ]
    );
    assert!(received.iter().all(signed_by_the_secret));
}

#[tokio::test]
async fn endpoints_made_through_the_api_get_events_from_then_on_signed_with_their_own_secret() {
    use hyper::Method;
    use serde_json::json;
    let configured = Receiver::start().await;
    let receiver = Receiver::start().await;
    let daemon = TestDaemon::start_with(|c| with_endpoint(c, &configured), Default::default());
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("early", "assistant")
        .await
        .unwrap();
    configured.accepted(1).await;
    let http = tally::http::HttpClient::new(
        daemon.daemon().http_addr().unwrap(),
        Some(daemon.key(Role::Admin)),
    );
    let body = json!({"url": receiver.url(), "events": ["customer.created", "balance.topped_up"],
                      "description": "the product"});
    let created = http.post("/webhooks", &body).await.unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let endpoint = created.data().clone();
    let (id, secret) = (
        endpoint["id"].as_str().unwrap().to_owned(),
        endpoint["secretKey"].as_str().unwrap().to_owned(),
    );
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"));
    assert_eq!(endpoint["object"], "webhook");
    assert_eq!(endpoint["isActive"], true);

    // Events from now on (not "early"'s), the ones it asked for, signed with its secret.
    admin
        .admin()
        .create_customer("later", "assistant")
        .await
        .unwrap();
    admin
        .admin()
        .top_up("later", TopUpAmount::Units(10_000), None)
        .await
        .unwrap();
    admin.admin().close_period("later").await.unwrap();
    let got = receiver.accepted(2).await;
    let events: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            let customer = body["data"]["id"]
                .as_str()
                .or(body["data"]["customerId"].as_str());
            (r.event.clone(), customer.unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        events,
        [
            ("customer.created".to_string(), "later".to_string()),
            ("balance.topped_up".into(), "later".into()),
        ]
    );
    for r in &got {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&r.body);
        assert_eq!(hex::encode(mac.finalize().into_bytes()), r.signature);
    }

    // Listed with the configured one; tested; the configured one is changed only in the file.
    let listed = http.get("/webhooks").await.unwrap();
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()));
    let tested = http
        .post(&format!("/webhooks/{id}/test"), &json!({}))
        .await
        .unwrap();
    assert_eq!(tested.data()["success"], true, "{:?}", tested.body);
    assert_eq!(receiver.accepted(3).await[2].event, "webhook.test");
    let configured_id = ids.iter().find(|i| **i != id).unwrap().to_string();
    let refused = http
        .send(
            Method::DELETE,
            &format!("/api/v1/webhooks/{configured_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!((refused.status, refused.code()), (409, "webhook_in_config"));

    // Turned off, then deleted: nothing more reaches it.
    let off = http
        .send(
            Method::PUT,
            &format!("/api/v1/webhooks/{id}"),
            Some(&json!({"isActive": false})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(off.data()["isActive"], false);
    let deleted = http
        .send(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(deleted.data()["deleted"], true);
    let again = http
        .send(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!((again.status, again.code()), (404, "webhook_not_found"));
    admin
        .admin()
        .create_customer("last", "assistant")
        .await
        .unwrap();
    configured.accepted(5).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing after it was turned off"
    );
    let bad = http
        .post("/webhooks", &json!({"url": "ftp://x", "events": []}))
        .await
        .unwrap();
    assert_eq!((bad.status, bad.code()), (400, "validation_error"));
}

#[tokio::test]
async fn an_event_never_taken_is_dead_lettered_listed_and_redelivered_by_command() {
    use serde_json::json;
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let daemon = TestDaemon::start_with(
        |c| {
            with_endpoint(c, &receiver);
            // No retry window: a refused event is dead-lettered at once and the next follows.
            c.webhooks.terms.retry_for = Duration::ZERO;
        },
        Default::default(),
    );
    let admin = daemon.client(Role::Admin).await;
    for customer in ["a", "b", "c", "d"] {
        admin
            .admin()
            .create_customer(customer, "assistant")
            .await
            .unwrap();
    }
    // Events go one at a time: once d's is tried, a's to c's were given up on and noted.
    let tried = receiver.attempts(4).await;
    let customers: Vec<String> = tried
        .iter()
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(customers, ["a", "b", "c", "d"], "each tried once, in order");
    let http = tally::http::HttpClient::new(
        daemon.daemon().http_addr().unwrap(),
        Some(daemon.key(Role::Admin)),
    );
    let id = daemon.config.webhooks.endpoints[0].id.clone();
    let failed = http
        .get(&format!("/x-tally/webhooks/{id}/failed"))
        .await
        .unwrap();
    let listed: Vec<&str> = failed.data()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["eventId"].as_str().unwrap())
        .collect();
    assert!(listed.len() >= 3, "{:?}", failed.body);
    assert!(failed.data()["data"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("500"));

    receiver.set_failing(false);
    let again = http
        .post(&format!("/x-tally/webhooks/{id}/redeliver"), &json!({}))
        .await
        .unwrap();
    let outcomes = again.data()["data"].as_array().unwrap().clone();
    assert!(outcomes.len() >= 3);
    assert!(
        outcomes.iter().all(|o| o["success"] == true),
        "{outcomes:?}"
    );
    let accepted = receiver.accepted(outcomes.len()).await;
    assert!(accepted.iter().all(signed_by_the_secret));
    let first: Vec<String> = accepted
        .iter()
        .take(3)
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first, ["a", "b", "c"]);
    let left = http
        .get(&format!("/x-tally/webhooks/{id}/failed"))
        .await
        .unwrap();
    let left = left.data()["data"].as_array().unwrap().len();
    assert!(
        left <= 1,
        "only d's may be left, given up on after the redelivery began"
    );
}

#[tokio::test]
async fn a_subscription_hears_committed_alerts_and_resumes_after_a_reconnect_without_a_gap() {
    use tally_protocol::message::WatchRequest;
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("before", "assistant")
        .await
        .unwrap();
    let monitor = daemon.client(Role::Monitor).await;
    let filter = WatchRequest {
        customer: Some("ann".into()),
        ..WatchRequest::default()
    };
    let mut subscription = monitor.events().subscribe(filter.clone());
    // The first call sets "from now", so what follows is all the subscription hears.
    let first = tokio::spawn({
        let admin = daemon.client(Role::Admin).await;
        async move {
            admin
                .admin()
                .create_customer("bob", "assistant")
                .await
                .unwrap();
            admin
                .admin()
                .create_customer("ann", "assistant")
                .await
                .unwrap();
            admin
                .admin()
                .top_up("ann", TopUpAmount::Units(10_000), None)
                .await
                .unwrap();
            admin.usage().report(request("ann", 90_000)).await.unwrap();
        }
    });
    let created = subscription.next().await.unwrap();
    assert_eq!(
        (created.event.as_str(), created.customer.as_str()),
        ("customer.created", "ann")
    );
    let data: serde_json::Value = serde_json::from_str(&created.data).unwrap();
    assert_eq!(data["planCode"], "assistant");
    let resume_after = subscription.position();
    drop(subscription);
    monitor.close().await;
    first.await.unwrap();

    // A new connection resumes after what it saw: the rest, in order, nothing twice.
    let monitor = daemon.client(Role::Monitor).await;
    let mut resumed = monitor.events().subscribe(WatchRequest {
        after: resume_after,
        ..filter
    });
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(resumed.next().await.unwrap().event);
    }
    assert_eq!(
        events,
        ["balance.topped_up", "balance.low", "balance.depleted"]
    );
}
