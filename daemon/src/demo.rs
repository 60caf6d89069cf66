//! `tallyd serve --demo`: seeds a few thousand customers on the three example plans and drives
//! realistic synthetic traffic through the real client library, so `tally top` comes alive on a
//! fresh install. It talks to the daemon over QUIC like any application would.

use std::time::Duration;

use tally_protocol::message::{ReportItem, TallyError, TopUpAmount};
use tally_protocol::{Client, ClientConfig, Error};

/// Customers per plan.
pub const CUSTOMERS_PER_PLAN: usize = 1_000;
/// Requests per second the demo aims for.
pub const DEMO_OPS_PER_SEC: u64 = 2_000;
/// Concurrent demo clients.
const WORKERS: u64 = 8;

/// Starts the demo on its own thread; it runs until the process ends.
pub fn start(config: ClientConfig) {
    std::thread::Builder::new()
        .name("tallyd-demo".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the demo");
            if let Err(e) = runtime.block_on(run(config)) {
                tracing::warn!(error = %e, "demo traffic stopped");
            }
        })
        .expect("spawning the demo thread");
}

async fn run(config: ClientConfig) -> Result<(), Error> {
    let client = Client::connect(config).await?;
    seed(&client).await?;
    tracing::info!(
        customers = 3 * CUSTOMERS_PER_PLAN,
        "demo customers ready; driving traffic"
    );
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        workers.push(tokio::spawn(async move { drive(&client, worker).await }));
    }
    for worker in workers {
        worker.await.map_err(|e| Error::Protocol(e.to_string()))??;
    }
    Ok(())
}

fn customer(plan: &str, n: usize) -> String {
    format!("demo-{plan}-{n:04}")
}

async fn seed(client: &Client) -> Result<(), Error> {
    for n in 0..CUSTOMERS_PER_PLAN {
        for plan in ["pro", "images", "wallet"] {
            match client
                .admin()
                .create_customer(&customer(plan, n), plan)
                .await
            {
                Ok(_) | Err(Error::Rejected(TallyError::CustomerExists { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        client
            .admin()
            .top_up(
                &customer("images", n),
                TopUpAmount::Packs(1 + (n % 3) as u32),
                None,
            )
            .await?;
        client
            .admin()
            .top_up(
                &customer("wallet", n),
                TopUpAmount::Units(50_000 * (1 + (n % 5) as i64)),
                None,
            )
            .await?;
    }
    Ok(())
}

/// An index below `n`, skewed towards small ones, like real traffic where a few customers are
/// busy.
fn skewed(rng: &mut fastrand::Rng, n: usize) -> usize {
    let u = rng.f64();
    ((u * u * u) * n as f64) as usize
}

async fn drive(client: &Client, worker: u64) -> Result<(), Error> {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15 ^ (worker + 1));
    let pause = Duration::from_micros(1_000_000 * WORKERS / DEMO_OPS_PER_SEC);
    loop {
        tokio::time::sleep(pause).await;
        let n = skewed(&mut rng, CUSTOMERS_PER_PLAN);
        let result = match rng.u64(..10) {
            0..=4 => {
                let id = customer("pro", n);
                let tokens = 200 + rng.u64(..4_000);
                if client
                    .entitlements()
                    .check(&id, "tokens", tokens)
                    .await?
                    .allowed
                {
                    client
                        .usage()
                        .report(ReportItem::new(id, "tokens", tokens))
                        .await
                        .map(drop)
                } else {
                    Ok(())
                }
            }
            5..=6 => {
                let id = customer("images", n);
                let consume = ReportItem::new(id.clone(), "image-gen", 1).only_if_allowed();
                match client.usage().report(consume).await {
                    Err(Error::Rejected(TallyError::InsufficientBalance { .. })) => client
                        .admin()
                        .top_up(&id, TopUpAmount::Packs(1), None)
                        .await
                        .map(drop),
                    other => other.map(drop),
                }
            }
            _ => {
                let id = customer("wallet", n);
                let feature = ["gpt-4", "gpt-3.5", "embeddings"][(rng.u64(..3)) as usize];
                let estimate = 1 + rng.u64(..5);
                let hold = client
                    .holds()
                    .reserve(&id, feature, estimate, Duration::from_secs(30))
                    .await?;
                match hold.hold {
                    Some(hold) => client
                        .holds()
                        .settle(hold, 1 + rng.u64(..estimate), None)
                        .await
                        .map(drop),
                    None => client
                        .admin()
                        .top_up(&id, TopUpAmount::Units(200_000), None)
                        .await
                        .map(drop),
                }
            }
        };
        match result {
            Ok(()) | Err(Error::Rejected(_)) => {}
            Err(e) => return Err(e),
        }
    }
}
