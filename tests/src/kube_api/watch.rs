//! WATCH: newline-delimited JSON events in a chunked response, replayed from the store's history
//! or its current state, then live; bookmarks, timeouts and 410 Expired as kube-apiserver sends
//! them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::http::{ApiError, Params};
use super::list::parse_resource_version;
use super::objects::{Change, ChangeType, Resource, ResourceSpec, Store, lock};
use super::selectors::Filter;

/// Timeout of a watch without `timeoutSeconds`: kube-apiserver's `--min-request-timeout`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the store sends an open watch: a change, or its end (expired: the client must list
/// again; closed: it watches again from where it was).
pub(super) enum WatchSignal {
    Change(Arc<Change>),
    Expire { oldest: u64 },
    Close,
}

/// The store's end of an open watch. Changes are sent to it under the store lock, so a watch
/// registered in the same critical section as its replay misses nothing and gets nothing twice.
pub(super) struct OpenWatch {
    pub(super) resource: Resource,
    pub(super) signals: mpsc::UnboundedSender<WatchSignal>,
}

/// Answers a WATCH: the replay (the changes after `resourceVersion`, or the current objects as
/// ADDED), then live changes until the timeout, an outage or a signal from the store.
pub(super) fn open_watch(
    shared: &Arc<Mutex<Store>>,
    store: &mut Store,
    resource: Resource,
    filter: Filter,
    params: &Params,
) -> Result<Response, ApiError> {
    let spec = resource.spec();
    let timeout = match params.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = params.flag("allowWatchBookmarks");
    let send_initial_events = params.flag("sendInitialEvents");
    let from = match params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        Some(v) => Some(parse_resource_version(v)?),
        None => None,
    };
    let mut watch = WatchStream {
        store: shared.clone(),
        resource,
        filter,
        signals: None,
        pending: VecDeque::new(),
        revision: store.revision,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        bookmarks: None,
        finished: false,
    };
    match from {
        // Like the watch cache: 200, then one ERROR event, then the end.
        Some(from) if from < store.compacted && !send_initial_events => {
            watch
                .pending
                .push_back(error_line(&ApiError::too_old(from, store.compacted)));
            watch.finished = true;
        }
        Some(from) if !send_initial_events => {
            for change in store.collection(resource).log.iter() {
                if change.revision > from {
                    watch.push_change(change);
                }
            }
            watch.revision = store.revision.max(from);
        }
        // No resourceVersion, "0" or a streaming list: the current state as ADDED events first.
        _ => {
            for object in store.collection(resource).objects.values() {
                if watch.filter.matches(object) {
                    watch.pending.push_back(event_line("ADDED", object));
                }
            }
            if send_initial_events {
                watch
                    .pending
                    .push_back(bookmark_line(spec, store.revision, true));
                store.count(resource).bookmarks += 1;
            }
        }
    }
    if !watch.finished {
        let (signals, receiver) = mpsc::unbounded_channel();
        store.watches.push(OpenWatch { resource, signals });
        watch.signals = Some(receiver);
        if bookmarks {
            let period = store.bookmark_interval;
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            watch.bookmarks = Some(interval);
        }
    }
    let body = futures::stream::unfold(watch, |mut watch| async move {
        let line = watch.next_line().await?;
        Some((Ok::<_, Infallible>(line), watch))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .expect("a static response builds"))
}

/// One open watch's response body. Dropped when the client goes away or the server stops, which
/// closes its channel, and the store forgets it on the next change.
struct WatchStream {
    store: Arc<Mutex<Store>>,
    resource: Resource,
    filter: Filter,
    signals: Option<mpsc::UnboundedReceiver<WatchSignal>>,
    /// Lines ready to send: the replay, then whatever one wake-up produced.
    pending: VecDeque<Bytes>,
    /// The revision this client has been told everything up to.
    revision: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bookmarks: Option<tokio::time::Interval>,
    finished: bool,
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.finished {
                return None;
            }
            let signals = self.signals.as_mut()?;
            tokio::select! {
                () = &mut self.deadline => self.finished = true,
                signal = signals.recv() => self.handle(signal),
                () = tick(&mut self.bookmarks) => self.bookmark(),
            }
        }
    }

    fn handle(&mut self, signal: Option<WatchSignal>) {
        match signal {
            Some(WatchSignal::Change(change)) => self.push_change(&change),
            Some(WatchSignal::Expire { oldest }) => {
                let error = ApiError::too_old(self.revision, oldest);
                self.pending.push_back(error_line(&error));
                self.finished = true;
            }
            Some(WatchSignal::Close) | None => self.finished = true,
        }
    }

    /// Queues `change` as this watch sees it: a modification that moves an object into or out of
    /// the selection is an ADDED, or a DELETED of its previous content at the new revision, as in
    /// the apiserver's watch cache.
    fn push_change(&mut self, change: &Change) {
        self.revision = self.revision.max(change.revision);
        let now = self.filter.matches(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.filter.matches(p));
        let line = match (change.change_type, before, now) {
            (ChangeType::Added, _, true) => event_line("ADDED", &change.object),
            (ChangeType::Deleted, _, true) => event_line("DELETED", &change.object),
            (ChangeType::Modified, true, true) => event_line("MODIFIED", &change.object),
            (ChangeType::Modified, false, true) => event_line("ADDED", &change.object),
            (ChangeType::Modified, true, false) => {
                let mut left = change.previous.clone().expect("it matched before");
                left["metadata"]["resourceVersion"] = change.revision.to_string().into();
                event_line("DELETED", &left)
            }
            _ => return,
        };
        self.pending.push_back(line);
    }

    /// A bookmark at the store's revision, sent only after every change up to it: changes are
    /// queued under the store lock, so once we have read the revision they are all in the channel.
    fn bookmark(&mut self) {
        let revision = lock(&self.store).revision;
        if let Some(signals) = self.signals.as_mut() {
            let mut queued = Vec::new();
            while let Ok(signal) = signals.try_recv() {
                queued.push(signal);
            }
            for signal in queued {
                self.handle(Some(signal));
                if self.finished {
                    return;
                }
            }
        }
        self.revision = self.revision.max(revision);
        self.pending
            .push_back(bookmark_line(self.resource.spec(), self.revision, false));
        lock(&self.store).count(self.resource).bookmarks += 1;
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("JSON values serialize");
    line.push(b'\n');
    line.into()
}

fn bookmark_line(spec: ResourceSpec, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": spec.kind, "apiVersion": spec.api_version(), "metadata": metadata});
    event_line("BOOKMARK", &object)
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.status())
}
