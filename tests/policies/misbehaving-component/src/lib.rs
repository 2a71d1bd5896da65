//! Misbehaves on `validate` as `{"behaviour": ...}` in its settings asks: `accept`,
//! `loop`, `trap`, `grab_memory`, or `echo:namespaces` (rejects with the exact text that
//! `list-namespaces` returned, or its error), or `list_namespaces` (calls it `times`
//! times and accepts: the benchmarks' measure of one call).

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
            "grab_memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "echo:namespaces" => {
                let message = match cluster_context::list_namespaces() {
                    Ok(list) => list,
                    Err(e) => format!("{e:?}"),
                };
                Verdict {
                    accepted: false,
                    message: Some(message),
                    ..accept()
                }
            }
            "list_namespaces" => {
                for _ in 0..settings.times {
                    let list = cluster_context::list_namespaces().expect("namespaces");
                    black_box(list);
                }
                accept()
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
