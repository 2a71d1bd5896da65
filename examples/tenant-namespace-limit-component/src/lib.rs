//! The component twin of `tenant-namespace-limit`: at most `max_namespaces` Namespaces
//! per `tenant` label, counted with `cluster-context@0.2.0`'s `list` and a label
//! selector. Settings: `{"max_namespaces": 3}`.

use serde::Deserialize;
use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
});

use policy_server::policy::cluster_context::{self, ListQuery, ResourceKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    max_namespaces: usize,
}

struct Policy;

impl Guest for Policy {
    fn validate(request: String, settings: String) -> Verdict {
        match judge(&request, &settings) {
            Ok(None) => accept(),
            Ok(Some(message)) => reject(message, 403),
            Err(error) => reject(error, 500),
        }
    }

    fn validate_settings(settings: String) -> SettingsVerdict {
        let message = match serde_json::from_str::<Settings>(&settings) {
            Ok(settings) if settings.max_namespaces == 0 => {
                Some("max_namespaces must be at least 1".to_owned())
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        SettingsVerdict {
            valid: message.is_none(),
            message,
        }
    }
}

/// `None` to accept, `Some(reason)` to reject.
fn judge(request: &str, settings: &str) -> Result<Option<String>, String> {
    let settings: Settings = serde_json::from_str(settings).map_err(|e| e.to_string())?;
    let request: Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
    if request["kind"]["kind"] != "Namespace" {
        return Ok(None);
    }
    let metadata = &request["object"]["metadata"];
    let Some(tenant) = metadata["labels"]["tenant"].as_str() else {
        return Ok(None);
    };
    let name = metadata["name"].as_str().unwrap_or_default();
    let kind = ResourceKind {
        api_version: "v1".into(),
        kind: "Namespace".into(),
    };
    let query = ListQuery {
        namespace: None,
        label_selector: Some(format!("tenant={tenant}")),
        field_selector: Some(format!("metadata.name!={name}")),
    };
    let list = cluster_context::list(&kind, &query).map_err(|e| format!("{e:?}"))?;
    let list: Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
    let count = list["items"].as_array().map_or(0, Vec::len);
    let max = settings.max_namespaces;
    Ok((count >= max)
        .then(|| format!("tenant {tenant} already has {count} namespaces (at most {max})")))
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
