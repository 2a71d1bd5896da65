//! Downloads a module from an `https://` URL (or `http://`, for a host in
//! `insecure_sources`). A URL names no digest: it is downloaded on every load and stored
//! by the digest of what came.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::{Certificate, Url};

use super::failure::{self, is_unreachable};
use super::store::{MAX_MODULE_BYTES, Pin};
use super::{CONNECT_TIMEOUT, Fetched, Fetcher, READ_TIMEOUT, USER_AGENT};
use crate::metrics::FetchOutcome;

pub(super) async fn download(
    fetcher: &Fetcher,
    url: &Url,
    host: &str,
    source: &str,
) -> anyhow::Result<Fetched> {
    let insecure = fetcher.sources.is_insecure(host);
    if url.scheme() == "http" && !insecure {
        bail!(
            "plain http:// is refused for {host}: list it in insecure_sources (--sources-path) \
             to allow it"
        );
    }
    let client = client(fetcher, host, insecure)?;
    let store = fetcher.store()?;
    match super::within_deadline(get(fetcher, &client, url)).await {
        Ok((digest, path, bytes, elapsed)) => {
            tracing::info!(module = source, %digest, bytes, ?elapsed, "downloaded");
            Ok(Fetched {
                path,
                outcome: FetchOutcome::Downloaded,
                pin: Some(Pin {
                    source: source.to_owned(),
                    manifest: None,
                    module: digest,
                }),
            })
        }
        Err(err) if is_unreachable(&err) => {
            super::stored_instead(fetcher, store.pinned(source), source, err)
                .await
                .with_context(|| format!("{host} cannot be reached"))
        }
        Err(err) if failure::is_untrusted(&err) => Err(err.context(failure::untrusted_hint(host))),
        Err(err) => Err(err),
    }
}

async fn get(
    fetcher: &Fetcher,
    client: &reqwest::Client,
    url: &Url,
) -> anyhow::Result<(String, PathBuf, u64, std::time::Duration)> {
    let started = Instant::now();
    let response = client.get(url.clone()).send().await?;
    let status = response.status();
    if failure::is_gateway_outage(status.as_u16()) {
        return Err(failure::Outage(format!("the server answered {status}")).into());
    }
    if !status.is_success() {
        bail!("the server answered {status}");
    }
    if let Some(length) = response.content_length()
        && length > MAX_MODULE_BYTES
    {
        bail!(
            "the module is {length} bytes, more than the {MAX_MODULE_BYTES} this server downloads"
        );
    }
    let mut download = fetcher.store()?.download(MAX_MODULE_BYTES)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        download.write(&chunk.context("while downloading the module")?)?;
    }
    let bytes = download.written();
    let (digest, path) = download.finish(None)?;
    Ok((digest, path, bytes, started.elapsed()))
}

fn client(fetcher: &Fetcher, host: &str, insecure: bool) -> anyhow::Result<reqwest::Client> {
    let authorities = fetcher
        .sources
        .authorities(host)
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .tls_certs_merge(authorities)
        .tls_danger_accept_invalid_certs(insecure)
        // A secure source is not left for plain HTTP by a redirect.
        .https_only(!insecure)
        // Trust (authorities, insecure_sources) was settled for this host: a redirect
        // must not carry it to another.
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().and_then(|url| url.host_str());
            if attempt.url().host_str() != first {
                attempt.error("a redirect to another host")
            } else if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .context("cannot make an HTTP client")
}
