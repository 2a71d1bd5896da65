//! Pulls a policy from an OCI registry as Kubewarden publishes it: an image manifest
//! whose one layer of media type `application/vnd.wasm.content.layer.v1+wasm` is the
//! module. A registry is asked only for the manifest's digest when the store already
//! holds what it names, and not at all for a digest reference already pulled.

use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::failure::{self, is_unreachable};
use super::store::{MAX_MODULE_BYTES, Pin};
use super::{CONNECT_TIMEOUT, Fetched, Fetcher, READ_TIMEOUT, USER_AGENT};
use crate::metrics::FetchOutcome;

pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// How a registry is reached: over verified TLS; or, for an insecure source, over TLS
/// without checks and then over plain HTTP.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    Tls { verify: bool },
    PlainHttp,
}

pub(super) async fn pull(
    fetcher: &Fetcher,
    reference: &Reference,
    source: &str,
) -> anyhow::Result<Fetched> {
    let store = fetcher.store()?;
    let pinned = store.pinned(source);
    if let Some(digest) = reference.digest()
        && let Some(pin) = &pinned
        && pin.manifest.as_deref() == Some(digest)
        && let Some(path) = store.verified_in_background(&pin.module).await
    {
        tracing::info!(
            module = source,
            "module pinned by digest is in the local store"
        );
        return Ok(Fetched {
            path,
            outcome: FetchOutcome::Stored,
            pin: None,
        });
    }
    let host = reference.resolve_registry();
    let auth = fetcher.credentials.for_registry(host)?;
    let insecure = fetcher.sources.is_insecure(host);
    let attempts: &[Attempt] = if insecure {
        &[Attempt::Tls { verify: false }, Attempt::PlainHttp]
    } else {
        &[Attempt::Tls { verify: true }]
    };
    let mut unreachable = None;
    for attempt in attempts {
        let client = client(fetcher, host, *attempt)?;
        let pulled = super::within_deadline(pull_with(
            fetcher,
            &client,
            reference,
            &auth,
            source,
            pinned.as_ref(),
        ))
        .await;
        match pulled {
            Ok(path) => return Ok(path),
            Err(err) if is_unreachable(&err) => unreachable = Some(err),
            Err(err) => return Err(explain(err, host, &auth, fetcher)),
        }
    }
    let err = unreachable.unwrap_or_else(|| anyhow!("no way to reach {host}"));
    let speaks_plain_http = !insecure && failure::is_not_tls(&err);
    super::stored_instead(fetcher, pinned, source, err)
        .await
        .with_context(|| {
            if speaks_plain_http {
                format!(
                    "registry {host} does not speak TLS: one that serves plain HTTP must be \
                 listed in insecure_sources (--sources-path)"
                )
            } else {
                format!("registry {host} cannot be reached")
            }
        })
}

async fn pull_with(
    fetcher: &Fetcher,
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    source: &str,
    pinned: Option<&Pin>,
) -> anyhow::Result<Fetched> {
    let store = fetcher.store()?;
    let manifest_digest = client.fetch_manifest_digest(reference, auth).await?;
    if let Some(pin) = pinned
        && pin.manifest.as_deref() == Some(manifest_digest.as_str())
        && let Some(path) = store.verified_in_background(&pin.module).await
    {
        tracing::info!(module = source, digest = %pin.module, "module unchanged in the registry; using the local store");
        return Ok(Fetched {
            path,
            outcome: FetchOutcome::Stored,
            pin: None,
        });
    }
    let started = Instant::now();
    let (manifest, manifest_digest) = client.pull_image_manifest(reference, auth).await?;
    let layer = wasm_layer(&manifest)?;
    let pin = |module: String| Pin {
        source: source.to_owned(),
        manifest: Some(manifest_digest.clone()),
        module,
    };
    // Another source (a tag, a digest) may have brought the same module already.
    if let Some(path) = store.verified_in_background(&layer.digest).await {
        return Ok(Fetched {
            path,
            outcome: FetchOutcome::Stored,
            pin: Some(pin(layer.digest.clone())),
        });
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > MAX_MODULE_BYTES {
        bail!("the module is {size} bytes, more than the {MAX_MODULE_BYTES} this server pulls");
    }
    // The blob from this registry only: a descriptor's `urls` would send the request to
    // any host the manifest names.
    let layer = OciDescriptor {
        urls: None,
        ..layer.clone()
    };
    let mut blob = client.pull_blob_stream(reference, &layer).await?;
    // The manifest's size bounds what is read, whatever the registry sends.
    let mut download = store.download(size)?;
    while let Some(chunk) = blob.next().await {
        download.write(&chunk.context("while downloading the module")?)?;
    }
    let (digest, path) = download.finish(Some(&layer.digest))?;
    let pin = pin(digest.clone());
    tracing::info!(module = source, %digest, bytes = size, elapsed = ?started.elapsed(), "pulled");
    Ok(Fetched {
        path,
        outcome: FetchOutcome::Downloaded,
        pin: Some(pin),
    })
}

/// The one wasm layer of a policy artifact.
fn wasm_layer(manifest: &OciImageManifest) -> anyhow::Result<&OciDescriptor> {
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|layer| layer.media_type == WASM_LAYER_MEDIA_TYPE);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Ok(layer),
        (None, _) => bail!(
            "the artifact has no layer of media type {WASM_LAYER_MEDIA_TYPE} (layers: {}): \
             it is not a policy",
            manifest
                .layers
                .iter()
                .map(|layer| layer.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(_), Some(_)) => bail!("the artifact has more than one wasm layer"),
    }
}

fn client(fetcher: &Fetcher, host: &str, attempt: Attempt) -> anyhow::Result<Client> {
    let extra_root_certificates = fetcher
        .sources
        .authorities(host)
        .iter()
        .map(|der| Certificate {
            encoding: CertificateEncoding::Der,
            data: der.to_vec(),
        })
        .collect();
    // try_from, not new: new falls back to a default client (no timeouts, no CAs of
    // this host) when the configuration does not build.
    Client::try_from(ClientConfig {
        protocol: match attempt {
            Attempt::Tls { .. } => ClientProtocol::Https,
            Attempt::PlainHttp => ClientProtocol::Http,
        },
        accept_invalid_certificates: matches!(attempt, Attempt::Tls { verify: false }),
        extra_root_certificates,
        // A policy is one artifact for every platform: an index is not one.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    })
    .with_context(|| format!("cannot make a client for registry {host}"))
}

/// Says what went wrong in the words of the operator's fix.
fn explain(
    err: anyhow::Error,
    host: &str,
    auth: &RegistryAuth,
    fetcher: &Fetcher,
) -> anyhow::Error {
    let refused = || match auth {
        RegistryAuth::Anonymous => format!(
            "registry {host} asks for credentials and there are none for it in {}",
            fetcher.credentials.origin()
        ),
        _ => format!(
            "registry {host} refused the credentials for it in {}",
            fetcher.credentials.origin()
        ),
    };
    let missing = || format!("registry {host} has no such tag or digest");
    if failure::is_untrusted(&err) {
        return err.context(failure::untrusted_hint(host));
    }
    let hint = match err.downcast_ref::<OciDistributionError>() {
        Some(
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_),
        ) => Some(refused()),
        Some(OciDistributionError::ServerError {
            code: 401 | 403, ..
        }) => Some(refused()),
        Some(OciDistributionError::ImageManifestNotFoundError(_))
        | Some(OciDistributionError::ServerError { code: 404, .. }) => Some(missing()),
        Some(OciDistributionError::RegistryError { envelope, .. }) => {
            envelope.errors.iter().find_map(|error| match error.code {
                OciErrorCode::Unauthorized | OciErrorCode::Denied => Some(refused()),
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown => Some(missing()),
                _ => None,
            })
        }
        _ => None,
    };
    match hint {
        Some(hint) => err.context(hint),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.to_owned(),
            digest: super::super::store::sha256_digest(media_type.as_bytes()),
            size: 10,
            ..OciDescriptor::default()
        }
    }

    #[test]
    fn the_module_is_the_one_wasm_layer() {
        let manifest = |layers: Vec<OciDescriptor>| OciImageManifest {
            layers,
            ..OciImageManifest::default()
        };
        let policy = manifest(vec![descriptor(WASM_LAYER_MEDIA_TYPE)]);
        assert_eq!(
            wasm_layer(&policy).unwrap().media_type,
            WASM_LAYER_MEDIA_TYPE
        );

        let image = manifest(vec![descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )]);
        let err = wasm_layer(&image).unwrap_err().to_string();
        assert!(err.contains("it is not a policy"), "{err}");
        assert!(err.contains("tar+gzip"), "{err}");

        let twice = manifest(vec![
            descriptor(WASM_LAYER_MEDIA_TYPE),
            descriptor(WASM_LAYER_MEDIA_TYPE),
        ]);
        assert!(wasm_layer(&twice).is_err());
    }
}
