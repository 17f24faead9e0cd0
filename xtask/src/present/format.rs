//! How numbers look in every table, line and picture: rates grouped by thousands
//! (`123,456`), latencies in µs, memory in MiB, and `-` where a figure is missing.

/// `123,456` for a rate; `-` for NaN.
pub fn format_count(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Latency in µs: one decimal below 100, whole numbers above; `-` for NaN.
pub fn format_us(value: f64) -> String {
    if !value.is_finite() {
        "-".into()
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Peak RSS in MiB with one decimal; `-` when unknown.
pub fn format_rss(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

/// CPU µs per message with two decimals; `-` when unknown.
pub fn format_cpu(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{us:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(format_count(1_234_567.4), "1,234,567");
        assert_eq!(format_count(999.0), "999");
        assert_eq!(format_count(f64::NAN), "-");
        assert_eq!(format_us(12.345), "12.3");
        assert_eq!(format_us(1234.4), "1234");
    }
}
