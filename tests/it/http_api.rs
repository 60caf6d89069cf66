//! The HTTP/JSON API over real HTTP on loopback: the three consumption models end to end, the
//! two doors (HTTP and QUIC) agreeing on the same customer, idempotent retries, Commet-shaped
//! errors that change nothing, limits, HTTP/2, and the test clock closing a period.

use serde_json::{json, Value};
use tally::http::{Answer, HttpClient};
use tally_protocol::message::{ReportItem, Role, Standing};

use crate::test_daemon::TestDaemon;

fn api(daemon: &TestDaemon, role: Role) -> HttpClient {
    HttpClient::new(
        daemon.daemon().http_addr().expect("the API listens"),
        Some(daemon.key(role)),
    )
}

fn sandbox() -> TestDaemon {
    TestDaemon::start_with(
        |config| config.sandbox.test_clock = true,
        Default::default(),
    )
}

/// Creates a customer with a profile and puts it on `plan`.
async fn subscribe(admin: &HttpClient, id: &str, plan: &str) {
    let created = admin
        .post(
            "/customers",
            &json!({"id": id, "email": format!("{id}@example.com")}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let subscribed = admin
        .post(
            "/subscriptions",
            &json!({"customerId": id, "planCode": plan}),
        )
        .await
        .unwrap();
    assert_eq!(subscribed.status, 201, "{:?}", subscribed.body);
    assert_eq!(subscribed.data()["id"], format!("sub_{id}"));
}

async fn check(client: &HttpClient, id: &str, feature: &str, quantity: u64) -> Value {
    let answer = client
        .post(
            "/usage/check",
            &json!({"customerId": id, "featureCode": feature, "quantity": quantity}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.data().clone()
}

#[tokio::test]
async fn the_three_models_work_over_http_and_quic_sees_the_same_customer() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    let client = api(&daemon, Role::Client);

    // Balance: a wallet topped up in cents, spent at $0.03 per gpt-4 call.
    subscribe(&admin, "w", "wallet").await;
    let denied = check(&client, "w", "gpt-4", 1).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["consumptionModel"], "balance");
    assert_eq!(denied["reason"], "insufficient_balance");
    let topped = admin
        .post(
            "/subscriptions/sub_w/balance/topup",
            &json!({"amount": 100}),
        )
        .await
        .unwrap();
    assert_eq!(topped.status, 200, "{:?}", topped.body);
    assert_eq!(topped.data()["balance"], 10_000);
    let allowed = check(&client, "w", "gpt-4", 2).await;
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["estimatedAmount"], 600);
    assert_eq!(allowed["currentBalance"], 10_000);
    let tracked = client
        .post(
            "/usage/events",
            &json!({"customerId": "w", "feature": "gpt-4", "value": 2}),
        )
        .await
        .unwrap();
    assert_eq!(tracked.status, 201, "{:?}", tracked.body);
    assert_eq!(tracked.data()["charged"], 600);

    // The QUIC door sees the HTTP report, and the HTTP door the QUIC one, at once.
    let quic = daemon.client(Role::Admin).await;
    let view = quic.admin().get_customer("w").await.unwrap();
    assert_eq!(view.balance_units, 9_400);
    quic.usage()
        .report(ReportItem::new("w", "gpt-4", 1))
        .await
        .unwrap();
    assert_eq!(
        check(&client, "w", "gpt-4", 1).await["currentBalance"],
        9_100
    );

    // Credits: a pack bought through its id, spent one credit per image.
    subscribe(&admin, "i", "images").await;
    let packs = admin.get("/credit-packs").await.unwrap();
    assert_eq!(packs.data()[0]["id"], "pack_images");
    assert_eq!(packs.data()[0]["price"], 1_000);
    let bought = admin
        .post(
            "/subscriptions/sub_i/credits",
            &json!({"creditPackId": "pack_images"}),
        )
        .await
        .unwrap();
    assert_eq!(bought.data()["credits"], 500, "{:?}", bought.body);
    let credits = check(&client, "i", "image-gen", 3).await;
    assert_eq!(
        (
            &credits["consumptionModel"],
            &credits["estimatedCredits"],
            &credits["purchasedCredits"]
        ),
        (&json!("credits"), &json!(3), &json!(500))
    );
    assert_eq!(
        check(&client, "i", "image-gen", 501).await["reason"],
        "insufficient_credits"
    );

    // Metered: 100,000 tokens included, then overage.
    subscribe(&admin, "p", "pro").await;
    client
        .post(
            "/usage/events",
            &json!({"customerId": "p", "featureCode": "tokens", "value": 99_999}),
        )
        .await
        .unwrap();
    let metered = check(&client, "p", "tokens", 1).await;
    assert_eq!(
        (
            &metered["current"],
            &metered["remaining"],
            &metered["included"]
        ),
        (&json!(99_999), &json!(1), &json!(100_000))
    );
    let access = client
        .get("/feature-access/priority-support?customerId=p&action=canUse")
        .await
        .unwrap();
    assert_eq!(access.data()["allowed"], true, "{:?}", access.body);
    let all = client.get("/feature-access?customerId=p").await.unwrap();
    assert_eq!(all.data().as_array().map(Vec::len), Some(2));
    let Standing::Metered { used, .. } = quic
        .entitlements()
        .check("p", "tokens", 1)
        .await
        .unwrap()
        .standing
    else {
        panic!("a metered standing")
    };
    assert_eq!(used, 99_999);
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_once_and_a_different_body_is_a_conflict() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    subscribe(&admin, "w", "wallet").await;
    let top_up = json!({"amount": 500});
    let first = admin
        .post_keyed("/subscriptions/sub_w/balance/topup", &top_up, "retry-1")
        .await
        .unwrap();
    let again = admin
        .post_keyed("/subscriptions/sub_w/balance/topup", &top_up, "retry-1")
        .await
        .unwrap();
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(again.data()["duplicate"], true);
    assert_eq!(again.data()["transactionId"], first.data()["transactionId"]);
    let other = admin
        .post_keyed(
            "/subscriptions/sub_w/balance/topup",
            &json!({"amount": 600}),
            "retry-1",
        )
        .await
        .unwrap();
    assert_eq!(other.status, 409);
    assert_eq!(other.code(), "idempotency_key_mismatch");

    let event = json!({"customerId": "w", "feature": "gpt-4", "value": 1, "idempotencyKey": "e-1"});
    let tracked = admin.post("/usage/events", &event).await.unwrap();
    let replayed = admin.post("/usage/events", &event).await.unwrap();
    assert_eq!((tracked.status, replayed.status), (201, 200));
    assert_eq!(replayed.data()["id"], tracked.data()["id"]);
    let subscription = admin.get("/subscriptions/sub_w").await.unwrap();
    assert_eq!(subscription.data()["balance"]["remaining"], 50_000 - 300);
    // Asking again for the plan a customer is on is a harmless retry; another plan conflicts.
    let same = admin
        .post(
            "/subscriptions",
            &json!({"customerId": "w", "planCode": "wallet"}),
        )
        .await
        .unwrap();
    assert_eq!(same.status, 200);
    let other_plan = admin
        .post(
            "/subscriptions",
            &json!({"customerId": "w", "planCode": "pro"}),
        )
        .await
        .unwrap();
    assert_eq!(other_plan.code(), "already_has_active_subscription");
}

#[tokio::test]
async fn bad_requests_get_commet_shaped_errors_and_change_nothing() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    let addr = daemon.daemon().http_addr().unwrap();
    subscribe(&admin, "w", "wallet").await;
    admin
        .post(
            "/subscriptions/sub_w/balance/topup",
            &json!({"amount": 100}),
        )
        .await
        .unwrap();
    let seq_before = admin.get("/subscriptions/sub_w").await.unwrap().data()["seq"].clone();

    let shape = |answer: &Answer, status: u16, code: &str| {
        assert_eq!(answer.status, status, "{:?}", answer.body);
        assert_eq!(answer.body["success"], false);
        assert_eq!(answer.code(), code, "{:?}", answer.body);
        assert!(answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    };
    let track = |body: Value| {
        let admin = admin.clone();
        async move { admin.post("/usage/events", &body).await.unwrap() }
    };
    let no_key = HttpClient::new(addr, None).get("/plans").await.unwrap();
    shape(&no_key, 401, "unauthorized");
    assert!(no_key.headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let wrong_key = HttpClient::new(addr, Some("ck_guess".into()))
        .get("/plans")
        .await
        .unwrap();
    shape(&wrong_key, 401, "unauthorized");
    let garbage = admin
        .send_raw(
            hyper::Method::POST,
            "/api/v1/usage/events",
            b"{nope".to_vec(),
            &[],
        )
        .await
        .unwrap();
    shape(&garbage, 400, "invalid_json");
    for (body, field) in [
        (json!({"feature": "gpt-4", "value": 1}), "customerId"),
        (
            json!({"customerId": "w", "feature": "gpt-4", "value": -1}),
            "value",
        ),
        (
            json!({"customerId": "w", "feature": "gpt-4", "value": 1.5}),
            "value",
        ),
        (
            json!({"customerId": "w", "feature": "gpt-4", "value": "1"}),
            "value",
        ),
        (json!({"customerId": "w", "value": 1}), "featureCode"),
    ] {
        let answer = track(body).await;
        shape(&answer, 400, "validation_error");
        assert_eq!(
            answer.body["error"]["details"][0]["field"], field,
            "{:?}",
            answer.body
        );
    }
    shape(
        &track(json!({"customerId": "nobody", "feature": "gpt-4"})).await,
        404,
        "customer_not_found",
    );
    shape(
        &track(json!({"customerId": "w", "feature": "nothing"})).await,
        404,
        "feature_not_found",
    );
    shape(
        &track(json!({"customerId": "w", "feature": "tokens"})).await,
        400,
        "feature_not_in_plan",
    );
    // Model tokens on a feature priced per unit, and on one the plan does not have.
    shape(
        &track(json!({"customerId": "w", "feature": "gpt-4", "model": "gpt-4o", "inputTokens": 1, "outputTokens": 1})).await,
        400,
        "validation_error",
    );
    shape(
        &track(json!({"customerId": "w", "feature": "chat", "model": "gpt-4o", "inputTokens": 1, "outputTokens": 1})).await,
        400,
        "feature_not_in_plan",
    );
    let huge = json!({"customerId": "w", "feature": "gpt-4", "pad": "x".repeat(70_000)});
    shape(&track(huge).await, 413, "payload_too_large");
    shape(&admin.get("/payments").await.unwrap(), 501, "not_supported");
    shape(
        &admin
            .post("/subscriptions/sub_w/cancel", &json!({}))
            .await
            .unwrap(),
        501,
        "not_supported",
    );
    shape(
        &admin.get("/test-clock").await.unwrap(),
        403,
        "sandbox_only",
    );
    let client = api(&daemon, Role::Client);
    shape(
        &client
            .post("/subscriptions/sub_w/balance/topup", &json!({"amount": 1}))
            .await
            .unwrap(),
        403,
        "forbidden",
    );
    let outside = admin
        .send(hyper::Method::GET, "/v2/x", None, &[])
        .await
        .unwrap();
    shape(&outside, 404, "not_found");

    let after = admin.get("/subscriptions/sub_w").await.unwrap();
    assert_eq!(
        after.data()["seq"],
        seq_before,
        "no rejection changed the customer"
    );
    assert_eq!(after.data()["balance"]["remaining"], 10_000);
}

#[tokio::test]
async fn a_customer_without_a_plan_is_denied_with_a_reason_and_lists_page_by_cursor() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    for id in ["c1", "c2", "c3"] {
        admin
            .post(
                "/customers",
                &json!({"externalId": id, "fullName": "C", "metadata": {"tier": 1}}),
            )
            .await
            .unwrap();
    }
    let denied = check(&admin, "c1", "gpt-4", 1).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["reason"], "no_active_subscription");
    let active = admin
        .get("/subscriptions/active?customerId=c1")
        .await
        .unwrap();
    assert_eq!((active.status, active.data()), (200, &Value::Null));

    let first = admin.get("/customers?limit=2").await.unwrap();
    assert_eq!(first.body["hasMore"], true);
    let cursor = first.body["nextCursor"].as_str().unwrap().to_string();
    let rest = admin
        .get(&format!("/customers?limit=2&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(rest.body["hasMore"], false);
    let ids: Vec<&Value> = first
        .data()
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.data().as_array().unwrap())
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&json!("c1"), &json!("c2"), &json!("c3")]);
    let updated = admin
        .send(
            hyper::Method::PUT,
            "/api/v1/customers/c2",
            Some(&json!({"email": "new@example.com"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated.data()["email"], "new@example.com");
    assert_eq!(updated.data()["metadata"]["tier"], 1);
}

#[tokio::test]
async fn the_test_clock_closes_a_period_and_its_invoice_is_listed_in_cents() {
    let daemon = sandbox();
    let admin = api(&daemon, Role::Admin);
    subscribe(&admin, "p", "pro").await;
    admin
        .post(
            "/usage/events",
            &json!({"customerId": "p", "feature": "tokens", "value": 100_500}),
        )
        .await
        .unwrap();
    let moved = admin
        .post("/test-clock", &json!({"advanceDays": 32}))
        .await
        .unwrap();
    assert_eq!(moved.data()["isActive"], true, "{:?}", moved.body);
    let invoices = admin.get("/invoices?customerId=p").await.unwrap();
    let invoice = &invoices.data()[0];
    // $49 base + 500 tokens × $0.002 overage.
    assert_eq!(invoice["total"], 4_900 + 100, "{invoice}");
    assert_eq!(invoice["lineItems"][0]["lineType"], "plan_base");
    let id = invoice["id"].as_str().unwrap();
    let one = admin.get(&format!("/invoices/{id}")).await.unwrap();
    assert_eq!(one.data()["total"], invoice["total"]);
    let back = admin
        .post(
            "/test-clock",
            &json!({"frozenTime": "2020-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(back.code(), "validation_error");
}

// Multi-threaded: the client's HTTP/2 connection must answer the daemon's GOAWAY while the test's
// thread waits in the daemon's shutdown (on one thread it could not, and the daemon would wait
// out its shutdown grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_and_holds_work() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    subscribe(&admin, "w", "wallet").await;
    admin
        .post(
            "/subscriptions/sub_w/balance/topup",
            &json!({"amount": 100}),
        )
        .await
        .unwrap();
    let h2 = HttpClient::http2(
        daemon.daemon().http_addr().unwrap(),
        Some(daemon.key(Role::Client)),
    );
    let hold = h2
        .post(
            "/x-tally/holds",
            &json!({"customerId": "w", "featureCode": "gpt-4", "quantity": 10, "ttlSeconds": 60}),
        )
        .await
        .unwrap();
    assert_eq!(hold.status, 201, "{:?}", hold.body);
    assert_eq!(hold.data()["held"], 3_000);
    assert_eq!(check(&h2, "w", "gpt-4", 1).await["currentBalance"], 7_000);
    let id = hold.data()["id"].as_str().unwrap();
    let settled = h2
        .post(
            &format!("/x-tally/holds/{id}/settle"),
            &json!({"actual": 4}),
        )
        .await
        .unwrap();
    assert_eq!(settled.data()["charged"], 1_200, "{:?}", settled.body);
    assert_eq!(check(&h2, "w", "gpt-4", 1).await["currentBalance"], 8_800);
    let gone = h2
        .post(&format!("/x-tally/holds/{id}/release"), &json!({}))
        .await
        .unwrap();
    assert_eq!(gone.code(), "hold_not_found");
}

/// Reads from `stream` until the peer closes it; returns what arrived.
fn read_to_close(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    // A bound, so a daemon that never closes fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn slow_idle_and_oversized_peers_are_refused_or_cut_off_without_holding_slots() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let daemon = TestDaemon::start_with(
        |config| {
            config.http.max_connections = 1;
            config.http.read_timeout_ms = 300;
        },
        Default::default(),
    );
    let addr = daemon.daemon().http_addr().unwrap();
    let key = daemon.key(Role::Admin);

    // An idle connection holds the only slot until the read timeout closes it; the next one is
    // served after that, not refused.
    let mut idle = TcpStream::connect(addr).unwrap();
    let began = Instant::now();
    let mut next = TcpStream::connect(addr).unwrap();
    write!(
        next,
        "GET /api/v1/plans HTTP/1.1\r\nhost: t\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let answer = read_to_close(&mut next);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        began.elapsed() >= Duration::from_millis(250),
        "served only once the idle connection's slot was freed"
    );
    assert_eq!(
        read_to_close(&mut idle),
        "",
        "the idle connection was closed"
    );

    // A body that never arrives: 408 in Commet's shape.
    let mut slow = TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "POST /api/v1/usage/check HTTP/1.1\r\nhost: t\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    )
    .unwrap();
    let answer = read_to_close(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");

    // A head larger than header_bytes_max: 431, and the connection ends.
    let mut huge = TcpStream::connect(addr).unwrap();
    let padding = "x".repeat(40_000);
    let _ = write!(
        huge,
        "GET /api/v1/plans HTTP/1.1\r\nhost: t\r\nx-api-key: {key}\r\nx-pad: {padding}\r\n\r\n"
    );
    let answer = read_to_close(&mut huge);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn requests_of_both_doors_are_counted_together_in_stats() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    subscribe(&admin, "w", "wallet").await;
    check(&admin, "w", "gpt-4", 1).await;
    let quic = daemon.client(Role::Admin).await;
    quic.entitlements().check("w", "gpt-4", 1).await.unwrap();
    let stats = quic.monitor().stats().await.unwrap();
    let checks = stats
        .operations
        .iter()
        .find(|op| op.operation == "check")
        .unwrap();
    assert_eq!(checks.count, 2);
    assert_eq!(stats.checks_denied, 2);
}

#[tokio::test]
async fn concurrent_sets_of_a_feature_add_its_difference_once() {
    let daemon = TestDaemon::start();
    let admin = api(&daemon, Role::Admin);
    subscribe(&admin, "p", "pro").await;
    let sets = (0..8).map(|_| {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .send(
                    hyper::Method::PUT,
                    "/api/v1/usage",
                    Some(&json!({"customerId": "p", "featureCode": "tokens", "value": 100})),
                    &[],
                )
                .await
                .unwrap()
        })
    });
    let mut added = 0;
    for set in sets {
        let answer = set.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        added += answer.data()["adjustment"].as_u64().unwrap();
    }
    assert_eq!(
        added, 100,
        "one set added the difference, the others found it there"
    );
    assert_eq!(check(&admin, "p", "tokens", 1).await["current"], 100);
}
