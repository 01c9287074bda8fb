//! A one-line progress bar on standard error for long commands (shown only on a terminal).

use std::io::{IsTerminal, Write};

/// Redraws the bar at `done` of `total`.
pub fn bar(done: u64, total: u64) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    const WIDTH: u64 = 40;
    let filled = (done.min(total) * WIDTH / total.max(1)) as usize;
    eprint!(
        "\r[{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    );
    let _ = std::io::stderr().flush();
}

/// Ends the bar's line.
pub fn end_bar() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
