//! A Service may only be created in a namespace that carries the label named in the
//! settings: the component twin of `service-namespace-label`, with the same verdicts.
//! Reads the one namespace it needs with `cluster-context@0.2.0`'s `get`, where its twin
//! lists them all. Settings: `{"namespace_label": "services-allowed"}`.

use serde::Deserialize;
use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
});

use policy_server::policy::cluster_context;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    namespace_label: String,
}

struct Policy;

impl Guest for Policy {
    fn validate(request: String, settings: String) -> Verdict {
        match judge(&request, &settings) {
            Ok(None) => accept(),
            Ok(Some(message)) => reject(message),
            Err(error) => reject(error),
        }
    }

    fn validate_settings(settings: String) -> SettingsVerdict {
        match serde_json::from_str::<Settings>(&settings) {
            Ok(settings) if settings.namespace_label.is_empty() => SettingsVerdict {
                valid: false,
                message: Some("namespace_label must not be empty".to_owned()),
            },
            Ok(_) => SettingsVerdict {
                valid: true,
                message: None,
            },
            Err(e) => SettingsVerdict {
                valid: false,
                message: Some(e.to_string()),
            },
        }
    }
}

/// `None` to accept, `Some(reason)` to reject.
fn judge(request: &str, settings: &str) -> Result<Option<String>, String> {
    let settings: Settings = serde_json::from_str(settings).map_err(|e| e.to_string())?;
    let request: Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
    if request["kind"]["kind"] != "Service" {
        return Ok(None);
    }
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let kind = cluster_context::ResourceKind {
        api_version: "v1".into(),
        kind: "Namespace".into(),
    };
    let found = match cluster_context::get(&kind, None, namespace) {
        Ok(json) => Some(serde_json::from_str::<Value>(&json).map_err(|e| e.to_string())?),
        Err(cluster_context::Error::NotFound(_)) => None,
        Err(
            cluster_context::Error::NotAllowed(m)
            | cluster_context::Error::Unavailable(m)
            | cluster_context::Error::Invalid(m),
        ) => return Err(format!("cannot read the cluster's namespaces: {m}")),
    };
    Ok(match found {
        None => Some(format!("namespace {namespace} does not exist")),
        Some(ns)
            if ns["metadata"]["labels"]
                .get(&settings.namespace_label)
                .is_some() =>
        {
            None
        }
        Some(_) => Some(format!(
            "Services may only be created in namespaces labelled {}; {namespace} is not",
            settings.namespace_label
        )),
    })
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

fn reject(message: String) -> Verdict {
    Verdict {
        accepted: false,
        message: Some(message),
        code: Some(403),
        ..accept()
    }
}

export!(Policy);
