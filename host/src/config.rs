//! `policies.yml`: which policies to serve and how, with Kubewarden's field names so an
//! existing file can be brought along.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

/// Whether a policy's rejections are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Protect,
    Monitor,
}

/// A Kubernetes kind a policy may read from the cluster cache.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContextAwareResource {
    pub api_version: String,
    pub kind: String,
}

/// One entry of `policies.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// A path (relative to the policies file), `file://`, `registry://` or `https://` URL
    /// (see [`crate::fetch::ModuleLocation`]).
    pub module: String,
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    #[serde(default)]
    pub allowed_to_mutate: bool,
    /// Replaces the policy's own rejection message.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub timeout_eval_seconds: Option<u64>,
    #[serde(default)]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// How the API server calls this policy: read by `policy-server manifests` for its
    /// webhook entry, with the names of Kubewarden's ClusterAdmissionPolicy; the server
    /// itself does not use them.
    #[serde(default)]
    pub rules: Vec<RuleWithOperations>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub object_selector: Option<LabelSelector>,
    /// `Fail` or `Ignore`.
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// `Exact` or `Equivalent`.
    #[serde(default)]
    pub match_policy: Option<String>,
    /// `None` or `NoneOnDryRun`.
    #[serde(default)]
    pub side_effects: Option<String>,
    /// How long the API server waits for this webhook (1–30 s).
    #[serde(default)]
    pub timeout_seconds: Option<i32>,
    /// A mutating webhook entry; by default, when `allowedToMutate`.
    #[serde(default)]
    pub mutating: Option<bool>,
}

impl PolicyConfig {
    /// The settings as the JSON the policy receives; absent settings are `{}`.
    pub fn settings_json(&self) -> serde_json::Value {
        match &self.settings {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(value) => value.clone(),
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_eval_seconds.map(Duration::from_secs)
    }

    /// Checks what serde cannot: values within their bounds.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(seconds) = self.timeout_eval_seconds {
            check_timeout("timeoutEvalSeconds", seconds)?;
        }
        if let Some(seconds) = self.timeout_seconds {
            check_timeout("timeoutSeconds", u64::try_from(seconds).unwrap_or(0))?;
        }
        let one_of = |field: &str, value: &Option<String>, allowed: &[&str]| match value {
            Some(value) if !allowed.contains(&value.as_str()) => {
                bail!(
                    "{field} is '{value}': it must be one of {}",
                    allowed.join(", ")
                )
            }
            _ => Ok(()),
        };
        one_of("failurePolicy", &self.failure_policy, &["Fail", "Ignore"])?;
        one_of("matchPolicy", &self.match_policy, &["Exact", "Equivalent"])?;
        one_of("sideEffects", &self.side_effects, &["None", "NoneOnDryRun"])?;
        if self.mutating == Some(true) && !self.allowed_to_mutate {
            bail!(
                "mutating is true but allowedToMutate is not: the server would refuse every mutation"
            );
        }
        Ok(())
    }

    /// Whether the policy's webhook entry is a mutating one.
    pub fn is_mutating(&self) -> bool {
        self.mutating.unwrap_or(self.allowed_to_mutate)
    }
}

/// The longest evaluation: the API server waits at most 30 s for a webhook.
pub const MAX_TIMEOUT_SECONDS: u64 = 30;

/// A timeout of at least 1 s and at most [`MAX_TIMEOUT_SECONDS`]: 0 would reject
/// everything, and a longer one pins a worker after the API server gave up.
pub fn check_timeout(name: &str, seconds: u64) -> anyhow::Result<()> {
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        bail!(
            "{name} is {seconds}: it must be between 1 and {MAX_TIMEOUT_SECONDS} seconds \
             (the API server waits at most {MAX_TIMEOUT_SECONDS} s for a webhook)"
        );
    }
    Ok(())
}

/// All policies of a `policies.yml`, by id, in a stable order.
#[derive(Debug, Clone)]
pub struct PoliciesFile {
    pub dir: PathBuf,
    pub policies: BTreeMap<String, PolicyConfig>,
}

impl PoliciesFile {
    /// Reads a policies file; one without policies is refused unless `allow_empty` (a
    /// server deployed before its policies, as Kubewarden's controller does).
    pub fn load(path: &Path, allow_empty: bool) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read policies file {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_with(&text, dir, allow_empty)
            .with_context(|| format!("invalid policies file {}", path.display()))
    }

    /// Parses each policy on its own, so an error names the policy it is about. A file
    /// without policies, or with one id twice (which would silently replace a policy by
    /// another), is refused.
    pub fn parse(text: &str, dir: PathBuf) -> anyhow::Result<Self> {
        Self::parse_with(text, dir, false)
    }

    fn parse_with(text: &str, dir: PathBuf, allow_empty: bool) -> anyhow::Result<Self> {
        // A repeated id, which would silently replace one policy by another, is a
        // duplicate key: refused with its line.
        let raw: Option<BTreeMap<String, serde_json::Value>> =
            crate::yaml::from_str(text, crate::yaml::config_options())
                .context("expected a mapping from policy id to policy")?;
        let raw = raw.unwrap_or_default();
        if raw.is_empty() && !allow_empty {
            bail!(
                "there are no policies in it: nothing would be served \
                 (--allow-empty-policies starts anyway)"
            );
        }
        let mut policies = BTreeMap::new();
        for (id, value) in raw {
            if id.is_empty() || id.contains('/') {
                bail!("policy id '{id}' is not valid: it must be non-empty and contain no '/'");
            }
            let policy: PolicyConfig =
                serde_json::from_value(value).with_context(|| format!("policy '{id}'"))?;
            policy.check().with_context(|| format!("policy '{id}'"))?;
            policies.insert(id, policy);
        }
        Ok(Self { dir, policies })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubewarden_fields() {
        let file = PoliciesFile::parse(
            r#"
labels:
  module: file:///policies/labels.wasm
  policyMode: monitor
  allowedToMutate: true
  message: "no"
  timeoutEvalSeconds: 5
  settings:
    required_labels: [team]
  contextAwareResources:
    - apiVersion: v1
      kind: Namespace
"#,
            PathBuf::from("/etc"),
        )
        .unwrap();
        let policy = &file.policies["labels"];
        assert_eq!(policy.policy_mode, PolicyMode::Monitor);
        assert!(policy.allowed_to_mutate);
        assert_eq!(policy.timeout(), Some(Duration::from_secs(5)));
        assert_eq!(
            policy.settings_json(),
            serde_json::json!({"required_labels": ["team"]})
        );
        assert_eq!(policy.context_aware_resources[0].kind, "Namespace");
        assert_eq!(policy.module, "file:///policies/labels.wasm");
    }

    #[test]
    fn unknown_field_names_the_policy_and_the_field() {
        let err = PoliciesFile::parse("p:\n  module: a.wasm\n  policyMod: monitor\n", ".".into())
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("policy 'p'"), "{text}");
        assert!(text.contains("unknown field `policyMod`"), "{text}");
    }

    #[test]
    fn refuses_what_would_serve_the_wrong_thing() {
        let cases = [
            (
                "a:\n  module: a.wasm\nb:\n  module: b.wasm\na:\n  module: c.wasm\n",
                "duplicate mapping key `a` is not allowed here at line 5, column 1",
            ),
            ("", "there are no policies"),
            ("# only a comment\n", "there are no policies"),
            ("{}", "there are no policies"),
            (
                "p:\n  module: a.wasm\n  timeoutEvalSeconds: 0\n",
                "timeoutEvalSeconds is 0: it must be between 1 and 30",
            ),
            (
                "p:\n  module: a.wasm\n  timeoutEvalSeconds: 100000000000000\n",
                "it must be between 1 and 30",
            ),
        ];
        for (text, reason) in cases {
            let err = PoliciesFile::parse(text, ".".into()).unwrap_err();
            let text_of = format!("{err:#}");
            assert!(text_of.contains(reason), "{text:?}: {text_of}");
        }
        let empty = PoliciesFile::parse_with("# policies come later\n", ".".into(), true).unwrap();
        assert!(empty.policies.is_empty());
        let fine = PoliciesFile::parse(
            "p:\n  module: a.wasm\n  timeoutEvalSeconds: 30\n",
            ".".into(),
        );
        assert!(fine.is_ok());
    }

    #[test]
    fn absent_settings_are_an_empty_object() {
        let file = PoliciesFile::parse("p:\n  module: a.wasm\n", ".".into()).unwrap();
        assert_eq!(file.policies["p"].settings_json(), serde_json::json!({}));
        assert_eq!(file.policies["p"].policy_mode, PolicyMode::Protect);
    }

    #[test]
    fn settings_read_as_yaml_1_2_like_kubewarden_reads_them() {
        let file = PoliciesFile::parse(
            "p:\n  module: a.wasm\n  settings:\n    answer: yes\n    \"<<\": {a: 1}\n    \
             octal: 0o17\n    plain: 017\n    under: 1_000\n    flag: true\n",
            ".".into(),
        )
        .unwrap();
        assert_eq!(
            file.policies["p"].settings_json(),
            serde_json::json!({
                "answer": "yes",
                "<<": {"a": 1},
                "octal": 15,
                "plain": "017",
                "under": "1_000",
                "flag": true,
            })
        );
    }

    #[test]
    fn yaml_that_would_mislead_or_explode_is_refused_with_its_line() {
        // Ten levels of ten aliases: 10^10 nodes from a few hundred bytes.
        let mut bomb = String::from(
            "p:\n  module: a.wasm\n  settings:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for level in 1..10 {
            let previous = format!("*l{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            bomb.push_str(&format!("    l{level}: &l{level} [{items}]\n"));
        }
        let cases = [
            (
                "p:\n  module: a.wasm\n  settings:\n    a: 1\n    a: 2\n".to_owned(),
                "duplicate mapping key `a` is not allowed here at line 5",
            ),
            (bomb, "too large or too complex"),
            (
                "p:\n  module: a.wasm\n  policyMode: [\n".to_owned(),
                "line 3",
            ),
        ];
        for (text, reason) in cases {
            let err = PoliciesFile::parse(&text, ".".into()).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains(reason), "{text}: {message}");
            assert!(!message.contains('\n'), "one line for the log: {message}");
        }
    }
}
