//! The collections the server serves ([`Resource`]) and the store: objects, their history since
//! the last compaction (to list at an older revision and to replay watches), the open watches,
//! counters, injected failures and the request log.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use super::http::ApiError;
use super::server::ApiRequest;
use super::watch::{OpenWatch, WatchSignal};

/// Declares [`Resource`] and its table row in one line per collection.
macro_rules! resources {
    ($($variant:ident => $prefix:literal, $plural:literal, $kind:literal, $scope:ident;)*) => {
        /// A collection the server serves; `apply`, `delete` and the counters take one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Resource {
            $(#[doc = concat!("`", $prefix, "/", $plural, "` (", $kind, ")")] $variant,)*
        }

        impl Resource {
            /// Every served collection.
            pub const ALL: &[Resource] = &[$(Resource::$variant),*];

            pub(super) fn spec(self) -> ResourceSpec {
                match self {
                    $(Resource::$variant => ResourceSpec {
                        prefix: $prefix,
                        plural: $plural,
                        kind: $kind,
                        scope: Scope::$scope,
                    },)*
                }
            }
        }
    };
}

resources! {
    // variant        group/version path             plural            kind             scope
    Pods =>           "/api/v1",                    "pods",           "Pod",           Namespaced;
    Nodes =>          "/api/v1",                    "nodes",          "Node",          Cluster;
    Services =>       "/api/v1",                    "services",       "Service",       Namespaced;
    EndpointSlices => "/apis/discovery.k8s.io/v1",  "endpointslices", "EndpointSlice", Namespaced;
    ReplicaSets =>    "/apis/apps/v1",              "replicasets",    "ReplicaSet",    Namespaced;
    Jobs =>           "/apis/batch/v1",             "jobs",           "Job",           Namespaced;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
}

/// What the server needs to know about a collection: its URL and the type names it writes.
#[derive(Clone, Copy)]
pub(super) struct ResourceSpec {
    pub(super) prefix: &'static str,
    pub(super) plural: &'static str,
    pub(super) kind: &'static str,
    scope: Scope,
}

impl ResourceSpec {
    /// `v1` for the core group, `apps/v1` for the others.
    pub(super) fn api_version(&self) -> &'static str {
        self.prefix
            .strip_prefix("/apis/")
            .or_else(|| self.prefix.strip_prefix("/api/"))
            .unwrap_or(self.prefix)
    }

    pub(super) fn group(&self) -> &'static str {
        self.api_version()
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    pub(super) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub(super) fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
}

/// How often a new watch gets a BOOKMARK unless a test sets another interval.
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// (namespace, name), the namespace `""` for cluster-scoped objects. Ordered like etcd keys, so
/// lists come back in a real cluster's order and a continue token can be a key.
pub(super) type ObjectKey = (String, String);

pub(super) fn object_key(spec: ResourceSpec, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if spec.namespaced() { namespace } else { "" };
    (namespace.to_owned(), name.to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One revision of a collection, like an etcd event.
pub(super) struct Change {
    pub(super) revision: u64,
    pub(super) change_type: ChangeType,
    /// The object after the change; after a deletion, its last state with the new revision.
    pub(super) object: Value,
    /// The object before the change: to undo it when listing at an older revision, and to tell a
    /// watch with a selector that an object entered or left its selection.
    pub(super) previous: Option<Value>,
}

#[derive(Default)]
pub(super) struct Collection {
    pub(super) objects: BTreeMap<ObjectKey, Value>,
    /// Changes since the last compaction, oldest first.
    pub(super) log: Vec<Arc<Change>>,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) lists: usize,
    pub(super) watches: usize,
    pub(super) bookmarks: usize,
}

pub(super) struct Store {
    /// The last resourceVersion handed out; 1 when empty, so that no list ever reports "0",
    /// which means "any version" in a request.
    pub(super) revision: u64,
    /// The revision of the last compaction: history at or after it is complete.
    pub(super) compacted: u64,
    next_uid: u64,
    pub(super) collections: HashMap<Resource, Collection>,
    pub(super) watches: Vec<OpenWatch>,
    counters: HashMap<Resource, Counters>,
    pub(super) requests: Vec<ApiRequest>,
    /// Injected failures: (HTTP status, requests left to fail).
    pub(super) failures: HashMap<Resource, (u16, usize)>,
    pub(super) max_page_size: usize,
    pub(super) bookmark_interval: Duration,
}

impl Store {
    pub(super) fn new() -> Self {
        Self {
            revision: 1,
            compacted: 1,
            next_uid: 1,
            collections: Resource::ALL
                .iter()
                .map(|&r| (r, Collection::default()))
                .collect(),
            watches: Vec::new(),
            counters: HashMap::new(),
            requests: Vec::new(),
            failures: HashMap::new(),
            max_page_size: 0,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
        }
    }

    pub(super) fn collection(&self, resource: Resource) -> &Collection {
        &self.collections[&resource]
    }

    fn collection_mut(&mut self, resource: Resource) -> &mut Collection {
        self.collections
            .get_mut(&resource)
            .expect("every resource has a collection")
    }

    pub(super) fn counters(&self, resource: Resource) -> Counters {
        self.counters.get(&resource).copied().unwrap_or_default()
    }

    pub(super) fn count(&mut self, resource: Resource) -> &mut Counters {
        self.counters.entry(resource).or_default()
    }

    pub(super) fn apply(&mut self, resource: Resource, mut object: Value) -> Value {
        let spec = resource.spec();
        let fields = object
            .as_object_mut()
            .unwrap_or_else(|| panic!("a {} must be a JSON object", spec.kind));
        fields.insert("kind".into(), spec.kind.into());
        fields.insert("apiVersion".into(), spec.api_version().into());
        let meta = fields
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap_or_else(|| panic!("a {}'s metadata must be a JSON object", spec.kind));
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("a {} needs metadata.name", spec.kind))
            .to_owned();
        let namespace = if spec.namespaced() {
            let namespace = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            meta.insert("namespace".into(), namespace.clone().into());
            namespace
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace, name);
        let previous = self.collection(resource).objects.get(&key).cloned();
        let previous_meta = previous.as_ref().map(|p| &p["metadata"]);
        // Identity and age survive updates, as on a real server.
        for field in ["uid", "creationTimestamp"] {
            if let Some(kept) = previous_meta.and_then(|m| m.get(field)) {
                meta.insert(field.into(), kept.clone());
            } else if !meta.get(field).is_some_and(Value::is_string) {
                let value = match field {
                    "uid" => {
                        self.next_uid += 1;
                        format!("00000000-0000-4000-8000-{:012x}", self.next_uid - 1)
                    }
                    _ => now_rfc3339(),
                };
                meta.insert(field.into(), value.into());
            }
        }
        if let Some(previous) = &previous {
            meta.insert(
                "resourceVersion".into(),
                previous["metadata"]["resourceVersion"].clone(),
            );
            if object == *previous {
                return object;
            }
        }
        self.revision += 1;
        object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        let change_type = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.collection_mut(resource)
            .objects
            .insert(key, object.clone());
        self.record(
            resource,
            Change {
                revision: self.revision,
                change_type,
                object: object.clone(),
                previous,
            },
        );
        object
    }

    pub(super) fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let key = object_key(resource.spec(), namespace, name);
        let previous = self.collection_mut(resource).objects.remove(&key)?;
        self.revision += 1;
        let mut object = previous.clone();
        object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        self.record(
            resource,
            Change {
                revision: self.revision,
                change_type: ChangeType::Deleted,
                object: object.clone(),
                previous: Some(previous),
            },
        );
        Some(object)
    }

    fn record(&mut self, resource: Resource, change: Change) {
        let change = Arc::new(change);
        self.collection_mut(resource).log.push(change.clone());
        self.watches.retain(|watch| {
            watch.resource != resource
                || watch
                    .signals
                    .send(WatchSignal::Change(change.clone()))
                    .is_ok()
        });
    }

    /// The collection as it was at `revision`, rebuilt by undoing later changes; `None` if that
    /// history was compacted away.
    pub(super) fn objects_at(
        &self,
        resource: Resource,
        revision: u64,
    ) -> Option<Cow<'_, BTreeMap<ObjectKey, Value>>> {
        let collection = self.collection(resource);
        if revision >= self.revision {
            return Some(Cow::Borrowed(&collection.objects));
        }
        if revision < self.compacted {
            return None;
        }
        let mut objects = collection.objects.clone();
        for change in collection.log.iter().rev() {
            if change.revision <= revision {
                break;
            }
            let key = key_of(&change.object);
            match &change.previous {
                Some(previous) => objects.insert(key, previous.clone()),
                None => objects.remove(&key),
            };
        }
        Some(Cow::Owned(objects))
    }

    /// Takes one injected failure for a request to `resource`, if one is pending.
    pub(super) fn injected_failure(&mut self, resource: Resource) -> Option<ApiError> {
        let (status, left) = self.failures.get_mut(&resource)?;
        let status = *status;
        *left -= 1;
        if *left == 0 {
            self.failures.remove(&resource);
        }
        Some(ApiError::new(
            status,
            format!("injected failure for {}", resource.spec().plural),
        ))
    }
}

pub(super) fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A test that panicked while holding the lock must not hide its own failure behind ours.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key_of(object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    let field = |name: &str| meta[name].as_str().unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

/// Now, at whole seconds, as Kubernetes writes timestamps.
fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_derives_api_version_and_group() {
        let spec = Resource::EndpointSlices.spec();
        assert_eq!(spec.api_version(), "discovery.k8s.io/v1");
        assert_eq!(spec.group(), "discovery.k8s.io");
        assert_eq!(Resource::Pods.spec().api_version(), "v1");
        assert_eq!(Resource::Pods.spec().group(), "");
        assert_eq!(Resource::Jobs.spec().list_kind(), "JobList");
    }

    #[test]
    fn listing_at_an_old_revision_undoes_later_changes() {
        let mut store = Store::new();
        store.apply(Resource::Pods, json!({"metadata": {"name": "a"}}));
        let at = store.revision;
        store.apply(
            Resource::Pods,
            json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
        );
        store.apply(Resource::Pods, json!({"metadata": {"name": "b"}}));
        store.delete(Resource::Pods, "default", "a");
        let old = store.objects_at(Resource::Pods, at).unwrap();
        assert_eq!(
            old.keys().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            old.values().next().unwrap()["metadata"]["resourceVersion"],
            "2"
        );
        assert!(old.values().next().unwrap().get("spec").is_none());
        store.compacted = store.revision;
        assert!(store.objects_at(Resource::Pods, at).is_none());
    }

    #[test]
    fn applying_an_identical_object_changes_nothing() {
        let mut store = Store::new();
        let first = store.apply(
            Resource::Nodes,
            json!({"metadata": {"name": "n", "namespace": "x"}}),
        );
        assert!(first["metadata"].get("namespace").is_none());
        let again = store.apply(Resource::Nodes, json!({"metadata": {"name": "n"}}));
        assert_eq!(again, first);
        assert_eq!(store.revision, 2);
    }
}
