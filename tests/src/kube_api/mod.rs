//! An in-process Kubernetes API server for tests. It speaks the real HTTP list/watch protocol
//! (paginated LIST at a consistent snapshot, chunked WATCH with bookmarks, 410 Gone), so a kube-rs
//! client, in-process or in a child process via a kubeconfig, cannot tell it from kube-apiserver.
//! Tests change objects with [`KubeApiServer::apply`] and [`KubeApiServer::delete`], inject the
//! failures a real cluster has (compaction, expired or closed watches, error statuses, an outage on
//! the same port) and read what the client asked for ([`KubeApiServer::requests`] and counters).
//!
//! Served: cluster-wide and namespaced GET/LIST/WATCH of the collections in [`Resource`],
//! equality- and set-based label selectors, dotted-path field selectors, `/version` and health
//! checks. Not served: writes over HTTP, discovery, protobuf, TLS and authentication.
//!
//! One concern per file:
//!
//! - `server.rs`: the handle tests hold ([`KubeApiServer`]), and the HTTP serving and routing
//!   behind it (one thread with its own runtime per start, so an outage drops every connection).
//! - `objects.rs`: the collections served ([`Resource`]) and the store: objects, their history,
//!   the open watches, counters and injected failures.
//! - `list.rs`, `watch.rs`: the two ways to read a collection (pages of a snapshot; a stream of
//!   events with bookmarks and 410s).
//! - `selectors.rs`: which objects a request sees (namespace, label and field selectors).
//! - `http.rs`: query parameters, JSON responses and failures as `Status` objects.

mod http;
mod list;
mod objects;
mod selectors;
mod server;
mod watch;

pub use objects::Resource;
pub use server::{ApiRequest, KubeApiServer};
