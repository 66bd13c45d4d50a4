//! Progress bars for long one-shot work, shown only when stderr is a terminal (logs
//! only otherwise).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` documents with a rate, or a hidden bar when not on a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!(
        "{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} docs ({{per_sec}}, eta {{eta}})"
    );
    // The template is a constant apart from `what`, which holds no braces.
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
