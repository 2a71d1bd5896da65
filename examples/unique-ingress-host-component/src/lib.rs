//! Rejects an Ingress that claims a host another Ingress in the cluster already serves:
//! the component twin of `unique-ingress-host`, reading Ingresses through the typed
//! `cluster-context` import. Settings: none.

use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "policy",
});

use policy_server::policy::cluster_context;

struct Policy;

fn hosts(ingress: &Value) -> Vec<&str> {
    ingress["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| rule["host"].as_str())
        .collect()
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

impl Guest for Policy {
    fn validate(request: String, _settings: String) -> Verdict {
        let Ok(request) = serde_json::from_str::<Value>(&request) else {
            return reject("malformed request".into(), None);
        };
        let ingress = &request["object"];
        let wanted = hosts(ingress);
        if wanted.is_empty() {
            return accept();
        }
        let list = match cluster_context::list_ingresses() {
            Ok(list) => list,
            Err(e) => return reject(format!("failed to call ingresses binding: {e:?}"), None),
        };
        let Ok(list) = serde_json::from_str::<Value>(&list) else {
            return reject("failed to unmarshal ingress list".into(), None);
        };
        let me = (text(ingress, "namespace"), text(ingress, "name"));
        for other in list["items"].as_array().into_iter().flatten() {
            let (namespace, name) = (text(other, "namespace"), text(other, "name"));
            if (namespace, name) == me {
                continue; // an update of this very Ingress
            }
            if let Some(host) = hosts(other).into_iter().find(|h| wanted.contains(h)) {
                return reject(
                    format!("host {host} is already served by ingress {namespace}/{name}"),
                    Some(409),
                );
            }
        }
        accept()
    }

    fn validate_settings(_settings: String) -> SettingsVerdict {
        SettingsVerdict {
            valid: true,
            message: None,
        }
    }
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

fn reject(message: String, code: Option<u16>) -> Verdict {
    Verdict {
        accepted: false,
        message: Some(message),
        code,
        ..accept()
    }
}

export!(Policy);
