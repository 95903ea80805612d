//! The HTTP server (I/O edge, axum): read-only GET routes over an
//! [`AdminView`]; any other method gets 405 from the router.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gateway_core::metrics::Family;
use std::net::SocketAddr;
use std::sync::Arc;

/// Whether the gateway should receive traffic, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Ready (200), with something the operator should see: an RPC
    /// endpoint refused for serving another chain.
    Degraded(String),
    NotReady(String),
}

/// What the daemon exposes to the admin surface. Every method is a cheap
/// read of state the daemon already holds.
pub trait AdminView: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
    fn metrics(&self) -> Vec<Family>;
    fn peers(&self) -> serde_json::Value;
    /// The access decision for a base64 public key: HTTP status and body.
    fn access(&self, public_key: &str) -> (u16, serde_json::Value);
}

type Shared = Arc<dyn AdminView>;

pub fn router(view: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/peers", get(peers))
        .route("/v1/access/{*public_key}", get(access))
        .with_state(view)
}

async fn readyz(State(view): State<Shared>) -> Response {
    match view.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Readiness::Degraded(why) => (StatusCode::OK, format!("ready, degraded: {why}\n")).into_response(),
        Readiness::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(view): State<Shared>) -> Response {
    let body = gateway_core::metrics::render(&view.metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn peers(State(view): State<Shared>) -> Json<serde_json::Value> {
    Json(view.peers())
}

async fn access(State(view): State<Shared>, Path(public_key): Path<String>) -> Response {
    let (status, body) = view.access(&public_key);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// Binds `listen` and serves until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    view: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the admin HTTP server to {listen}"))?;
    tracing::info!(%listen, "admin HTTP listening");
    axum::serve(listener, router(view)).with_graceful_shutdown(shutdown).await.context("admin HTTP server")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Fixed(Readiness);
    impl AdminView for Fixed {
        fn readiness(&self) -> Readiness {
            self.0.clone()
        }
        fn metrics(&self) -> Vec<Family> {
            use gateway_core::metrics::{MetricKind, Sample};
            vec![Family::new("gw_up", "Up.", MetricKind::Gauge).with(Sample::new(1.0))]
        }
        fn peers(&self) -> serde_json::Value {
            serde_json::json!([{"node_id": "n1"}])
        }
        fn access(&self, k: &str) -> (u16, serde_json::Value) {
            (if k == "allowed" { 200 } else { 403 }, serde_json::json!({"key": k}))
        }
    }

    async fn get(view: Readiness, path: &str, method: &str) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(Fixed(view)));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = String::new();
        stream.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[tokio::test]
    async fn routes_answer_from_the_view() {
        assert_eq!(get(Readiness::Ready, "/healthz", "GET").await.0, 200);
        assert_eq!(get(Readiness::Ready, "/readyz", "GET").await.0, 200);
        let (status, body) = get(Readiness::NotReady("chain lag 40 blocks".into()), "/readyz", "GET").await;
        assert_eq!(status, 503);
        assert!(body.contains("chain lag 40 blocks"));
        let (_, metrics) = get(Readiness::Ready, "/metrics", "GET").await;
        assert!(metrics.contains("# TYPE gw_up gauge\ngw_up 1\n"));
        assert!(get(Readiness::Ready, "/v1/peers", "GET").await.1.contains("n1"));
        assert_eq!(get(Readiness::Ready, "/v1/access/allowed", "GET").await.0, 200);
        // Base64 keys contain '/' and '+': the whole rest of the path is the key.
        let (status, body) = get(Readiness::Ready, "/v1/access/ab/cd+ef=", "GET").await;
        assert_eq!(status, 403);
        assert!(body.contains("ab/cd+ef="), "{body}");
    }

    #[tokio::test]
    async fn the_surface_is_read_only() {
        for method in ["POST", "PUT", "DELETE"] {
            assert_eq!(get(Readiness::Ready, "/v1/peers", method).await.0, 405, "{method}");
        }
    }
}
