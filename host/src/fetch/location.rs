//! What a policy's `module` names: a local file, an artifact in an OCI registry, or a URL.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_client::Reference;
use reqwest::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleLocation {
    /// A path or `file://` URL, relative to the directory of the policies file.
    File(PathBuf),
    /// `registry://host/repository:tag` or `…@sha256:…`, as Kubewarden publishes policies.
    Registry(Reference),
    /// `https://…`, or `http://…` for a host listed in `insecure_sources`.
    Url(Url),
}

impl ModuleLocation {
    pub fn parse(module: &str, policies_dir: &Path) -> anyhow::Result<Self> {
        match module.split_once("://") {
            None => Ok(Self::File(policies_dir.join(module))),
            Some(("file", path)) => Ok(Self::File(policies_dir.join(path))),
            Some(("registry", reference)) => reference
                .parse::<Reference>()
                .map(Self::Registry)
                .with_context(|| format!("module '{module}' is not a valid OCI reference")),
            Some(("https" | "http", _)) => {
                let url = Url::parse(module)
                    .with_context(|| format!("module '{module}' is not a valid URL"))?;
                if url.host_str().is_none() {
                    bail!("module '{module}' has no host");
                }
                Ok(Self::Url(url))
            }
            Some((scheme, _)) => bail!(
                "module '{module}': {scheme}:// is not a module source; use a path, file://, \
                 registry:// or https://"
            ),
        }
    }

    /// The host (with its port, if any) whose `sources.yml` entries apply.
    pub fn host(&self) -> Option<String> {
        match self {
            Self::File(_) => None,
            Self::Registry(reference) => Some(reference.resolve_registry().to_owned()),
            Self::Url(url) => url.host_str().map(|host| match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source_kubewarden_accepts() {
        let dir = Path::new("/etc/policies");
        let cases: [(&str, Option<&str>); 6] = [
            ("p.wasm", None),
            ("file:///srv/p.wasm", None),
            (
                "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.1",
                Some("ghcr.io"),
            ),
            (
                "registry://localhost:5000/p@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                Some("localhost:5000"),
            ),
            ("https://example.com:8443/p.wasm", Some("example.com:8443")),
            ("http://dev.example.com/p.wasm", Some("dev.example.com")),
        ];
        for (module, host) in cases {
            let location = ModuleLocation::parse(module, dir).unwrap();
            assert_eq!(location.host().as_deref(), host, "{module}");
        }
        assert_eq!(
            ModuleLocation::parse("p.wasm", dir).unwrap(),
            ModuleLocation::File("/etc/policies/p.wasm".into())
        );
        assert_eq!(
            ModuleLocation::parse("file:///srv/p.wasm", dir).unwrap(),
            ModuleLocation::File("/srv/p.wasm".into())
        );
        let ModuleLocation::Registry(reference) = ModuleLocation::parse(
            "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.1",
            dir,
        )
        .unwrap() else {
            panic!("not a registry reference");
        };
        assert_eq!(reference.repository(), "kubewarden/policies/pod-privileged");
        assert_eq!(reference.tag(), Some("v0.2.1"));
    }

    #[test]
    fn refuses_what_is_no_module_source() {
        let dir = Path::new(".");
        for (module, reason) in [
            ("ftp://example.com/p.wasm", "ftp:// is not a module source"),
            ("registry://Not A Reference", "not a valid OCI reference"),
            ("https://", "not a valid URL"),
        ] {
            let err = format!("{:#}", ModuleLocation::parse(module, dir).unwrap_err());
            assert!(err.contains(reason), "{module}: {err}");
        }
    }
}
