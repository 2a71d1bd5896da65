//! What a policy answers, as the legacy contract spells it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The answer to `validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestVerdict {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutated_object: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
}

/// The answer to `validate_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SettingsVerdict {
    pub valid: bool,
    #[serde(default)]
    pub message: Option<String>,
}

impl TryFrom<crate::runtime::component::Verdict> for GuestVerdict {
    type Error = crate::runtime::EvalError;

    /// The typed verdict of a component, in the shape legacy policies answer with.
    fn try_from(verdict: crate::runtime::component::Verdict) -> Result<Self, Self::Error> {
        let mutated_object = verdict
            .mutated_object
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| {
                crate::runtime::EvalError::BadAnswer(format!("mutated-object is not JSON: {e}"))
            })?;
        Ok(Self {
            accepted: verdict.accepted,
            message: verdict.message,
            code: verdict.code,
            mutated_object,
            warnings: Some(verdict.warnings).filter(|w| !w.is_empty()),
            audit_annotations: Some(
                verdict
                    .audit_annotations
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            )
            .filter(|a| !a.is_empty()),
        })
    }
}
