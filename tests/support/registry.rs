//! A real OCI registry for one test: Debian's `docker-registry` (the reference
//! implementation of the distribution spec) on a loopback port, over TLS with a test CA
//! or plain HTTP, optionally behind htpasswd; and policies pushed to it the way
//! Kubewarden publishes them (one wasm layer, `application/vnd.wasm.content.layer.v1+wasm`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::server::TestCerts;

const BINARY: &str = "docker-registry";
pub const USER: &str = "policy-user";
pub const PASSWORD: &str = "policy-pass";
/// bcrypt of [`PASSWORD`] (cost 5, the least the registry takes, to keep tests quick).
const PASSWORD_BCRYPT: &str = "$2b$05$OiT6OhRHXj3vRn2r6HSbVOeMHYVCeoktPVQJ54jcPQ0/p6EXBUm.G";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS with a certificate for localhost from a test CA.
    Tls,
    PlainHttp,
}

pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `localhost:<port>`, as a module reference names it.
    pub host: String,
    pub transport: Transport,
    /// The test CA that signed the registry's certificate (TLS only).
    pub ca_pem: Option<String>,
    pub with_password: bool,
}

/// Whether the registry can run here; a test without it says so and passes.
pub fn available() -> bool {
    let found = Command::new(BINARY)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("skipped: no {BINARY} here (install Debian's docker-registry to run it)");
    }
    found
}

impl TestRegistry {
    pub async fn start(transport: Transport, with_password: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let certs = (transport == Transport::Tls).then(|| TestCerts::generate(dir.path()));
        let registry = Self {
            child: None,
            host: format!("localhost:{port}"),
            transport,
            ca_pem: certs.as_ref().map(|certs| certs.ca_pem.clone()),
            with_password,
            dir,
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n",
            registry.dir.path().join("data").display()
        );
        if let Some(certs) = &certs {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.cert_file.display(),
                certs.key_file.display()
            );
        }
        if with_password {
            let htpasswd = registry.dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n")).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_file = registry.dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let mut registry = registry;
        registry.child = Some(
            Command::new(BINARY)
                .arg("serve")
                .arg(&config_file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // It logs every 404 as an error: the tests check what the server says.
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        registry.wait_listening(port).await;
        registry
    }

    async fn wait_listening(&self, port: u16) {
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{BINARY} does not listen on {port} after 5 s");
    }

    fn client(&self) -> Client {
        crate::install_crypto_provider();
        Client::new(ClientConfig {
            protocol: match self.transport {
                Transport::Tls => ClientProtocol::Https,
                Transport::PlainHttp => ClientProtocol::Http,
            },
            tls_certs_only: self
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                })
                .collect(),
            ..ClientConfig::default()
        })
    }

    fn auth(&self) -> RegistryAuth {
        if self.with_password {
            RegistryAuth::Basic(USER.into(), PASSWORD.into())
        } else {
            RegistryAuth::Anonymous
        }
    }

    /// The `module:` of policies.yml for `repository:tag` (or `repository@digest`) here.
    pub fn module(&self, reference: &str) -> String {
        format!("registry://{}/{reference}", self.host)
    }

    /// Pushes `module` as `repository:tag`; returns the manifest's digest.
    pub async fn push(&self, repository: &str, tag: &str, module: &Path) -> String {
        let reference: Reference = format!("{}/{repository}:{tag}", self.host).parse().unwrap();
        let layer = ImageLayer::new(
            std::fs::read(module).unwrap(),
            WASM_LAYER_MEDIA_TYPE.into(),
            None,
        );
        let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.into(), None);
        let manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        let client = self.client();
        client
            .push(&reference, &[layer], config, &self.auth(), Some(manifest))
            .await
            .unwrap();
        client
            .fetch_manifest_digest(&reference, &self.auth())
            .await
            .unwrap()
    }

    /// A `sources.yml` that trusts this registry's CA (or, over plain HTTP, lists it as
    /// insecure), written in `dir`.
    pub fn sources_file(&self, dir: &Path) -> std::path::PathBuf {
        let text = match &self.ca_pem {
            Some(pem) => serde_json::json!({
                "source_authorities": {&self.host: [{"type": "Data", "data": pem}]}
            }),
            None => serde_json::json!({"insecure_sources": [&self.host]}),
        };
        let path = dir.join("sources.yml");
        std::fs::write(&path, text.to_string()).unwrap();
        path
    }

    /// Where the registry keeps the blob of `digest` on disk (its filesystem driver's
    /// layout): a test that rewrites it makes the registry serve other bytes.
    pub fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Docker config.json with `user`:`password` for `host`, written in `dir`.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> std::path::PathBuf {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}
