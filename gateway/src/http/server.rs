//! The HTTP server (I/O edge, axum): read-only GET routes over an
//! [`AdminView`]; any other method gets 405 from the router. Two surfaces:
//! the whole API ([`Routers::api`]: health, metrics, `/v1/peers`,
//! `/v1/access`, the `/v1` routes behind a bearer token when one is set)
//! and health plus metrics alone ([`Routers::metrics`]), which may face a
//! monitoring network because it lists no node's key, owner or address.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gateway_core::metrics::{Family, MetricKind, Sample};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What the daemon exposes to the admin surface. The answers are futures:
/// the daemon's loop owns what they read and answers between two steps.
pub trait AdminView: Send + Sync + 'static {
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
    fn metrics(&self) -> impl Future<Output = Vec<Family>> + Send;
    /// The registry's peers with their live WireGuard state: HTTP status and body.
    fn peers(&self) -> impl Future<Output = (u16, serde_json::Value)> + Send;
    /// The access decision for a base64 public key: HTTP status and body.
    fn access(&self, public_key: &str) -> impl Future<Output = (u16, serde_json::Value)> + Send;
}

/// The shortest token accepted: 16 bytes is 128 bits from
/// `head -c 32 /dev/urandom | base64` with room to spare.
const MIN_TOKEN_BYTES: usize = 16;

/// Why a token file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the API token file {path}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path} is readable by group or others; chmod 600 it")]
    Open { path: std::path::PathBuf },
    #[error("{path} holds a token shorter than {MIN_TOKEN_BYTES} bytes; make one with `head -c 32 /dev/urandom | base64 > {path}`")]
    Short { path: std::path::PathBuf },
}

/// The bearer token `/v1/*` requires, read from a file only its owner can
/// read. Never printed.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    pub fn read(path: &std::path::Path) -> Result<ApiToken, TokenError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| TokenError::Read { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(TokenError::Open { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::Short { path: path.to_path_buf() });
        }
        Ok(ApiToken(token.as_bytes().into()))
    }

    /// The token `[http] api_token_file` names, if it names one.
    pub fn configured(http: &crate::config::HttpSection) -> Result<Option<ApiToken>, TokenError> {
        if http.api_token_file.is_empty() {
            return Ok(None);
        }
        ApiToken::read(std::path::Path::new(&http.api_token_file)).map(Some)
    }

    /// Whether an `Authorization` header carries this token, comparing in
    /// time that does not depend on where the first difference is.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected: &[u8] = &self.0;
        given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

struct Surface<V> {
    view: Arc<V>,
    token: Option<ApiToken>,
    /// `/v1` requests refused for a missing or wrong token.
    unauthorized: Arc<AtomicU64>,
}

// Not derived: that would ask `V: Clone`, and only the `Arc` is cloned.
impl<V> Clone for Surface<V> {
    fn clone(&self) -> Self {
        Surface { view: self.view.clone(), token: self.token.clone(), unauthorized: self.unauthorized.clone() }
    }
}

/// The two routers over one view (they share the refusal counter).
pub struct Routers {
    /// Every route; `/v1/*` behind the token when there is one.
    pub api: Router,
    /// `/healthz`, `/readyz`, `/metrics` alone.
    pub metrics: Router,
}

pub fn routers<V: AdminView>(view: Arc<V>, token: Option<ApiToken>) -> Routers {
    let surface = Surface { view, token, unauthorized: Arc::new(AtomicU64::new(0)) };
    let health = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<V>))
        .route("/metrics", get(metrics::<V>));
    let api = health
        .clone()
        .route("/v1/peers", get(peers::<V>))
        .route("/v1/access/{*public_key}", get(access::<V>))
        .with_state(surface.clone());
    Routers { api, metrics: health.with_state(surface) }
}

/// Every route without a token (tests and callers that need one router).
pub fn router<V: AdminView>(view: Arc<V>) -> Router {
    routers(view, None).api
}

async fn readyz<V: AdminView>(State(s): State<Surface<V>>) -> Response {
    match s.view.readiness().await {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Readiness::Degraded(why) => (StatusCode::OK, format!("ready, degraded: {why}\n")).into_response(),
        Readiness::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics<V: AdminView>(State(s): State<Surface<V>>) -> Response {
    let mut families = s.view.metrics().await;
    families.push(
        Family::new("gw_http_unauthorized_total", "Peer and access API requests refused for a missing or wrong bearer token.", MetricKind::Counter)
            .with(Sample::new(s.unauthorized.load(Ordering::Relaxed) as f64)),
    );
    let body = gateway_core::metrics::render(&families);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `None` when the request may read the API, else the 401 to send.
fn refused<V>(s: &Surface<V>, headers: &HeaderMap) -> Option<Response> {
    let token = s.token.as_ref()?;
    if token.admits(headers) {
        return None;
    }
    s.unauthorized.fetch_add(1, Ordering::Relaxed);
    Some((StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is required\n").into_response())
}

async fn peers<V: AdminView>(State(s): State<Surface<V>>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&s, &headers) {
        return no;
    }
    json_answer(s.view.peers().await)
}

async fn access<V: AdminView>(State(s): State<Surface<V>>, headers: HeaderMap, Path(public_key): Path<String>) -> Response {
    if let Some(no) = refused(&s, &headers) {
        return no;
    }
    json_answer(s.view.access(&public_key).await)
}

fn json_answer((status, body): (u16, serde_json::Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// Binds `listen` and serves `router` until `shutdown` resolves; `what`
/// names the surface in the log.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    what: &'static str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the {what} HTTP server to {listen}"))?;
    tracing::info!(%listen, what, "admin HTTP listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.with_context(|| format!("{what} HTTP server"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Fixed(Readiness);
    impl AdminView for Fixed {
        async fn readiness(&self) -> Readiness {
            self.0.clone()
        }
        async fn metrics(&self) -> Vec<Family> {
            vec![Family::new("gw_up", "Up.", MetricKind::Gauge).with(Sample::new(1.0))]
        }
        async fn peers(&self) -> (u16, serde_json::Value) {
            (200, serde_json::json!([{"node_id": "n1"}]))
        }
        async fn access(&self, k: &str) -> (u16, serde_json::Value) {
            (if k == "allowed" { 200 } else { 403 }, serde_json::json!({"key": k}))
        }
    }

    async fn request(app: Router, method: &str, path: &str, extra: &str) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = String::new();
        stream.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        (status, buf)
    }

    async fn get(view: Readiness, path: &str, method: &str) -> (u16, String) {
        let (status, text) = request(router(Arc::new(Fixed(view))), method, path, "").await;
        (status, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
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
        assert!(metrics.contains("gw_http_unauthorized_total 0\n"), "{metrics}");
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

    #[tokio::test]
    async fn the_metrics_surface_serves_no_peer_or_access_data() {
        let r = routers(Arc::new(Fixed(Readiness::Ready)), None);
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(request(r.metrics.clone(), "GET", path, "").await.0, 200, "{path}");
        }
        for path in ["/v1/peers", "/v1/access/allowed", "/v1/", "/"] {
            assert_eq!(request(r.metrics.clone(), "GET", path, "").await.0, 404, "{path}");
        }
    }

    fn token_file(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn the_api_wants_the_bearer_token_and_counts_refusals() {
        let secret = "c2VjcmV0LXRva2VuLWZvci10aGUtYXBp";
        let (_dir, path) = token_file(&format!("{secret}\n"), 0o600);
        let token = ApiToken::read(&path).unwrap();
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)", "never printed");
        let r = routers(Arc::new(Fixed(Readiness::Ready)), Some(token));
        let (status, text) = request(r.api.clone(), "GET", "/v1/peers", "").await;
        assert_eq!(status, 401);
        assert!(text.to_ascii_lowercase().contains("www-authenticate: bearer"), "{text}");
        assert!(!text.contains("n1"));
        for wrong in ["Bearer nope", &format!("Bearer {secret}x"), &format!("Basic {secret}"), &format!("Bearer {}", &secret[1..])] {
            let (status, _) = request(r.api.clone(), "GET", "/v1/access/allowed", &format!("Authorization: {wrong}\r\n")).await;
            assert_eq!(status, 401, "{wrong}");
        }
        let (status, text) = request(r.api.clone(), "GET", "/v1/peers", &format!("Authorization: Bearer {secret}\r\n")).await;
        assert_eq!(status, 200);
        assert!(text.contains("n1"));
        // Health and metrics stay open on the API listener too.
        let (status, text) = request(r.api.clone(), "GET", "/metrics", "").await;
        assert_eq!(status, 200);
        assert!(text.contains("gw_http_unauthorized_total 5\n"), "{text}");
        let (_, text) = request(r.metrics.clone(), "GET", "/metrics", "").await;
        assert!(text.contains("gw_http_unauthorized_total 5\n"), "the metrics listener counts the same refusals: {text}");
    }

    #[test]
    fn token_files_must_be_private_and_long_enough() {
        let (_d, open) = token_file("c2VjcmV0LXRva2VuLWZvci10aGUtYXBp", 0o644);
        assert!(matches!(ApiToken::read(&open), Err(TokenError::Open { .. })));
        let (_d, short) = token_file("short\n", 0o600);
        let err = ApiToken::read(&short).unwrap_err();
        assert!(matches!(err, TokenError::Short { .. }) && err.to_string().contains("/dev/urandom"), "{err}");
        let missing = ApiToken::read(std::path::Path::new("/nonexistent/api.token")).unwrap_err();
        assert!(matches!(missing, TokenError::Read { .. }));
        // The OS error is the source, not repeated in the message.
        assert_eq!(missing.to_string(), "reading the API token file /nonexistent/api.token");
    }
}
