//! Progress bars for long one-shot work, shown only when stderr is a terminal (logs
//! only otherwise).

use std::fmt::Write;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// A bar of `total` documents with a rate, or a hidden bar when not on a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!(
        "{what} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} docs ({{rate}}, eta {{eta}})"
    );
    // `what` is one of our fixed labels (no braces), so the template parses; fall back
    // to the default bar rather than fail a long job over its progress display.
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn Write| {
            let _ = write!(w, "{:.0} docs/s", state.per_sec());
        });
    bar.set_style(style);
    bar
}
