//! Modules from https:// URLs (and http://, for an insecure source).

use policy_server_e2e::Policy;
use policy_server_e2e::registry::{self, TestRegistry, Transport};
use policy_server_e2e::wasm;

use super::{fetch_flags, serves_pod_privileged, sha256_of};
use crate::server;

#[tokio::test(flavor = "multi_thread")]
async fn a_module_is_downloaded_from_an_https_url() {
    if !registry::available() {
        return;
    }
    // The registry serves blobs by plain GET: a real HTTPS server with a test CA.
    let registry = TestRegistry::start(Transport::Tls, false).await;
    let module = &wasm().pod_privileged;
    registry.push("policies/pod-privileged", "v1", module).await;
    let url = format!(
        "https://{}/v2/policies/pod-privileged/blobs/{}",
        registry.host,
        sha256_of(module)
    );
    let dir = tempfile::tempdir().unwrap();
    let sources = registry.sources_file(dir.path());
    let server = tokio::task::block_in_place(|| {
        server([("privileged", Policy::new(&url))])
            .args(fetch_flags(dir.path(), Some(&sources)))
            .start()
    });
    serves_pod_privileged(&server, "privileged").await;

    let plain = url.replacen("https://", "http://", 1);
    super::refused(
        crate::server([("privileged", Policy::new(&plain))])
            .args(fetch_flags(dir.path(), Some(&sources))),
        "plain http:// is refused",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_that_redirects_to_another_host_is_refused() {
    // A plain HTTP server (an insecure source) that sends every request elsewhere.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = [0; 4096];
            let _ = stream.read(&mut head).await;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://localhost:{port}/p.wasm\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.yml");
    std::fs::write(
        &sources,
        format!("insecure_sources: [\"127.0.0.1:{port}\", \"localhost:{port}\"]\n"),
    )
    .unwrap();
    super::refused(
        server([(
            "redirected",
            Policy::new(format!("http://127.0.0.1:{port}/p.wasm")),
        )])
        .args(fetch_flags(dir.path(), Some(&sources))),
        "a redirect to another host",
    );
}
