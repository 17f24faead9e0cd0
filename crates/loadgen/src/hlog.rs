//! The HdrHistogram interval log (`.hlog`, `--hlog FILE`): one latency histogram per second of
//! the measured window, readable by HistogramLogProcessor and HistogramLogAnalyzer. Written with
//! hdrhistogram's `interval_log` module; timestamps are seconds since the window start
//! (`BaseTime`). The histograms hold **microseconds**; HistogramLogProcessor assumes
//! nanoseconds (its default `-outputValueUnitRatio` is 1000000, ns → ms), so pass
//! `-outputValueUnitRatio 1000` to get milliseconds out of it. The `Interval_Max` column is in
//! milliseconds (max µs / 1000), as HdrHistogram's own writer prints it for a ns histogram.

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Writes interval histograms to a file as they arrive.
pub struct HlogWriter {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    header_written: bool,
}

impl std::fmt::Debug for HlogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogWriter").finish_non_exhaustive()
    }
}

impl HlogWriter {
    /// Creates (truncates) the log file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(HlogWriter {
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
            header_written: false,
        })
    }

    fn header(&mut self, window_start: SystemTime) -> anyhow::Result<()> {
        if self.header_written {
            return Ok(());
        }
        IntervalLogWriterBuilder::new()
            .add_comment(
                "echolab loadgen latency log; histogram values in microseconds \
                 (HistogramLogProcessor -outputValueUnitRatio 1000 for milliseconds); \
                 Interval_Max in milliseconds",
            )
            .with_start_time(window_start)
            .with_base_time(window_start)
            .begin_log_with(&mut self.out, &mut self.serializer)?;
        writeln!(
            self.out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        self.header_written = true;
        Ok(())
    }

    /// Appends one interval (`start` relative to `window_start`).
    pub fn write_interval(
        &mut self,
        start: Duration,
        length: Duration,
        window_start: SystemTime,
        latency: &Histogram<u64>,
    ) -> anyhow::Result<()> {
        self.header(window_start)?;
        let mut writer = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(crate::hgrm::VALUE_UNIT_RATIO)
            .begin_log_with(&mut self.out, &mut self.serializer)?;
        writer
            .write_histogram(latency, start, length, None)
            .map_err(|e| anyhow::anyhow!("writing an interval histogram: {e}"))?;
        Ok(())
    }

    /// Flushes the file (writing the header if no interval came).
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.header(SystemTime::now())?;
        self.out.flush().context("flushing the interval log")?;
        Ok(())
    }
}
