//! Sizes and durations as people type them on the command line (`16MiB`, `90s`, `10m`).

use std::time::Duration;

/// `text` as a number and the unit after it (`"16 MiB"` -> `(16, "mib")`), or why not.
fn number_and_unit(text: &str, example: &str) -> Result<(u64, String), String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number with a unit like {example}"))?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// A size like `16MiB`, `64KiB`, `1GiB`, `16M` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = number_and_unit(text, "16MiB")?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{}` is too large", text.trim()))
}

/// A duration like `500ms`, `90s`, `10m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = number_and_unit(text, "60s")?;
    match unit.as_str() {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" | "min" => Ok(Duration::from_secs(number.saturating_mul(60))),
        other => Err(format!("unknown duration unit `{other}`; use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").unwrap_err().contains("parsecs"));
    }

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("2h").unwrap_err().contains("`h`"));
    }
}
