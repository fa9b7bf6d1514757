//! Which objects a request sees: its namespace and its label and field selectors, with
//! Kubernetes' semantics.

use serde_json::Value;

use super::http::{ApiError, Params};

/// Which objects a request sees: its namespace and its label and field selectors.
pub(super) struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// `path=value` or `path!=value`, the path dotted into the object (`spec.nodeName`). The
/// apiserver accepts only a few paths per resource; we accept any.
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

impl Filter {
    pub(super) fn new(namespace: Option<String>, params: &Params) -> Result<Self, ApiError> {
        let labels = split_requirements(params.get("labelSelector").unwrap_or_default())
            .map(parse_label_requirement)
            .collect::<Result<_, _>>()?;
        let fields = split_requirements(params.get("fieldSelector").unwrap_or_default())
            .map(parse_field_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace,
            labels,
            fields,
        })
    }

    pub(super) fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        if let Some(namespace) = &self.namespace
            && meta["namespace"].as_str() != Some(namespace)
        {
            return false;
        }
        let label = |key: &str| meta["labels"][key].as_str();
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|requirement| {
                let pointer = format!("/{}", requirement.path.replace('.', "/"));
                let value = match object.pointer(&pointer) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                (value == requirement.value) == requirement.equal
            })
    }
}

/// Splits a selector at the commas outside `( )`.
fn split_requirements(selector: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn parse_label_requirement(term: &str) -> Result<LabelRequirement, ApiError> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: {term:?}"));
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(invalid())
        } else {
            Ok(k.to_owned())
        }
    };
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').filter(|&c| c > open).ok_or_else(invalid)?;
        let values = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_owned())
            .collect();
        let mut head = term[..open].split_whitespace();
        let (Some(k), Some(operator), None) = (head.next(), head.next(), head.next()) else {
            return Err(invalid());
        };
        return match operator {
            "in" => Ok(LabelRequirement::In(key(k)?, values)),
            "notin" => Ok(LabelRequirement::NotIn(key(k)?, values)),
            _ => Err(invalid()),
        };
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelRequirement::Equals(key(k)?, v.trim().to_owned()));
    }
    Ok(LabelRequirement::Exists(key(term)?))
}

fn parse_field_requirement(term: &str) -> Result<FieldRequirement, ApiError> {
    let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
        (p, v, false)
    } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        (p, v, true)
    } else {
        return Err(ApiError::bad_request(format!(
            "invalid field selector: {term:?}"
        )));
    };
    Ok(FieldRequirement {
        path: path.trim().to_owned(),
        value: value.trim().to_owned(),
        equal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let pod = json!({"metadata": {"namespace": "a", "labels": {"app": "web", "tier": "fe"}}});
        let matches = |selector: &str| {
            let params = Params::parse(&format!("labelSelector={selector}"));
            Filter::new(None, &params).unwrap().matches(&pod)
        };
        assert!(matches("app%3Dweb"));
        assert!(matches("app==web,tier"));
        assert!(!matches("app!=web"));
        assert!(matches("missing!=x"));
        assert!(matches("app in (api, web),!missing"));
        assert!(!matches("app notin (web)"));
        assert!(matches("missing notin (web)"));
        assert!(!matches("missing"));
        let params = Params::parse("labelSelector=app+in+web");
        assert!(Filter::new(None, &params).is_err());
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let matches = |selector: &str| {
            let params = Params::parse(&format!("fieldSelector={selector}"));
            Filter::new(None, &params).unwrap().matches(&pod)
        };
        assert!(matches("spec.nodeName%3Dn1,metadata.name%3D%3Dp"));
        assert!(!matches("spec.nodeName!%3Dn1"));
        assert!(matches("status.phase%3D"));
    }
}
