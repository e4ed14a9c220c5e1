//! What every venue simulator shares: serving a router over plain TCP or TLS with a
//! fresh self-signed certificate, the `/sim/` controls' one fault endpoint and one
//! error shape, a seeded random walk of underlying prices, and Black-Scholes values to
//! derive option prices and Greeks from it.
//!
//! The service's own pricing model lives in the processor; this one only has to
//! make simulated venues internally consistent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use streaming::rng::SplitMix64;

/// A venue whose faults are switched on over HTTP: `POST /sim/fault/{name}[?count=n]`.
pub trait Faults: Send + Sync + 'static {
    type Fault;
    /// Every name [`Faults::parse`] accepts, listed by the 404 for any other.
    const NAMES: &'static [&'static str];
    fn parse(name: &str, count: Option<u32>) -> Option<Self::Fault>;
    fn apply(&self, fault: Self::Fault);
}

#[derive(Debug, serde::Deserialize)]
pub struct FaultQuery {
    count: Option<u32>,
}

/// `POST /sim/fault/{name}`, the same for every venue: `{"injected": name}`, or the
/// one 404 naming the faults there are.
pub async fn fault<V: Faults>(
    State(venue): State<Arc<V>>,
    Path(name): Path<String>,
    Query(q): Query<FaultQuery>,
) -> Response {
    match V::parse(&name, q.count) {
        Some(f) => {
            venue.apply(f);
            Json(json!({"injected": name})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown fault {name:?}"), "known": V::NAMES})),
        )
            .into_response(),
    }
}

/// Every listed fault name parses (a test helper for each venue).
#[cfg(test)]
pub fn assert_fault_names<V: Faults>() {
    for name in V::NAMES {
        assert!(
            V::parse(name, None).is_some(),
            "{name} is listed but not parsed"
        );
    }
    assert!(V::parse("no-such-fault", None).is_none());
}

/// The one shape of a refused `/sim/` control: `{"error": message}`.
pub fn sim_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Serves `app` on `listener` until the task is aborted; with `tls`, over HTTPS/WSS
/// with a self-signed certificate, as a local broker gateway does.
pub fn serve(
    listener: TcpListener,
    app: Router,
    tls: bool,
    name: &'static str,
) -> std::io::Result<JoinHandle<()>> {
    fn spawn<L>(listener: L, app: Router, name: &'static str) -> JoinHandle<()>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, simulator = name, "simulator stopped");
            }
        })
    }
    Ok(if tls {
        let acceptor = self_signed_acceptor()?;
        spawn(
            TlsListener {
                tcp: listener,
                acceptor,
            },
            app,
            name,
        )
    } else {
        spawn(listener, app, name)
    })
}

/// Accepts TCP connections and completes a TLS handshake on each; a failed
/// handshake (a client refusing the self-signed certificate) is dropped quietly.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn self_signed_acceptor() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| other(&e))?;
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| other(&e))?
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .map_err(|e| other(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One message read from a simulator's WebSocket.
#[derive(Debug)]
pub enum Inbound {
    Text(String),
    /// A ping, pong or other frame the socket handles itself.
    Other,
    /// Closed or broken: end the connection.
    Gone,
}

/// Classifies what `socket.recv()` returned. A close is answered first: tungstenite
/// queues the close reply and a client waits for it, so it is flushed here.
pub async fn inbound(socket: &mut WebSocket, msg: Option<Result<Message, axum::Error>>) -> Inbound {
    match msg {
        Some(Ok(Message::Text(t))) => Inbound::Text(t.to_string()),
        Some(Ok(Message::Binary(b))) => Inbound::Text(String::from_utf8_lossy(&b).into_owned()),
        Some(Ok(Message::Close(_))) => {
            let _ = futures_util::SinkExt::flush(socket).await;
            Inbound::Gone
        }
        None | Some(Err(_)) => Inbound::Gone,
        Some(Ok(_)) => Inbound::Other,
    }
}

/// Sends every queued text frame; false once the socket is gone.
pub async fn send_all(socket: &mut WebSocket, out: &mut Vec<String>) -> bool {
    for text in out.drain(..) {
        if socket.send(Message::text(text)).await.is_err() {
            return false;
        }
    }
    true
}

/// Underlying prices on a seeded geometric random walk: the same seed replays the
/// same path on every machine.
#[derive(Debug, Clone)]
pub struct RandomWalk {
    pub rng: SplitMix64,
    pub spots: Vec<f64>,
    pub step: u64,
}

impl RandomWalk {
    pub fn new(rng: SplitMix64, spots: Vec<f64>) -> Self {
        Self {
            rng,
            spots,
            step: 0,
        }
    }

    /// Moves every price one step (0.05% standard deviation) and returns the step count.
    pub fn advance(&mut self) -> u64 {
        const SIGMA_STEP: f64 = 0.0005;
        for i in 0..self.spots.len() {
            let z = self.rng.normal();
            self.spots[i] *= (SIGMA_STEP * z).exp();
        }
        self.step += 1;
        self.step
    }
}

/// Black-Scholes value and Greeks in our units: delta and gamma per unit of the
/// underlying, theta per calendar day, vega and rho per 1 point (1%).
#[derive(Debug, Clone, Copy)]
pub struct OptionValue {
    pub price: f64,
    pub delta: f64,
    pub gamma: f64,
    pub theta_day: f64,
    pub vega_point: f64,
    pub rho_point: f64,
}

pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7: plenty for a
/// simulator).
pub fn norm_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

pub fn bsm(s: f64, k: f64, t: f64, r: f64, v: f64, call: bool) -> OptionValue {
    let sqrt_t = t.sqrt();
    let d1 = ((s / k).ln() + (r + 0.5 * v * v) * t) / (v * sqrt_t);
    let d2 = d1 - v * sqrt_t;
    let disc = (-r * t).exp();
    let decay = -s * norm_pdf(d1) * v / (2.0 * sqrt_t);
    let (price, delta, theta, rho) = if call {
        (
            s * norm_cdf(d1) - k * disc * norm_cdf(d2),
            norm_cdf(d1),
            decay - r * k * disc * norm_cdf(d2),
            k * t * disc * norm_cdf(d2),
        )
    } else {
        (
            k * disc * norm_cdf(-d2) - s * norm_cdf(-d1),
            norm_cdf(d1) - 1.0,
            decay + r * k * disc * norm_cdf(-d2),
            -k * t * disc * norm_cdf(-d2),
        )
    };
    OptionValue {
        price,
        delta,
        gamma: norm_pdf(d1) / (s * v * sqrt_t),
        theta_day: theta / 365.0,
        vega_point: s * norm_pdf(d1) * sqrt_t / 100.0,
        rho_point: rho / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsm_matches_hulls_worked_example() {
        // Hull, Options, Futures and Other Derivatives, example 15.6: S=42, K=40,
        // T=0.5, r=10%, σ=20% → call 4.76, put 0.81.
        let c = bsm(42.0, 40.0, 0.5, 0.1, 0.2, true);
        let p = bsm(42.0, 40.0, 0.5, 0.1, 0.2, false);
        assert!((c.price - 4.76).abs() < 0.005, "{}", c.price);
        assert!((p.price - 0.81).abs() < 0.005, "{}", p.price);
        assert!((c.delta - p.delta - 1.0).abs() < 1e-9);
        assert!(c.rho_point > 0.0 && p.rho_point < 0.0);
    }

    #[test]
    fn the_walk_replays_for_a_seed() {
        let mut a = RandomWalk::new(SplitMix64::new(3), vec![100.0, 50.0]);
        let mut b = RandomWalk::new(SplitMix64::new(3), vec![100.0, 50.0]);
        for _ in 0..100 {
            a.advance();
            b.advance();
        }
        assert_eq!(a.spots, b.spots);
        assert_ne!(a.spots[0], 100.0);
    }
}
