//! Adds default labels to objects that lack them, and says so in a warning: the component
//! twin of `default-labels`. Settings: `{"labels": {"key": "value", ...}}` (at least one).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
});

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

struct Policy;

impl Guest for Policy {
    fn validate(request: String, settings: String) -> Verdict {
        let (Ok(request), Ok(settings)) = (
            serde_json::from_str::<Value>(&request),
            serde_json::from_str::<Settings>(&settings),
        ) else {
            return Verdict {
                accepted: false,
                message: Some("malformed input".into()),
                ..accept()
            };
        };
        let mut object = request["object"].clone();
        // DELETE requests carry no object: nothing to label.
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return accept();
        };
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(labels) = labels.as_object_mut() else {
            return accept();
        };
        let mut added = Vec::new();
        for (key, value) in &settings.labels {
            if !labels.contains_key(key) {
                labels.insert(key.clone(), Value::String(value.clone()));
                added.push(format!("added label {key}={value}"));
            }
        }
        if added.is_empty() {
            return accept();
        }
        Verdict {
            mutated_object: Some(object.to_string()),
            warnings: added,
            ..accept()
        }
    }

    fn validate_settings(settings: String) -> SettingsVerdict {
        let verdict = match serde_json::from_str::<Settings>(&settings) {
            Err(e) => Err(e.to_string()),
            Ok(s) if s.labels.is_empty() => Err("labels must contain at least one label".into()),
            Ok(s) if s.labels.keys().any(String::is_empty) => {
                Err("label names must not be empty".into())
            }
            Ok(_) => Ok(()),
        };
        SettingsVerdict {
            valid: verdict.is_ok(),
            message: verdict.err(),
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

export!(Policy);
