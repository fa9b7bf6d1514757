//! Plumbing every netmeter service shares, written once: command-line errors ([`cli`]), Kafka
//! client settings incl. TLS/SASL ([`kafka`]), logging ([`telemetry`]), the `/metrics`,
//! `/healthz` and `/readyz` endpoint ([`http`]), the start-up/shutdown story ([`service`]),
//! publishing with confirmation ([`publish`]) and the dead-letter topic ([`dead_letter`]).

pub mod cli;
pub mod dead_letter;
pub mod http;
pub mod kafka;
pub mod publish;
pub mod retry;
pub mod service;
pub mod telemetry;

pub use cli::{ConfigError, parse_args};
pub use http::Health;
pub use service::{ServiceArgs, ServiceContext, run_service};
