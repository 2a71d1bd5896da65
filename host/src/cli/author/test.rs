//! `policy-server test FILE...`: suites of cases (a policy, its settings, a request, the
//! cluster it reads, and what the answer must be), each run through the server's own
//! evaluation path; a PASS/FAIL line per case, a diff for a failure, a summary, an exit
//! code (0 all passed, 1 a case failed, 2 a file could not be run) and JUnit XML for CI.
//!
//! ```yaml
//! policies: policies.yml             # optional: `policy:` may then be an id there
//! clusterSnapshot: cluster.yaml      # optional: the cluster every case reads
//! cases:
//!   - name: a pod on :latest is rejected
//!     policy: deny-latest-tag        # an id, or a module (relative to this file)
//!     settings: {}                   # optional, replaces the id's
//!     allowContext: [v1/Namespace]   # optional grants
//!     request: requests/pod.json     # a file (relative to this file) or inline
//!     clusterSnapshot: other.yaml    # optional, for this case
//!     expect:
//!       allowed: false               # or `error: text`: the evaluation must fail
//!       code: 403                    # optional
//!       message: must be pinned      # optional: a substring of status.message
//!       patch: [...]                 # optional: the JSON Patch, exactly
//!       patchedObject: {...}         # optional: the object after the patch
//!       warnings: [...]              # optional, exactly
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::session::{ClusterChoice, Evaluation, LoadHow, PolicyEntry, Session};
use super::{RegistryArgs, async_runtime, exit, request};

#[derive(Debug, Args)]
pub(in crate::cli) struct TestArgs {
    /// Files of test cases (YAML or JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also write the results as JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    #[command(flatten)]
    registries: RegistryArgs,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Suite {
    #[serde(default)]
    policies: Option<PathBuf>,
    #[serde(default)]
    cluster_snapshot: Option<PathBuf>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    policy: String,
    #[serde(default)]
    settings: Option<Value>,
    #[serde(default)]
    allow_context: Vec<String>,
    request: Value,
    #[serde(default)]
    cluster_snapshot: Option<PathBuf>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    allowed: Option<bool>,
    /// The evaluation must fail (a trap, a timeout, a policy that does not load), with
    /// this in its message.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    patched_object: Option<Value>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

/// What became of one case.
struct Outcome {
    name: String,
    elapsed: Duration,
    /// Why it failed, one entry per expectation not met.
    failures: Vec<String>,
}

pub(in crate::cli) fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let runtime = async_runtime()?;
    let mut report = quick_junit::Report::new("policy-server test");
    let (mut passed, mut failed, mut broken_files) = (0, 0, 0);
    // A policy that does not load fails its cases with the reason; the others still run.
    let how = LoadHow {
        continue_on_errors: true,
        ..args.registries.how()
    };
    for file in &args.files {
        let mut suite = quick_junit::TestSuite::new(file.display().to_string());
        let outcomes = match runtime.block_on(run_suite(file, &how)) {
            Ok(outcomes) => outcomes,
            // A file that cannot run is reported, and the others still run.
            Err(err) => {
                broken_files += 1;
                let reason = format!("{err:#}");
                println!("ERROR {}: {reason}", file.display());
                let mut status =
                    quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Error);
                status.set_message(reason);
                suite.add_test_case(quick_junit::TestCase::new("(the file)", status));
                report.add_test_suite(suite);
                continue;
            }
        };
        for outcome in outcomes {
            let mut case = if outcome.failures.is_empty() {
                passed += 1;
                println!("PASS {} ({:.1?})", outcome.name, outcome.elapsed);
                quick_junit::TestCase::new(
                    outcome.name.clone(),
                    quick_junit::TestCaseStatus::success(),
                )
            } else {
                failed += 1;
                println!("FAIL {}", outcome.name);
                for failure in &outcome.failures {
                    for line in failure.lines() {
                        println!("    {line}");
                    }
                }
                let mut status =
                    quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
                status.set_message(outcome.failures[0].lines().next().unwrap_or_default());
                status.set_description(outcome.failures.join("\n"));
                quick_junit::TestCase::new(outcome.name.clone(), status)
            };
            case.set_time(outcome.elapsed);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let files = args.files.len();
    println!(
        "{passed} passed, {failed} failed ({files} file{}{})",
        if files == 1 { "" } else { "s" },
        match broken_files {
            0 => String::new(),
            broken => format!(", {broken} could not run"),
        }
    );
    if let Some(path) = &args.junit {
        let xml = report.to_string().context("cannot write JUnit XML")?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::from(if broken_files > 0 {
        exit::ERROR
    } else if failed > 0 {
        exit::NO
    } else {
        exit::SUCCESS
    }))
}

/// Runs the cases of one file: one load per cluster they read, so a module is compiled
/// once however many cases use it.
async fn run_suite(file: &Path, how: &LoadHow) -> anyhow::Result<Vec<Outcome>> {
    let suite: Suite = serde_json::from_value(super::read_document(file)?)
        .context("expected policies, clusterSnapshot and cases")?;
    let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let policies = suite.policies.as_ref().map(|path| dir.join(path));
    let ids_in_policies = match &policies {
        Some(path) => crate::config::PoliciesFile::load(path, false)?
            .policies
            .into_keys()
            .collect(),
        None => Vec::new(),
    };
    let mut groups: BTreeMap<Option<PathBuf>, Vec<(usize, &Case)>> = BTreeMap::new();
    for (index, case) in suite.cases.iter().enumerate() {
        let snapshot = case
            .cluster_snapshot
            .as_ref()
            .or(suite.cluster_snapshot.as_ref())
            .map(|path| dir.join(path));
        groups.entry(snapshot).or_default().push((index, case));
    }
    let mut outcomes: Vec<Option<Outcome>> = suite.cases.iter().map(|_| None).collect();
    for (snapshot, cases) in groups {
        // Cases share a policy when they configure it alike; its id is the one in
        // policies.yml (or the module's name), as the server's messages say it.
        let mut entries: Vec<(String, PolicyEntry)> = Vec::new();
        let mut ids = Vec::new();
        for (index, case) in &cases {
            let entry = entry_of(case, &ids_in_policies, policies.as_deref(), &dir)
                .with_context(|| format!("case '{}'", case.name));
            let id = entry.map(|entry| {
                if let Some((id, _)) = entries.iter().find(|(_, known)| known.entry == entry.entry)
                {
                    return id.clone();
                }
                let base = if ids_in_policies.contains(&case.policy) {
                    case.policy.clone()
                } else {
                    super::module_id(&case.policy)
                };
                let taken = |id: &str| entries.iter().any(|(known, _)| known == id);
                let id = (1..)
                    .map(|n| {
                        if n == 1 {
                            base.clone()
                        } else {
                            format!("{base}-{n}")
                        }
                    })
                    .find(|id| !taken(id))
                    .expect("a free id");
                entries.push((id.clone(), entry));
                id
            });
            ids.push((*index, *case, id));
        }
        let cluster = match snapshot {
            Some(path) => ClusterChoice::Snapshot(path),
            None => ClusterChoice::None,
        };
        let session = Session::load(entries, &cluster, how.clone()).await;
        for (index, case, id) in ids {
            let started = Instant::now();
            let failures = match (&session, id) {
                (_, Err(err)) => vec![format!("{err:#}")],
                (Ok(session), Ok(id)) => check(session, &id, case, &dir),
                (Err(err), Ok(_)) => {
                    vec![format!("the policies of this case did not load: {err:#}")]
                }
            };
            outcomes[index] = Some(Outcome {
                name: case.name.clone(),
                elapsed: started.elapsed(),
                failures,
            });
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// The policy of `case`: an id of the suite's policies.yml, or a module.
fn entry_of(
    case: &Case,
    ids_in_policies: &[String],
    policies: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<PolicyEntry> {
    if case.expect.allowed.is_none() && case.expect.error.is_none() {
        bail!("expect needs `allowed`, or `error` for an evaluation expected to fail");
    }
    let entry = if ids_in_policies.contains(&case.policy) {
        PolicyEntry::resolve(&case.policy, policies)?
    } else {
        if let Some(policies) = policies
            && !case.policy.contains("://")
            && !dir.join(&case.policy).exists()
        {
            bail!(
                "'{}' is neither a policy of {} nor a module file",
                case.policy,
                policies.display()
            );
        }
        PolicyEntry::module(&case.policy, dir)?
    };
    let entry = match &case.settings {
        Some(settings) => entry.settings(settings.clone()),
        None => entry,
    };
    entry.allow_context(&case.allow_context)
}

/// Runs one case; returns the expectations it did not meet.
fn check(session: &Session, id: &str, case: &Case, dir: &Path) -> Vec<String> {
    let review = match &case.request {
        Value::String(path) => request::review_from_file(&dir.join(path)),
        inline => request::review_from(inline.clone()),
    };
    let evaluation = match review.and_then(|review| session.evaluate(id, &review)) {
        Ok(evaluation) => evaluation,
        Err(err) => return vec![format!("{err:#}")],
    };
    compare(&case.expect, &evaluation)
}

fn compare(expect: &Expect, evaluation: &Evaluation) -> Vec<String> {
    let response = &evaluation.review["response"];
    let message = response["status"]["message"].as_str().unwrap_or_default();
    let mut failures = Vec::new();
    match (&expect.error, evaluation.failed) {
        (Some(part), true) if !message.contains(part.as_str()) => failures.push(format!(
            "error: expected it to contain {part:?}, got {message:?}"
        )),
        (Some(_), true) => {}
        (Some(part), false) => failures.push(format!(
            "error: expected the evaluation to fail with {part:?}, it answered {}",
            if response["allowed"] == true {
                "allowed"
            } else {
                "rejected"
            }
        )),
        // A failure is never a verdict: a rejection expected of the policy must come
        // from the policy.
        (None, true) => failures.push(format!("the evaluation failed: {message}")),
        (None, false) => {}
    }
    if let Some(allowed) = expect.allowed
        && response["allowed"].as_bool() != Some(allowed)
    {
        let why = match &evaluation.policy_verdict {
            Some(verdict) => format!(
                " (monitor mode: the server allows whatever the policy says; it said {})",
                verdict["status"]["message"].as_str().unwrap_or("allowed")
            ),
            None if !message.is_empty() => format!(" ({message})"),
            None => String::new(),
        };
        failures.push(format!(
            "allowed: expected {allowed}, got {}{why}",
            response["allowed"]
        ));
    }
    if let Some(code) = expect.code
        && response["status"]["code"].as_u64() != Some(u64::from(code))
    {
        failures.push(format!(
            "code: expected {code}, got {}",
            response["status"]["code"]
        ));
    }
    if let Some(part) = &expect.message
        && !message.contains(part.as_str())
    {
        failures.push(format!(
            "message: expected it to contain {part:?}, got {message:?}"
        ));
    }
    if let Some(expected) = &expect.patch
        && evaluation.patch.as_ref() != Some(expected)
    {
        failures.push(format!(
            "patch differs:\n{}",
            diff(expected, evaluation.patch.as_ref())
        ));
    }
    if let Some(expected) = &expect.patched_object
        && evaluation.patched_object.as_ref() != Some(expected)
    {
        failures.push(format!(
            "patched object differs:\n{}",
            diff(expected, evaluation.patched_object.as_ref())
        ));
    }
    if let Some(expected) = &expect.warnings {
        let warnings: Vec<String> = response["warnings"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if &warnings != expected {
            failures.push(format!("warnings: expected {expected:?}, got {warnings:?}"));
        }
    }
    failures
}

/// A line diff of the expected and actual values, pretty-printed.
fn diff(expected: &Value, actual: Option<&Value>) -> String {
    let expected = format!("{expected:#}\n");
    let actual = match actual {
        Some(actual) => format!("{actual:#}\n"),
        None => "(none)\n".to_owned(),
    };
    similar::TextDiff::from_lines(&expected, &actual)
        .unified_diff()
        .header("expected", "actual")
        .to_string()
}
