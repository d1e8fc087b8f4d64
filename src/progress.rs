//! Progress bars for long work: drawn on a terminal, hidden otherwise or when quiet.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `prefix`; `unit` names a step ("epoch", or "" for none).
pub fn bar(len: usize, prefix: &str, unit: &str, visible: bool) -> ProgressBar {
    let b = if visible {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    let template = format!("{{prefix}} [{{bar:30}}] {unit} {{pos}}/{{len}} {{msg}} (eta {{eta}})");
    b.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_owned());
    b
}
