//! YAML as this server reads it (policies.yml and cluster snapshot files): YAML 1.2's
//! core schema, as `serde_yaml` read it and as Kubewarden reads the same files, so a
//! setting means what it meant there. A duplicate key is an error; aliases are bounded,
//! so a few hundred bytes cannot expand into gigabytes.

use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, Options};

/// For policies.yml: the library's default budget (64 levels, 250,000 nodes), far above
/// any real policies file.
pub fn config_options() -> Options {
    let mut options = Options::default();
    // `yes`, `on`, `no` and `off` stay strings: YAML 1.2, not 1.1.
    options.strict_booleans = true;
    // `017` and `1_000` stay strings, as serde_yaml (and YAML 1.2) read them.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    // `<<` is an ordinary key, as serde_yaml left it.
    options.merge_keys = MergeKeyPolicy::AsOrdinary;
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options
}

/// For a cluster snapshot of `input_bytes`: an exported cluster can hold many documents
/// and millions of nodes, but never more nodes or events than it has bytes; nesting as
/// deep as Kubernetes objects go.
pub fn snapshot_options(input_bytes: usize) -> Options {
    let mut options = config_options();
    if let Some(budget) = &mut options.budget {
        let scaled = input_bytes.saturating_mul(2).saturating_add(1_000);
        budget.max_depth = 256;
        budget.max_documents = scaled;
        budget.max_nodes = scaled;
        budget.max_events = scaled;
        // The file is already in memory: its size is the bound.
        budget.max_total_scalar_bytes = input_bytes.max(budget.max_total_scalar_bytes);
        budget.max_reader_input_bytes = None;
    }
    options
}

/// Parses one document, with errors as an operator reads them: what is wrong and the line
/// and column, on one line (they end up in a log).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str, options: Options) -> anyhow::Result<T> {
    serde_saphyr::from_str_with_options(text, options).map_err(|e| describe(&e))
}

/// An error from the YAML library, in its user-facing words.
pub fn describe(error: &serde_saphyr::Error) -> anyhow::Error {
    let rendered = error.render_with_options(serde_saphyr::render_options! {
        formatter: &serde_saphyr::UserMessageFormatter,
        snippets: serde_saphyr::SnippetMode::Off,
    });
    anyhow::anyhow!(rendered)
}
