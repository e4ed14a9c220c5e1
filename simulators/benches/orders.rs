//! Order actions per second through the Binance simulator's REST, signed and verified
//! as a real client and the venue do: concurrent clients each placing a resting limit
//! order and cancelling it, over keep-alive connections on loopback.
//!
//! `cargo bench -p simulators --bench orders -- [--clients N] [--seconds S]`

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use simulators::binance::{BinanceSim, BinanceSimConfig};
use streaming::binance::rest::{Keys, Rest};
use streaming::secret::Secret;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clients = arg("--clients", 16);
    let seconds = arg("--seconds", 5);
    let cfg = BinanceSimConfig {
        weight_limit: u64::MAX / 4,
        orders_per_10s: u64::MAX / 4,
        orders_per_minute: u64::MAX / 4,
        ..BinanceSimConfig::default()
    };
    let sim = BinanceSim::bind(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.pause_market(true);
    let keys = Keys {
        api_key: Secret::new(sim.config().api_key.clone()),
        secret: Secret::new(sim.config().secret.clone()),
    };
    let rest = Rest::new(&sim.rest_url(), keys, Duration::from_secs(10)).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (rest, done, latencies) = (rest.clone(), done.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                let placed = rest
                    .signed(
                        Method::POST,
                        "/fapi/v1/order",
                        &[
                            ("symbol", "BTCUSDT".to_owned()),
                            ("side", "BUY".to_owned()),
                            ("type", "LIMIT".to_owned()),
                            ("timeInForce", "GTC".to_owned()),
                            ("quantity", "0.01".to_owned()),
                            ("price", "58000".to_owned()),
                        ],
                    )
                    .await
                    .expect("placed");
                mine.push(t.elapsed().as_micros() as u32);
                let id = serde_json::from_str::<serde_json::Value>(&placed).unwrap()["orderId"]
                    .as_u64()
                    .unwrap();
                let t = Instant::now();
                rest.signed(
                    Method::DELETE,
                    "/fapi/v1/order",
                    &[
                        ("symbol", "BTCUSDT".to_owned()),
                        ("orderId", id.to_string()),
                    ],
                )
                .await
                .expect("cancelled");
                mine.push(t.elapsed().as_micros() as u32);
                done.fetch_add(2, Relaxed);
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Relaxed);
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
    println!(
        "order actions: {n} in {secs:.1} s = {:.0}/s with {clients} clients (place + cancel, signed); latency p50 {:.2} ms, p99 {:.2} ms",
        n as f64 / secs,
        q(0.5),
        q(0.99)
    );
    sim.stop();
}
