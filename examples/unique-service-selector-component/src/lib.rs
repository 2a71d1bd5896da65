//! The component twin of `unique-service-selector`: rejects a Service whose selector
//! equals another Service's in its namespace, reading them with `cluster-context@0.2.0`'s
//! `list` of one namespace. Settings: none.

use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
});

use policy_server::policy::cluster_context::{self, ListQuery, ResourceKind};

struct Policy;

impl Guest for Policy {
    fn validate(request: String, _settings: String) -> Verdict {
        match judge(&request) {
            Ok(None) => accept(),
            Ok(Some(message)) => reject(message, 409),
            Err(error) => reject(error, 500),
        }
    }

    fn validate_settings(settings: String) -> SettingsVerdict {
        let valid = matches!(serde_json::from_str::<Value>(&settings), Ok(Value::Object(map)) if map.is_empty());
        SettingsVerdict {
            valid,
            message: (!valid).then(|| "this policy takes no settings".to_owned()),
        }
    }
}

fn selector(service: &Value) -> Option<&serde_json::Map<String, Value>> {
    service["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
}

/// `None` to accept, `Some(reason)` to reject.
fn judge(request: &str) -> Result<Option<String>, String> {
    let request: Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
    if request["kind"]["kind"] != "Service" {
        return Ok(None);
    }
    let service = &request["object"];
    let Some(wanted) = selector(service) else {
        return Ok(None);
    };
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .or(request["namespace"].as_str())
        .unwrap_or_default();
    let kind = ResourceKind {
        api_version: "v1".into(),
        kind: "Service".into(),
    };
    let query = ListQuery {
        namespace: Some(namespace.to_owned()),
        label_selector: None,
        field_selector: None,
    };
    let list = cluster_context::list(&kind, &query).map_err(|e| format!("{e:?}"))?;
    let list: Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
    let taken = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|other| other["metadata"]["name"] != name && selector(other) == Some(wanted));
    Ok(taken.map(|other| {
        format!(
            "service {namespace}/{} already selects the same pods",
            other["metadata"]["name"].as_str().unwrap_or_default()
        )
    }))
}

fn accept() -> Verdict {
    Verdict {
        accepted: true,
        message: None,
        code: None,
        mutated_object: None,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
    }
}

fn reject(message: String, code: u16) -> Verdict {
    Verdict {
        accepted: false,
        message: Some(message),
        code: Some(code),
        ..accept()
    }
}

export!(Policy);
