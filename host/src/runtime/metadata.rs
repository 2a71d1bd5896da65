//! What a policy's bytes say about it: core module or component, and the
//! `io.kubewarden.metadata` custom section that `kwctl annotate` writes.

use serde::Deserialize;
use wasmparser::{Parser, Payload};

/// Name of the custom section where Kubewarden tooling stores policy metadata.
pub const KUBEWARDEN_METADATA_SECTION: &str = "io.kubewarden.metadata";

/// How a policy module expects to be run, as Kubewarden names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionMode {
    KubewardenWapc,
    Opa,
    Gatekeeper,
    Wasi,
    #[serde(untagged)]
    Other(String),
}

impl ExecutionMode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::KubewardenWapc => "kubewarden-wapc",
            Self::Opa => "opa",
            Self::Gatekeeper => "gatekeeper",
            Self::Wasi => "wasi",
            Self::Other(other) => other,
        }
    }
}

/// The parts of Kubewarden's metadata this server acts on; other fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    #[serde(default)]
    pub protocol_version: Option<String>,
    #[serde(default)]
    pub execution_mode: Option<ExecutionMode>,
    #[serde(default)]
    pub mutating: bool,
}

/// The kind of wasm binary a policy file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    CoreModule,
    Component,
}

/// Reads the binary kind and, if present, the Kubewarden metadata.
pub fn inspect(bytes: &[u8]) -> anyhow::Result<(BinaryKind, Option<PolicyMetadata>)> {
    let kind = if Parser::is_component(bytes) {
        BinaryKind::Component
    } else if Parser::is_core_wasm(bytes) {
        BinaryKind::CoreModule
    } else {
        anyhow::bail!("not a WebAssembly binary (bad magic number or version)");
    };
    let mut metadata = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let Payload::CustomSection(section) = payload? else {
            continue;
        };
        if section.name() == KUBEWARDEN_METADATA_SECTION {
            let parsed = serde_json::from_slice(section.data()).map_err(|e| {
                anyhow::anyhow!("the {KUBEWARDEN_METADATA_SECTION} section is not valid: {e}")
            })?;
            metadata = Some(parsed);
        }
    }
    Ok((kind, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module holding only a custom section, encoded by hand.
    fn module_with_section(name: &str, data: &[u8]) -> Vec<u8> {
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name.as_bytes());
        section.extend_from_slice(data);
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0); // custom section id
        module.push(section.len() as u8);
        module.extend(section);
        module
    }

    #[test]
    fn reads_execution_mode() {
        let bytes = module_with_section(
            KUBEWARDEN_METADATA_SECTION,
            br#"{"protocolVersion":"v1","executionMode":"opa","rules":[],"mutating":true}"#,
        );
        let (kind, metadata) = inspect(&bytes).unwrap();
        assert_eq!(kind, BinaryKind::CoreModule);
        let metadata = metadata.unwrap();
        assert_eq!(metadata.execution_mode, Some(ExecutionMode::Opa));
        assert!(metadata.mutating);
    }

    #[test]
    fn plain_module_has_no_metadata() {
        let (_, metadata) = inspect(b"\0asm\x01\0\0\0").unwrap();
        assert!(metadata.is_none());
    }

    #[test]
    fn unknown_modes_are_kept_by_name() {
        let bytes = module_with_section(
            KUBEWARDEN_METADATA_SECTION,
            br#"{"executionMode":"something-new"}"#,
        );
        let metadata = inspect(&bytes).unwrap().1.unwrap();
        assert_eq!(metadata.execution_mode.unwrap().as_str(), "something-new");
    }

    #[test]
    fn rejects_non_wasm() {
        assert!(inspect(b"hello").is_err());
    }
}
