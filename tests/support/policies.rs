//! policies.yml from typed values: a test says what it means (`.monitor()`,
//! `.reads(NAMESPACE)`), and the file is serialized, never indented by hand.

use std::path::Path;

use serde_json::{Map, Value, json};

/// A kind a policy may read, as `contextAwareResources` names it: `(apiVersion, kind)`.
pub type Grant = (&'static str, &'static str);

pub const NAMESPACE: Grant = ("v1", "Namespace");
pub const SERVICE: Grant = ("v1", "Service");
pub const INGRESS: Grant = ("networking.k8s.io/v1", "Ingress");

/// One entry of policies.yml.
#[derive(Debug, Clone)]
pub struct Policy(Map<String, Value>);

impl Policy {
    pub fn new(module: impl AsRef<Path>) -> Self {
        let mut entry = Map::new();
        entry.insert("module".into(), json!(module.as_ref()));
        Self(entry)
    }

    pub fn settings(self, settings: Value) -> Self {
        self.field("settings", settings)
    }

    /// `policyMode: monitor`: the verdict is logged, the request allowed.
    pub fn monitor(self) -> Self {
        self.field("policyMode", json!("monitor"))
    }

    pub fn allowed_to_mutate(self, allowed: bool) -> Self {
        self.field("allowedToMutate", json!(allowed))
    }

    /// `message`: replaces the policy's own rejection message.
    pub fn message(self, message: &str) -> Self {
        self.field("message", json!(message))
    }

    pub fn timeout_seconds(self, seconds: u64) -> Self {
        self.field("timeoutEvalSeconds", json!(seconds))
    }

    /// Grants reading `(apiVersion, kind)` from the cluster cache.
    pub fn reads(mut self, (api_version, kind): (&str, &str)) -> Self {
        let grants = self
            .0
            .entry("contextAwareResources")
            .or_insert_with(|| json!([]));
        grants
            .as_array_mut()
            .expect("contextAwareResources is a list")
            .push(json!({"apiVersion": api_version, "kind": kind}));
        self
    }

    /// Any other field, or a value of the wrong type, to test what the server refuses.
    pub fn field(mut self, name: &str, value: Value) -> Self {
        self.0.insert(name.into(), value);
        self
    }
}

/// The entries of policies.yml in order. An id may come twice, to test that the server
/// refuses it.
#[derive(Debug, Clone, Default)]
pub struct Policies(Vec<(String, Policy)>);

impl Policies {
    pub fn with(mut self, id: &str, policy: Policy) -> Self {
        self.0.push((id.to_owned(), policy));
        self
    }

    /// A block mapping of id to entry; each entry is JSON, which is YAML too.
    pub fn to_yaml(&self) -> String {
        self.0
            .iter()
            .map(|(id, policy)| format!("{}: {}\n", json!(id), Value::Object(policy.0.clone())))
            .collect()
    }
}

impl<const N: usize> From<[(&str, Policy); N]> for Policies {
    fn from(entries: [(&str, Policy); N]) -> Self {
        entries
            .into_iter()
            .fold(Self::default(), |policies, (id, policy)| {
                policies.with(id, policy)
            })
    }
}

impl From<Vec<(&str, Policy)>> for Policies {
    fn from(entries: Vec<(&str, Policy)>) -> Self {
        entries
            .into_iter()
            .fold(Self::default(), |policies, (id, policy)| {
                policies.with(id, policy)
            })
    }
}
