//! How a fetch failed, in the terms that decide what happens next: the source could not
//! be reached (serve the copy fetched before), its certificate is not trusted, or it
//! answered no (the policy fails).

use std::error::Error;

use oci_client::errors::OciDistributionError;

/// The source is down or stalled: no answer, or a gateway's 502/503/504.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Outage(pub String);

/// Every cause of `err`, including those an `io::Error` wraps (its `source()` skips the
/// error it holds, and TLS and body errors come wrapped, sometimes twice).
fn causes(err: &anyhow::Error) -> impl Iterator<Item = &(dyn Error + 'static)> {
    err.chain().flat_map(|cause| {
        std::iter::successors(Some(cause), |cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .map(|inner| inner as &(dyn Error + 'static))
        })
    })
}

fn rustls_errors(err: &anyhow::Error) -> impl Iterator<Item = &rustls::Error> {
    causes(err).filter_map(|cause| cause.downcast_ref::<rustls::Error>())
}

/// Whether `err` says the other end could not be reached (refused, timed out, stalled,
/// or not speaking the protocol asked), rather than answering no.
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    let gone = |err: &reqwest::Error| {
        err.is_connect() || err.is_timeout() || err.is_body() || err.is_request()
    };
    !is_untrusted(err)
        && causes(err).any(|cause| {
            cause.is::<Outage>()
                || cause.downcast_ref::<reqwest::Error>().is_some_and(gone)
                || match cause.downcast_ref::<OciDistributionError>() {
                    Some(OciDistributionError::RequestError(err)) => gone(err),
                    Some(OciDistributionError::ServerError { code, .. }) => {
                        is_gateway_outage(*code)
                    }
                    _ => false,
                }
        })
}

/// A status a proxy or load balancer answers for a registry that is down.
pub fn is_gateway_outage(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// Whether `err` is a TLS certificate the host's authorities do not vouch for: an answer,
/// not an outage, and one the operator fixes in `sources.yml`.
pub fn is_untrusted(err: &anyhow::Error) -> bool {
    rustls_errors(err).any(|err| matches!(err, rustls::Error::InvalidCertificate(_)))
}

/// Whether the other end did not speak TLS at all (a plain HTTP server, most likely).
pub fn is_not_tls(err: &anyhow::Error) -> bool {
    rustls_errors(err).any(|err| {
        matches!(
            err,
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }
        )
    })
}

/// Says that `host`'s certificate is not trusted, and how to make it so.
pub fn untrusted_hint(host: &str) -> String {
    format!(
        "the TLS certificate of {host} is not trusted: add the CA that signed it to \
         source_authorities, or list the host in insecure_sources (--sources-path)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_wrapped_in_io_errors_are_found() {
        let certificate = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let err = anyhow::Error::new(certificate).context("while pulling");
        assert!(is_untrusted(&err));
        assert!(
            !is_unreachable(&err),
            "an untrusted certificate is an answer"
        );

        let plain_http = anyhow::Error::new(std::io::Error::other(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert!(is_not_tls(&plain_http));
        assert!(!is_untrusted(&plain_http));

        let stalled = anyhow::Error::new(Outage("no byte in 5 min".into())).context("pull");
        assert!(is_unreachable(&stalled));
        assert!(!is_unreachable(&anyhow::anyhow!("manifest unknown")));
    }

    #[test]
    fn gateway_statuses_are_outages() {
        let err = anyhow::Error::new(OciDistributionError::ServerError {
            code: 503,
            url: "https://r/v2/".into(),
            message: "down".into(),
        });
        assert!(is_unreachable(&err));
        let err = anyhow::Error::new(OciDistributionError::ServerError {
            code: 404,
            url: "https://r/v2/".into(),
            message: "no".into(),
        });
        assert!(!is_unreachable(&err));
    }
}
