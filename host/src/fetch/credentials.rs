//! Registry credentials from a Docker `config.json`: the one `--docker-config-json-path`
//! names (a `kubernetes.io/dockerconfigjson` Secret, mounted), or else Docker's own
//! (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`). Credential helpers are run
//! as Docker runs them.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    config: Option<PathBuf>,
}

impl Credentials {
    pub fn new(config: Option<PathBuf>) -> Self {
        Self { config }
    }

    /// Where credentials come from, for messages.
    pub fn origin(&self) -> String {
        match &self.config {
            Some(path) => path.display().to_string(),
            None => "Docker's config.json".to_owned(),
        }
    }

    /// The credentials for `registry` (a host, with its port if any); anonymous when
    /// there are none.
    pub fn for_registry(&self, registry: &str) -> anyhow::Result<RegistryAuth> {
        let found = match &self.config {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                docker_credential::get_credential_from_reader(BufReader::new(file), registry)
            }
            None => docker_credential::get_credential(registry),
        };
        match found {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                Ok(RegistryAuth::Basic(user, password))
            }
            Ok(DockerCredential::IdentityToken(_)) => bail!(
                "the credentials for {registry} in {} are an identity token, which is only \
                 good for a token exchange this server does not make; store a username and \
                 password (or an access token as the password)",
                self.origin()
            ),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
            // Docker's own file is optional; a named one is not.
            Err(
                CredentialRetrievalError::ConfigNotFound
                | CredentialRetrievalError::ConfigReadError,
            ) if self.config.is_none() => Ok(RegistryAuth::Anonymous),
            Err(err) => Err(anyhow!(
                "cannot read the credentials for {registry} from {}: {err}",
                self.origin()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn config_file(json: serde_json::Value) -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json.to_string()).unwrap();
        (dir, Credentials::new(Some(path)))
    }

    #[test]
    fn reads_auths_of_a_dockerconfigjson_secret() {
        let auth = base64::engine::general_purpose::STANDARD.encode("policy-user:policy-pass");
        let (_dir, credentials) = config_file(serde_json::json!({
            "auths": {
                "localhost:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "hub", "password": "secret"},
            }
        }));
        match credentials.for_registry("localhost:5000").unwrap() {
            RegistryAuth::Basic(user, password) => {
                assert_eq!(
                    (user.as_str(), password.as_str()),
                    ("policy-user", "policy-pass")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            credentials.for_registry("ghcr.io").unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn a_named_config_that_cannot_be_read_is_an_error() {
        let missing = Credentials::new(Some("/nonexistent/config.json".into()));
        let err = format!("{:#}", missing.for_registry("ghcr.io").unwrap_err());
        assert!(
            err.contains("cannot read /nonexistent/config.json"),
            "{err}"
        );

        let (_dir, garbled) =
            config_file(serde_json::json!({"auths": {"ghcr.io": {"auth": "%%%"}}}));
        let err = format!("{:#}", garbled.for_registry("ghcr.io").unwrap_err());
        assert!(
            err.contains("cannot read the credentials for ghcr.io"),
            "{err}"
        );

        let (_dir, token) =
            config_file(serde_json::json!({"auths": {"ghcr.io": {"identitytoken": "refresh"}}}));
        let err = format!("{:#}", token.for_registry("ghcr.io").unwrap_err());
        assert!(err.contains("identity token"), "{err}");
    }
}
