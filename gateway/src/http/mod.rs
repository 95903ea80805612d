//! The read-only admin surface (I/O edge): `/healthz`, `/readyz`, `/metrics`,
//! `/v1/peers`, `/v1/access/{pubkey}` on `[http] listen` (the `/v1` routes
//! behind a bearer token when `api_token_file` is set), and health plus
//! metrics alone on `[http] metrics_listen`. The daemon supplies the answers
//! through [`AdminView`]; this module only serves them.

pub mod server;

pub use server::{router, routers, serve, AdminView, ApiToken, Readiness, Routers, TokenError};
