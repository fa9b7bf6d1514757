//! Network namespaces for tests that need the real kernel's conntrack, one concern per file:
//!
//! - [`namespaces`]: named namespaces that are ours (created, deleted, and those of dead
//!   processes swept), code and helper commands run inside one.
//! - [`topology`]: a simulated Kubernetes node ([`NodeTopology`]): a node namespace with a
//!   bridge, two pods, and a Service DNAT'd like kube-proxy does.
//! - [`traffic`]: bounded TCP and UDP senders and sinks inside namespaces ([`tcp_send`],
//!   [`tcp_sink`], [`udp_send`], ...).
//! - [`conntrack`]: an independent reference reader of the kernel's conntrack table (the
//!   `conntrack` tool, not our netlink code), so tests can compare the collector's reader
//!   against it ([`conntrack_list`], [`parse_conntrack_events`]).
//!
//! Everything is re-exported here, so tests write `netns::NodeTopology`, `netns::tcp_send`.

pub mod conntrack;
pub mod namespaces;
pub mod topology;
pub mod traffic;

pub use conntrack::*;
pub use namespaces::*;
pub use topology::*;
pub use traffic::*;
