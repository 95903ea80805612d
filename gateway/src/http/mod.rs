//! The read-only admin surface (I/O edge): `/healthz`, `/readyz`, `/metrics`,
//! `/v1/peers`, `/v1/access/{pubkey}`. The daemon supplies the answers
//! through [`AdminView`]; this module only serves them.

pub mod server;

pub use server::{serve, AdminView, Readiness};
