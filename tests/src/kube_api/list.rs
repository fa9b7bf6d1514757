//! LIST: pages of a consistent snapshot, continued by key.

use std::ops::Bound;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::http::{ApiError, Params, json_response};
use super::objects::{ObjectKey, Resource, Store};
use super::selectors::Filter;

/// Answers a LIST: one page of the objects `filter` selects, at the revision asked for (or the
/// newest), with a continue token if more remain.
pub(super) fn list(
    store: &Store,
    resource: Resource,
    filter: &Filter,
    params: &Params,
) -> Result<Response, ApiError> {
    let spec = resource.spec();
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        None => 0,
    };
    let page_size = [limit, store.max_page_size]
        .into_iter()
        .filter(|&n| n > 0)
        .min();
    let (revision, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if params.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (revision, key) = ContinueToken::parse(token)?;
            (revision, Some(key))
        }
        None => (list_revision(store, params)?, None),
    };
    let objects = store.objects_at(resource, revision).ok_or_else(|| {
        if after.is_some() {
            ApiError::new(
                410,
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .into(),
            )
        } else {
            ApiError::too_old(revision, store.compacted)
        }
    })?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut matching = objects
        .range((start, Bound::Unbounded))
        .filter(|(_, object)| filter.matches(object));
    let items: Vec<(&ObjectKey, &Value)> = match page_size {
        Some(n) => matching.by_ref().take(n).collect(),
        None => matching.by_ref().collect(),
    };
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if remaining > 0 {
        let (last, _) = items.last().expect("a truncated page has items");
        metadata["continue"] = ContinueToken::format(revision, last).into();
        if !filter.has_selectors() {
            // Like the apiserver: only exact without selectors.
            metadata["remainingItemCount"] = remaining.into();
        }
    }
    let body = json!({
        "kind": spec.list_kind(),
        "apiVersion": spec.api_version(),
        "metadata": metadata,
        "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The revision a LIST without `continue` reads at.
fn list_revision(store: &Store, params: &Params) -> Result<u64, ApiError> {
    let Some(requested) = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    else {
        return Ok(store.revision);
    };
    let requested = parse_resource_version(requested)?;
    if requested > store.revision {
        return Err(ApiError::new(
            504,
            format!(
                "Too large resource version: {requested}, current: {}",
                store.revision
            ),
        )
        .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge",
            "message": "Too large resource version"}], "retryAfterSeconds": 1})));
    }
    match params.get("resourceVersionMatch") {
        Some("Exact") => Ok(requested),
        _ => Ok(store.revision),
    }
}

pub(super) fn parse_resource_version(value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {value:?}: must be a non-negative integer"
        ))
    })
}

/// `<revision>/<namespace>/<name>`: the snapshot and the last key served. Opaque to clients, like
/// the apiserver's base64 token, but readable in a request log.
struct ContinueToken;

impl ContinueToken {
    fn format(revision: u64, (namespace, name): &ObjectKey) -> String {
        format!("{revision}/{namespace}/{name}")
    }

    fn parse(token: &str) -> Result<(u64, ObjectKey), ApiError> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
        let mut parts = token.splitn(3, '/');
        let revision = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(invalid)?;
        let namespace = parts.next().ok_or_else(invalid)?;
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(invalid)?;
        Ok((revision, (namespace.to_owned(), name.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_token_round_trips() {
        let key = ("default".to_owned(), "p-1".to_owned());
        let token = ContinueToken::format(7, &key);
        assert_eq!(ContinueToken::parse(&token).unwrap(), (7, key));
        assert!(ContinueToken::parse("x/y").is_err());
    }
}
