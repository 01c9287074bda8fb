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

/// A byte count in the largest binary unit that keeps it at least 1 (`1.5 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_pick_the_largest_unit() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(16 << 20), "16.0 MiB");
    }
}
