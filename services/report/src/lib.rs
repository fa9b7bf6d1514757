//! `netmeter report`: the traffic and cost questions people ask, answered from the ClickHouse
//! tables the sink fills, for a time range, as terminal tables, JSON, CSV or an HTML page.
//!
//! The pieces, in the order a report is made:
//! - [`options`]: the range (whole minutes, UTC), filters, `--top`; the `--from`/`--since`
//!   time syntax.
//! - [`query`]: checks the schema, picks per part of the range the rollup or `flows` that
//!   answers ([`query::plan`]), runs one readable SQL statement per table and builds the
//!   [`model::Report`].
//! - [`bandwidth`]: the published bandwidth of instance types and the node status.
//! - [`model`]: the report as data, the contract between `query` and every renderer.
//! - [`render`]: terminal, JSON and CSV; [`html`]: the page.
//! - [`cli`]: the `netmeter` command line.
//!
//! From code (the demo):
//! ```no_run
//! # async fn demo() -> Result<(), netmeter_report::ReportError> {
//! use netmeter_report::{Connection, Options, TimeRange, build, render};
//! let connection = Connection::new("http://127.0.0.1:8123", "default", "", "netmeter");
//! let range = TimeRange::last(std::time::Duration::from_secs(3600), std::time::SystemTime::now())
//!     .expect("an hour is a range");
//! let report = build(&connection, &Options::new(range)).await?;
//! print!("{}", render::terminal(&report, &render::TerminalStyle::default()));
//! # Ok(()) }
//! ```

pub mod bandwidth;
pub mod cli;
pub mod error;
pub mod html;
pub mod model;
pub mod options;
pub mod query;
pub mod render;

pub use error::ReportError;
pub use options::{Options, TimeRange};
pub use query::{Connection, build};
