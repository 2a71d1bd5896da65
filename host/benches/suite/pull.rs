//! Pulling a policy from an OCI registry (Debian's docker-registry on loopback, TLS with
//! a test CA): a 2 MiB module cold (empty store: manifest digest, manifest, blob, write,
//! verify), by tag with the store warm (one HEAD, then the stored copy re-hashed), and by
//! digest from the store (no request at all). In process, through the server's fetcher.
//! Skipped, saying so, where docker-registry is not installed.

use std::path::Path;
use std::time::Instant;

use policy_server::config::PoliciesFile;
use policy_server::fetch::{Fetcher, ModulePaths};
use policy_server_e2e::registry::{self, TestRegistry, Transport};

use crate::report::{Report, Table, num, text};
use crate::startup::with_custom_section;
use crate::stats::Stats;
use crate::{Scale, async_runtime};

/// Kubewarden's real policies are 1.7–3 MB.
const MODULE_BYTES: usize = 2 << 20;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    if !registry::available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let module = dir.path().join("policy.wasm");
    std::fs::write(
        &module,
        padded_module(&policy_server_e2e::wasm().pod_privileged)?,
    )?;
    let runtime = async_runtime();
    let registry = runtime.block_on(TestRegistry::start(Transport::Tls, false));
    let manifest = runtime.block_on(registry.push("policies/pod-privileged", "v1", &module));
    let sources = registry.sources_file(dir.path());
    let file = |reference: String| {
        PoliciesFile::parse(
            &format!(
                "p:\n  module: registry://{}/policies/{reference}\n",
                registry.host
            ),
            dir.path().to_path_buf(),
        )
    };
    let by_tag = file("pod-privileged:v1".into())?;
    let by_digest = file(format!("pod-privileged@{manifest}"))?;
    let fetch = |store: &Path, policies: &PoliciesFile| -> anyhow::Result<f64> {
        let fetcher = Fetcher::new(store.to_path_buf(), Some(&sources), None)?;
        let started = Instant::now();
        let paths: ModulePaths = runtime.block_on(fetcher.fetch(policies));
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        paths.of(&policies.policies["p"])?;
        Ok(elapsed)
    };

    let rounds = scale.warm_starts.max(1) * 10;
    let mut cold = Vec::new();
    for round in 0..rounds {
        cold.push(fetch(&dir.path().join(format!("cold-{round}")), &by_tag)?);
    }
    let warm_store = dir.path().join("warm");
    fetch(&warm_store, &by_tag)?;
    fetch(&warm_store, &by_digest)?;
    let mut by_tag_warm = Vec::new();
    let mut by_digest_warm = Vec::new();
    for _ in 0..rounds {
        by_tag_warm.push(fetch(&warm_store, &by_tag)?);
        by_digest_warm.push(fetch(&warm_store, &by_digest)?);
    }

    let mut table = Table::new(
        "pull",
        format!(
            "pull of a {} MiB policy from a local registry over TLS ({rounds} rounds each, ms)",
            MODULE_BYTES >> 20
        ),
        &["case", "p50 ms", "max ms", "requests to the registry"],
    );
    let mut row = |case: &str, samples: Vec<f64>, requests: &str| {
        let max = samples.iter().copied().fold(0.0, f64::max);
        let stats = Stats::of(samples);
        table.row(vec![
            text(case),
            num(stats.p50, 2),
            num(max, 2),
            text(requests),
        ]);
        stats.p50
    };
    let cold_p50 = row("cold (empty store)", cold, "HEAD + GET manifest + GET blob");
    let tag_p50 = row("by tag, in the store", by_tag_warm, "HEAD manifest");
    row("by digest, in the store", by_digest_warm, "none");
    report.add(table);
    report.at_most(
        "pull from the store by tag / cold pull",
        tag_p50 / cold_p50,
        1.0,
    );
    Ok(())
}

/// `module` grown to [`MODULE_BYTES`] by a custom section, as debug names and metadata
/// grow real policies: the registry and the fetcher see a module of that size.
fn padded_module(module: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(module)?;
    // The section's own header takes a few bytes more: near enough.
    let padding = vec![0; MODULE_BYTES.saturating_sub(bytes.len() + 32)];
    Ok(with_custom_section(bytes, "bench-padding", &padding))
}
