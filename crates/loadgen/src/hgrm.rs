//! The HdrHistogram percentile distribution text format (`.hgrm`, `--hgrm FILE`): what
//! HdrHistogram's `outputPercentileDistribution` prints and its online plotter reads. The
//! histogram holds microseconds; the file's values are **milliseconds** (µs / 1000, the
//! `outputValueUnitScalingRatio` of 1000 that wrk2 uses), because the plotter
//! (hdrhistogram.github.io/HdrHistogram/plotFiles.html) labels its axis in milliseconds. Three
//! decimals keep microsecond resolution.

use hdrhistogram::Histogram;
use std::io::{self, Write};

/// Microseconds per millisecond: the value scaling ratio of the file.
pub const VALUE_UNIT_RATIO: f64 = 1000.0;

/// Ticks per half distance to 100%, as HdrHistogram's default output uses.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes the percentile distribution of `h` (µs) in the HdrHistogram `.hgrm` format, values in
/// milliseconds.
pub fn write_hgrm(h: &Histogram<u64>, w: &mut impl Write) -> io::Result<()> {
    let digits = usize::from(h.sigfig());
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / VALUE_UNIT_RATIO;
            if q < 1.0 {
                writeln!(
                    w,
                    "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(w, "{value:12.digits$} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / VALUE_UNIT_RATIO, h.stdev() / VALUE_UNIT_RATIO)
    };
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    writeln!(
        w,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        w,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        h.max() as f64 / VALUE_UNIT_RATIO,
        h.len()
    )?;
    writeln!(
        w,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn hgrm_lists_percentiles_up_to_the_max() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        let data: Vec<Vec<&str>> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(data.len() > 20);
        // 1 µs is 0.001 ms.
        assert_eq!(data[0][0], "0.001");
        let last = data.last().unwrap();
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        assert!(
            text.contains("#[Max     =        1.000, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048"), "{text}");
    }
}
