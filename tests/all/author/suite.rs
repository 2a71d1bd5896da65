//! `policy-server test`: suites of cases, their report and JUnit XML.

use policy_server_e2e::build::repo_root;
use policy_server_e2e::wasm;

use super::{author, text};

#[test]
fn the_examples_test_file_passes_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let output = author(&[
        "test",
        "policy-tests.yml",
        "--junit",
        &junit.display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    let cases = stdout
        .lines()
        .filter(|line| line.starts_with("PASS "))
        .count();
    assert!(cases >= 14, "{stdout}");
    assert!(
        stdout.contains(&format!("{cases} passed, 0 failed (1 file)")),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(&format!("tests=\"{cases}\"")), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
}

#[test]
fn a_failing_case_shows_what_differs_and_fails_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples");
    let suite = dir.path().join("suite.yml");
    std::fs::write(
        &suite,
        format!(
            "policies: {}\ncases:\n\
             - name: expects the wrong label\n  policy: default-labels\n  request: {}\n  \
             expect:\n    allowed: true\n    patchedObject:\n      apiVersion: v1\n      kind: Pod\n      \
             metadata: {{name: web, namespace: default, labels: {{team: platform}}}}\n\
             - name: expects an allowance\n  policy: deny-latest-tag\n  request: {}\n  \
             expect: {{allowed: true}}\n\
             - name: names a module that is not there\n  policy: no-such-policy.wasm\n  \
             request: {}\n  expect: {{allowed: false}}\n\
             - name: expects the trap it gets\n  policy: {}\n  settings: {{behaviour: trap}}\n  \
             request: {}\n  expect: {{error: trapped}}\n",
            examples.join("policies.yml").display(),
            examples.join("requests/pod-latest.json").display(),
            examples.join("requests/pod-latest.json").display(),
            examples.join("requests/pod-latest.json").display(),
            wasm().misbehaving.display(),
            examples.join("requests/pod-latest.json").display(),
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let output = author(&[
        "test",
        &suite.display().to_string(),
        "--junit",
        &junit.display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("FAIL expects the wrong label"), "{stdout}");
    assert!(stdout.contains("patched object differs"), "{stdout}");
    assert!(stdout.contains("-      \"team\": \"platform\""), "{stdout}");
    assert!(
        stdout.contains("+      \"team\": \"unassigned\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("allowed: expected true, got false (Images must be pinned"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL names a module that is not there"),
        "a rejection expected of a policy is not met by a failure to load it: {stdout}"
    );
    assert!(stdout.contains("is neither a policy of"), "{stdout}");
    assert!(stdout.contains("PASS expects the trap it gets"), "{stdout}");
    assert!(stdout.contains("1 passed, 3 failed"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"3\""), "{xml}");

    // A file that cannot run is reported, the others still run, and the exit code says so.
    let output = author(&["test", "no-such-file.yml", "policy-tests.yml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("ERROR no-such-file.yml: cannot read"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" passed, 0 failed (2 files, 1 could not run)"),
        "{stdout}"
    );
}
