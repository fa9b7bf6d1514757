//! Plumbing every netmeter service shares, written once: command-line errors ([`cli`]), Kafka
//! client settings incl. TLS/SASL ([`kafka`]), logging ([`telemetry`]), the `/metrics`,
//! `/healthz` and `/readyz` endpoint ([`http`]) and how metrics are declared for it
//! ([`metric`]), the start-up/shutdown story ([`service`]), consuming (a consumer group, a
//! topic read to its end: [`consume`]), publishing with confirmation ([`publish`]) and the
//! dead-letter topic ([`dead_letter`]).

pub mod cli;
pub mod consume;
pub mod dead_letter;
pub mod http;
pub mod kafka;
pub mod metric;
pub mod publish;
pub mod retry;
pub mod service;
pub mod telemetry;

pub use cli::{ConfigError, parse_args};
pub use http::Health;
pub use service::{ServiceArgs, ServiceContext, run_service};
