//! Misbehaves on `validate` as `{"behaviour": ...}` in its settings asks: `accept`,
//! `loop`, `trap`, `grab_memory`; `echo:namespaces` (rejects with the exact text that
//! listing namespaces returned, or its error); `list_namespaces` (lists them `times`
//! times and accepts: the benchmarks' measure of one call); `list`, `get`, `can_i`
//! (makes that `cluster-context@0.2.0` call with the settings' arguments and rejects with
//! the answer's exact text, or `<error case>: <message>`; `list` and `get` with `times`
//! make the call that often and accept); `stderr_flood` (writes 2,000 lines of about 65
//! bytes to stderr, each with an escape sequence, and accepts).

use std::hint::black_box;

use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "policy",
});

use policy_server::policy::cluster_context;

#[derive(Deserialize)]
struct Settings {
    behaviour: String,
    #[serde(default)]
    times: u32,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    user: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    resource: String,
}

impl Settings {
    fn kind(&self) -> cluster_context::ResourceKind {
        cluster_context::ResourceKind {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
        }
    }
}

fn namespaces() -> Result<String, cluster_context::Error> {
    let kind = cluster_context::ResourceKind {
        api_version: "v1".into(),
        kind: "Namespace".into(),
    };
    let all = cluster_context::ListQuery {
        namespace: None,
        label_selector: None,
        field_selector: None,
    };
    cluster_context::list(&kind, &all)
}

fn error_text(error: cluster_context::Error) -> String {
    use cluster_context::Error;
    match error {
        Error::NotAllowed(m) => format!("not-allowed: {m}"),
        Error::NotFound(m) => format!("not-found: {m}"),
        Error::Unavailable(m) => format!("unavailable: {m}"),
        Error::Invalid(m) => format!("invalid: {m}"),
    }
}

/// With `times`, makes the call that often and accepts (the benchmarks' measure of one
/// call); without, makes it once and rejects with its answer.
fn repeat_or_reject(
    times: u32,
    call: impl Fn() -> Result<String, cluster_context::Error>,
) -> Verdict {
    if times == 0 {
        return reject(call().unwrap_or_else(error_text));
    }
    for _ in 0..times {
        black_box(call().expect("the call succeeds"));
    }
    accept()
}

fn reject(message: String) -> Verdict {
    Verdict {
        accepted: false,
        message: Some(message),
        ..accept()
    }
}

struct Policy;

impl Guest for Policy {
    fn validate(_request: String, settings: String) -> Verdict {
        let settings: Settings = serde_json::from_str(&settings).expect("settings");
        match settings.behaviour.as_str() {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "trap" => core::arch::wasm32::unreachable(),
            "stderr_flood" => {
                for i in 0..2_000 {
                    eprintln!("stderr line {i} \u{1b}[31mred, padded to about sixty-five bytes");
                }
                accept()
            }
            "grab_memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "echo:namespaces" => reject(namespaces().unwrap_or_else(error_text)),
            "list_namespaces" => {
                for _ in 0..settings.times {
                    black_box(namespaces().expect("namespaces"));
                }
                accept()
            }
            "list" => {
                let query = cluster_context::ListQuery {
                    namespace: settings.namespace.clone(),
                    label_selector: settings.label_selector.clone(),
                    field_selector: settings.field_selector.clone(),
                };
                let call = || cluster_context::list(&settings.kind(), &query);
                repeat_or_reject(settings.times, call)
            }
            "get" => {
                let call = || {
                    cluster_context::get(
                        &settings.kind(),
                        settings.namespace.as_deref(),
                        &settings.name,
                    )
                };
                repeat_or_reject(settings.times, call)
            }
            "can_i" => {
                let review = cluster_context::AccessReview {
                    user: settings.user.clone(),
                    groups: Vec::new(),
                    resource_attributes: cluster_context::ResourceAttributes {
                        namespace: settings.namespace.clone(),
                        verb: settings.verb.clone(),
                        group: None,
                        version: None,
                        resource: settings.resource.clone(),
                        subresource: None,
                        name: None,
                    },
                };
                reject(match cluster_context::can_i(&review) {
                    Ok(decision) => {
                        format!("allowed={} denied={}", decision.allowed, decision.denied)
                    }
                    Err(e) => error_text(e),
                })
            }
            _ => accept(),
        }
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

export!(Policy);
