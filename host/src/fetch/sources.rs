//! Kubewarden's `sources.yml` (`--sources-path`): hosts reached without TLS checks
//! (`insecure_sources`), and the certificate authorities trusted for a host besides the
//! system's (`source_authorities`). YAML or JSON; every key optional.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

#[derive(Debug, Default, Clone)]
pub struct Sources {
    insecure: BTreeSet<String>,
    authorities: BTreeMap<String, Vec<CertificateDer<'static>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSources {
    #[serde(default)]
    insecure_sources: Vec<String>,
    #[serde(default)]
    source_authorities: BTreeMap<String, Vec<RawAuthority>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawAuthority {
    /// A PEM or DER file.
    Path { path: PathBuf },
    /// PEM text.
    Data { data: String },
}

impl Sources {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sources file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid sources file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let raw: Option<RawSources> = crate::yaml::from_str(text, crate::yaml::config_options())
            .context("expected insecure_sources and source_authorities")?;
        let raw = raw.unwrap_or_default();
        let mut authorities = BTreeMap::new();
        for (host, entries) in raw.source_authorities {
            let mut certificates = Vec::new();
            for (index, entry) in entries.into_iter().enumerate() {
                let parsed = match entry {
                    RawAuthority::Path { path } => std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))
                        .and_then(|bytes| certificates_of(&bytes)),
                    RawAuthority::Data { data } => certificates_of(data.as_bytes()),
                };
                certificates.extend(parsed.with_context(|| {
                    format!("source_authorities of '{host}', entry {}", index + 1)
                })?);
            }
            authorities.insert(host, certificates);
        }
        Ok(Self {
            insecure: raw.insecure_sources.into_iter().collect(),
            authorities,
        })
    }

    /// Whether `host` (with its port, if the module names one) is reached without TLS
    /// checks, and over plain HTTP if it does not speak TLS.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.contains(host)
    }

    /// Certificate authorities trusted for `host` besides the system's.
    pub fn authorities(&self, host: &str) -> &[CertificateDer<'static>] {
        self.authorities.get(host).map_or(&[], Vec::as_slice)
    }
}

/// The certificates of a PEM bundle, or of one DER certificate, each checked to be a
/// trust anchor webpki takes: a bad one fails the start, not a pull.
fn certificates_of(bytes: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let certificates = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| anyhow::anyhow!("not a PEM certificate: {err}"))?;
        if certificates.is_empty() {
            bail!("no CERTIFICATE block in the PEM text");
        }
        certificates
    } else {
        vec![CertificateDer::from(bytes.to_vec())]
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots
            .add(certificate.clone())
            .map_err(|err| anyhow::anyhow!("neither a PEM nor a DER certificate ({err})"))?;
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["ca".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn reads_kubewarden_sources_file_in_yaml_and_json() {
        let pem = test_ca_pem();
        let dir = tempfile::tempdir().unwrap();
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, &pem).unwrap();
        let der_file = dir.path().join("ca.der");
        std::fs::write(
            &der_file,
            CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let indented = pem.replace('\n', "\n        ");
        let yaml = format!(
            "insecure_sources:\n  - registry-dev.example.com\n  - \"localhost:5000\"\n\
             source_authorities:\n  \"registry.example.com:5500\":\n    \
             - type: Path\n      path: {}\n    - type: Path\n      path: {}\n    \
             - type: Data\n      data: |\n        {indented}\n",
            pem_file.display(),
            der_file.display(),
        );
        let sources = Sources::parse(&yaml).unwrap_or_else(|err| panic!("{err:#}\n{yaml}"));
        assert!(sources.is_insecure("localhost:5000"));
        assert!(sources.is_insecure("registry-dev.example.com"));
        assert!(!sources.is_insecure("localhost"));
        assert_eq!(sources.authorities("registry.example.com:5500").len(), 3);
        assert!(sources.authorities("registry.example.com").is_empty());

        let json = serde_json::json!({
            "source_authorities": {"host.k3d.internal:5000": [{"type": "Data", "data": pem}]}
        });
        let sources = Sources::parse(&json.to_string()).unwrap();
        assert_eq!(sources.authorities("host.k3d.internal:5000").len(), 1);
        assert!(!sources.is_insecure("host.k3d.internal:5000"));
        assert!(Sources::parse("").unwrap().insecure.is_empty());
    }

    #[test]
    fn a_bad_authority_names_its_host_and_entry() {
        let cases = [
            (
                "source_authorities:\n  r.example.com:\n    - type: Data\n      data: hello\n",
                "source_authorities of 'r.example.com', entry 1: neither a PEM nor a DER",
            ),
            (
                "source_authorities:\n  r.example.com:\n    - type: Path\n      path: /nonexistent/ca.pem\n",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                "source_authorities:\n  r.example.com:\n    - type: Url\n      url: x\n",
                "unknown variant `Url`",
            ),
            ("insecure_source: [a]\n", "unknown field `insecure_source`"),
        ];
        for (text, reason) in cases {
            let err = format!("{:#}", Sources::parse(text).unwrap_err());
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
