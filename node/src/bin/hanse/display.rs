//! How the command line shows keys and ranges to people.

/// `[start, end)` with printable ASCII as is, other bytes escaped, and empty bounds as
/// -inf and +inf.
pub fn range(start: &[u8], end: &[u8]) -> String {
    let show = |k: &[u8], open: &str| {
        if k.is_empty() {
            open.to_string()
        } else {
            k.escape_ascii().to_string()
        }
    };
    format!("[{}, {})", show(start, "-inf"), show(end, "+inf"))
}
