//! `policy-server run POLICY --request FILE`: one policy, one request, the answer the
//! server would give. Exit code: 0 allowed, 1 rejected, 2 the evaluation (or the command)
//! failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::session::Session;
use super::{PolicyArgs, async_runtime, exit, request};

#[derive(Debug, Args)]
pub(in crate::cli) struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The request: an AdmissionReview, an AdmissionRequest, or a Kubernetes object (a
    /// CREATE of it is made). JSON or YAML.
    #[arg(long)]
    request: PathBuf,
    /// Print compact JSON, one document per line, instead of pretty JSON.
    #[arg(long)]
    raw: bool,
}

pub(in crate::cli) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let review = request::review_from_file(&args.request)?;
    let entry = args.policy.entry()?;
    let cluster = args.policy.cluster.choice();
    let id = args.policy.id();
    let session = async_runtime()?.block_on(Session::load(
        vec![(id.clone(), entry)],
        &cluster,
        args.policy.how(),
    ))?;
    let evaluation = session.evaluate(&id, &review)?;
    let print = |value: &serde_json::Value| {
        if args.raw {
            println!("{value}");
        } else {
            println!("{value:#}");
        }
    };
    print(&evaluation.review);
    if let Some(object) = &evaluation.patched_object {
        print(object);
    }
    let response = &evaluation.review["response"];
    let allowed = response["allowed"].as_bool() == Some(true);
    let summary = match (evaluation.failed, allowed, &evaluation.patched_object) {
        (true, _, _) => format!(
            "error: {}",
            response["status"]["message"].as_str().unwrap_or_default()
        ),
        (false, true, Some(_)) => "allowed, mutated (the patched object follows the review)".into(),
        (false, true, None) => match &evaluation.policy_verdict {
            Some(verdict) if verdict["allowed"] == false => format!(
                "allowed (monitor mode; the policy rejected it: {})",
                status_of(verdict)
            ),
            _ => "allowed".into(),
        },
        (false, false, _) => format!("rejected {}", status_of(response)),
    };
    eprintln!("{summary}");
    Ok(ExitCode::from(match (evaluation.failed, allowed) {
        (true, _) => exit::ERROR,
        (false, true) => exit::SUCCESS,
        (false, false) => exit::NO,
    }))
}

/// `(code): message` of a response's status.
fn status_of(response: &serde_json::Value) -> String {
    let message = response["status"]["message"].as_str().unwrap_or_default();
    match response["status"]["code"].as_u64() {
        Some(code) => format!("({code}): {message}"),
        None => message.to_owned(),
    }
}
