//! The SVG plots of a run directory (plotters), drawn from its records.
//!
//! Bench runs get `throughput.svg` (median messages/s per server and connection count with
//! order-statistic interval bars, coverage in the caption), `latency_c<N>.svg` (the latency
//! percentile spectrum per connection count, HdrHistogram style: log latency against "nines")
//! and `cpu_per_message.svg` (server CPU µs per message). Capacity runs get `capacity.svg`
//! (latency against offered load, with the SLO).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::format::format_count;
use crate::record::capacity::{CapacityFile, Step};
use crate::record::loadgen_report::merged_histogram;
use crate::record::summary::CellSummary;
use crate::record::trial::TrialsFile;
use crate::stats::min_max;

/// A line of a latency spectrum: its label and its histogram.
pub type NamedHistogram = (String, hdrhistogram::Histogram<u64>);

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;

fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[index % COLORS.len()]
}

fn plot_error(error: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("drawing: {error:?}")
}

/// A white `WIDTH`×`HEIGHT` SVG canvas at `path`.
fn canvas(path: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    Ok(root)
}

/// The chart frame every plot uses: a caption and room for the axis labels.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    title_size: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", title_size))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80);
    builder
}

/// A legend entry that is a short line in `style`.
fn legend_line(
    style: impl Into<ShapeStyle>,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> + 'static {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style)
}

/// A line series in the `index`-th color, with its legend entry.
fn draw_line<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    index: usize,
    name: String,
    points: Vec<(f64, f64)>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points, color(index).stroke_width(2)))
        .map_err(plot_error)?
        .label(name)
        .legend(legend_line(color(index).stroke_width(2)));
    Ok(())
}

/// Draws the legend (upper left, on a light background) and writes the file.
fn finish<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    root: &DrawingArea<SVGBackend<'b>, Shift>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Server names in first-seen order.
fn server_names(summaries: &[CellSummary]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for summary in summaries {
        if !names.contains(&summary.cell.server) {
            names.push(summary.cell.server.clone());
        }
    }
    names
}

/// The bar group of a cell: (size, connections, workload).
fn group_key(summary: &CellSummary) -> (u32, u32, Option<&str>) {
    let cell = &summary.cell;
    (cell.size_bytes, cell.connections, cell.workload.as_deref())
}

/// Why a cell's bar is not the server's figure: `invalid` (loadgen said so), `starved`
/// (a connection got no echo for too long), `failed` (a trial produced nothing); `None` when
/// the bar stands.
pub fn bar_flag(summary: &CellSummary) -> Option<&'static str> {
    if summary.invalid_trials > 0 {
        Some("invalid")
    } else if summary.starved_connections.unwrap_or(0) > 0 {
        Some("starved")
    } else if summary.failed_trials > 0 {
        Some("failed")
    } else {
        None
    }
}

/// Grouped bar chart: one group per connection count (for the first size, or every size with
/// a `size` suffix), one bar per server; `interval` draws a vertical bar from low to high. A
/// cell [`bar_flag`] flags is drawn pale, outlined and labelled with the flag, so a picture
/// never shows a loadgen-bound bar as the server's speed.
fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    summaries: &[CellSummary],
    value: &dyn Fn(&CellSummary) -> Option<f64>,
    interval: &dyn Fn(&CellSummary) -> Option<(f64, f64)>,
) -> Result<()> {
    let flagged = summaries.iter().any(|s| bar_flag(s).is_some());
    let title = if flagged {
        format!("{title}; pale, labelled bars: not the server's figure")
    } else {
        title.to_string()
    };
    let servers = server_names(summaries);
    let mut groups: Vec<(u32, u32, Option<&str>)> = Vec::new();
    for summary in summaries {
        let key = group_key(summary);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let several_sizes = groups.iter().any(|g| g.0 != groups[0].0);
    let top = summaries
        .iter()
        .filter_map(|s| {
            let high = interval(s).map(|(_, high)| high);
            match (value(s), high) {
                (Some(v), Some(h)) => Some(v.max(h)),
                (v, h) => v.or(h),
            }
        })
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    let root = canvas(path)?;
    let group_labels: Vec<String> = groups
        .iter()
        .map(|&(size, connections, workload)| {
            if let Some(workload) = workload {
                format!("{workload} c={connections}")
            } else if several_sizes {
                format!("{connections} conns, {size} B")
            } else {
                format!(
                    "{connections} connection{}",
                    if connections == 1 { "" } else { "s" }
                )
            }
        })
        .collect();
    let label_of = move |x: &f64| -> String {
        let group = x.floor();
        if (x - group - 0.5).abs() < 1e-6 && group >= 0.0 {
            group_labels
                .get(group as usize)
                .cloned()
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut chart = frame(&root, &title, if flagged { 18 } else { 22 })
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&label_of)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format_count(*y))
        .draw()
        .map_err(plot_error)?;
    let slot = 0.8 / servers.len().max(1) as f64;
    for (server_index, server) in servers.iter().enumerate() {
        let style = color(server_index).filled();
        let mut bars = Vec::new();
        let mut pale_bars = Vec::new();
        let mut labels = Vec::new();
        let mut whiskers = Vec::new();
        for summary in summaries.iter().filter(|s| &s.cell.server == server) {
            let Some(group) = groups.iter().position(|g| *g == group_key(summary)) else {
                continue;
            };
            let left = group as f64 + 0.1 + slot * server_index as f64;
            let center = left + slot / 2.0;
            if let Some(v) = value(summary).filter(|v| v.is_finite()) {
                let corners = [(left + slot * 0.1, 0.0), (left + slot * 0.9, v)];
                match bar_flag(summary) {
                    None => bars.push(Rectangle::new(corners, style)),
                    Some(flag) => {
                        pale_bars.push(Rectangle::new(
                            corners,
                            color(server_index).mix(0.25).filled(),
                        ));
                        pale_bars
                            .push(Rectangle::new(corners, color(server_index).stroke_width(2)));
                        labels.push(Text::new(
                            flag,
                            (left + slot * 0.1, v),
                            ("sans-serif", 14).into_font().color(&BLACK),
                        ));
                    }
                }
            }
            if let Some((low, high)) =
                interval(summary).filter(|(l, h)| l.is_finite() && h.is_finite())
            {
                let cap = slot * 0.2;
                whiskers.push(PathElement::new(
                    vec![(center, low), (center, high)],
                    BLACK.stroke_width(2),
                ));
                whiskers.push(PathElement::new(
                    vec![(center - cap, low), (center + cap, low)],
                    BLACK.stroke_width(2),
                ));
                whiskers.push(PathElement::new(
                    vec![(center - cap, high), (center + cap, high)],
                    BLACK.stroke_width(2),
                ));
            }
        }
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(server.clone())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color(server_index).filled())
            });
        chart.draw_series(pale_bars).map_err(plot_error)?;
        chart.draw_series(whiskers).map_err(plot_error)?;
        chart.draw_series(labels).map_err(plot_error)?;
    }
    finish(&mut chart, &root)
}

/// "Nines" of a quantile: 0.9 → 1, 0.99 → 2, 0.999 → 3.
fn nines(quantile: f64) -> f64 {
    -(1.0 - quantile.min(0.999_999)).log10()
}

/// Latency percentile spectrum of the given histograms (one line each).
pub fn draw_spectrum(path: &Path, title: &str, lines: &[NamedHistogram]) -> Result<()> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (name, histogram) in lines {
        if histogram.is_empty() {
            continue;
        }
        let mut points = Vec::new();
        for value in histogram.iter_quantiles(4) {
            let q = value.quantile_iterated_to();
            if q >= 0.999_99 {
                break;
            }
            points.push((
                nines(q),
                (histogram.highest_equivalent(value.value_iterated_to()) as f64).max(1.0),
            ));
        }
        points.push((nines(0.999_99), (histogram.max() as f64).max(1.0)));
        series.push((name.clone(), points));
    }
    if series.is_empty() {
        bail!("no latency histograms to draw for {title}");
    }
    let (low, high) = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold((f64::INFINITY, 0.0_f64), |(l, h), v| (l.min(v), h.max(v)));
    let root = canvas(path)?;
    let mut chart = frame(&root, title, 22)
        .build_cartesian_2d(0.0..5.25, ((low * 0.8).max(0.5)..high * 1.5).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x: &f64| {
            let percent = 100.0 * (1.0 - 10f64.powf(-x));
            match x.round() as i32 {
                0 => "0%".to_string(),
                n if (x - x.round()).abs() < 1e-6 => {
                    format!("{percent:.*}%", (n - 2).max(0) as usize)
                }
                _ => String::new(),
            }
        })
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .y_label_formatter(&|y| format_count(*y))
        .draw()
        .map_err(plot_error)?;
    for (index, (name, points)) in series.into_iter().enumerate() {
        draw_line(&mut chart, index, name, points)?;
    }
    finish(&mut chart, &root)
}

/// `capacity.svg`: latency against offered load for a capacity search, with the SLO limits as
/// lines and failed steps as crosses. Steps the loadgen could not measure honestly (`no vote`)
/// are left out (their latency is partly the loadgen's), unless there is nothing else to draw.
pub fn capacity_plot(run_dir: &Path, file: &CapacityFile) -> Result<()> {
    let path = run_dir.join("capacity.svg");
    let voted: Vec<Step> = file
        .steps
        .iter()
        .filter(|s| s.counted_as.as_deref() != Some("no vote"))
        .cloned()
        .collect();
    let mut steps = if voted.iter().any(|s| s.latency_us.get("p99").is_some()) {
        voted
    } else {
        file.steps.clone()
    };
    steps.sort_by_key(|s| s.target_per_s);
    let value = |step: &Step, source: Option<&serde_json::Value>, key: &str| {
        source
            .and_then(|v| v.get(key))
            .and_then(serde_json::Value::as_f64)
            .filter(|v| *v > 0.0)
            .map(|v| (step.target_per_s as f64, v))
    };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for key in ["p50", "p99", "p999"] {
        let points: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| value(s, Some(&s.latency_us), key))
            .collect();
        if !points.is_empty() {
            series.push((format!("{key} (corrected)"), points));
        }
    }
    let service: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| value(s, s.service_time_us.as_ref(), "p99"))
        .collect();
    if !service.is_empty() {
        series.push(("p99 service time".into(), service));
    }
    let rates: Vec<f64> = steps.iter().map(|s| s.target_per_s as f64).collect();
    let (min_rate, max_rate) = min_max(&rates);
    let mut latencies: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .collect();
    latencies.extend(file.slo.latency.iter().map(|c| c.limit_us));
    let (low, high) = min_max(&latencies);
    if !min_rate.is_finite() || !low.is_finite() {
        bail!("no capacity steps with latency to draw");
    }
    let root = canvas(&path)?;
    let title = format!(
        "{}: latency vs offered load (SLO {}){}",
        file.server.name,
        file.slo.text,
        file.capacity_per_s
            .map(|c| format!(", capacity {} msg/s", format_count(c as f64)))
            .unwrap_or_default()
    );
    let mut chart = frame(&root, &title, 20)
        .build_cartesian_2d(
            (min_rate * 0.8..max_rate * 1.25).log_scale(),
            ((low * 0.7).max(0.5)..high * 2.0).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("offered load (msg/s, log scale)")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| format_count(*x))
        .y_label_formatter(&|y| format_count(*y))
        .draw()
        .map_err(plot_error)?;
    for (index, (name, points)) in series.into_iter().enumerate() {
        draw_line(&mut chart, index, name, points.clone())?;
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color(index).filled())),
            )
            .map_err(plot_error)?;
    }
    for clause in &file.slo.latency {
        chart
            .draw_series(LineSeries::new(
                vec![
                    (min_rate * 0.8, clause.limit_us),
                    (max_rate * 1.25, clause.limit_us),
                ],
                RED.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(format!(
                "SLO {} ≤ {} µs",
                clause.key,
                format_count(clause.limit_us)
            ))
            .legend(legend_line(RED));
    }
    // Failed steps as crosses near the x axis.
    let fails: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| !s.pass)
        .map(|s| (s.target_per_s as f64, (low * 0.7).max(0.5) * 1.1))
        .collect();
    chart
        .draw_series(
            fails
                .into_iter()
                .map(|p| Cross::new(p, 5, RED.stroke_width(2))),
        )
        .map_err(plot_error)?;
    finish(&mut chart, &root)
}

/// Every plot of a bench run directory (`throughput.svg`, `cpu_per_message.svg` when the CPU was
/// measured, `latency_c<N>[_s<B>].svg`); returns their file names.
pub fn bench_plots(
    run_dir: &Path,
    trials: &TrialsFile,
    summaries: &[CellSummary],
) -> Result<Vec<String>> {
    let mut images = Vec::new();
    let coverage = summaries
        .iter()
        .filter(|s| s.trials > 1)
        .map(|s| s.messages_per_s_ci_coverage)
        .fold(f64::INFINITY, f64::min);
    let caption = if coverage.is_finite() {
        format!(
            "throughput: median of trials, bars = {:.0}% CI of median (order statistics)",
            (coverage * 100.0).floor()
        )
    } else {
        "throughput: median of trials".to_string()
    };
    grouped_bars(
        &run_dir.join("throughput.svg"),
        &caption,
        "messages/s",
        summaries,
        &|s| (s.trials > 0).then_some(s.messages_per_s_median),
        &|s| (s.trials > 1).then_some((s.messages_per_s_ci95.low, s.messages_per_s_ci95.high)),
    )?;
    images.push("throughput.svg".to_string());
    if summaries
        .iter()
        .any(|s| s.server_cpu_per_message_us.is_some())
    {
        grouped_bars(
            &run_dir.join("cpu_per_message.svg"),
            "server CPU per message (user+system, median of trials)",
            "µs CPU / message",
            summaries,
            &|s| s.server_cpu_per_message_us,
            &|_| None,
        )?;
        images.push("cpu_per_message.svg".to_string());
    }
    // Latency spectrum: one plot per (size, connections), the trials of a cell merged exactly.
    let mut merged: BTreeMap<(Option<String>, u32, u32), Vec<NamedHistogram>> = BTreeMap::new();
    for cell in &trials.cells {
        let reports = trials
            .trials
            .iter()
            .filter(|r| &r.cell == cell && r.figures.is_some())
            .map(|r| run_dir.join(&r.loadgen_json));
        if let Some(total) = merged_histogram(reports, "latency_us")? {
            merged
                .entry((cell.workload.clone(), cell.size_bytes, cell.connections))
                .or_default()
                .push((cell.server.clone(), total));
        }
    }
    for ((workload, size, connections), lines) in merged {
        let name = match &workload {
            Some(workload) => format!("latency_{workload}_c{connections}_s{size}.svg"),
            None if trials.cells.iter().any(|c| c.size_bytes != size) => {
                format!("latency_c{connections}_s{size}.svg")
            }
            None => format!("latency_c{connections}.svg"),
        };
        let what = workload.map_or(String::new(), |w| format!("{w}, "));
        draw_spectrum(
            &run_dir.join(&name),
            &format!(
                "latency percentiles, {what}{connections} connections, {size} B (all trials merged)"
            ),
            &lines,
        )?;
        images.push(name);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::{cell, record};
    use crate::summary::summarize;

    #[test]
    fn bars_that_are_not_the_servers_figure_are_labelled() {
        let cells = vec![cell("pool", 16), cell("c-epoll", 16)];
        let mut records = Vec::new();
        for trial in 0..5 {
            records.push(record(cells[0].clone(), trial, 150.0, 10.0, 0));
            let mut saturated = record(cells[1].clone(), trial, 200.0, 10.0, 0);
            if let Some(figures) = saturated.figures.as_mut() {
                figures.valid = Some(false);
            }
            records.push(saturated);
        }
        let summaries = summarize(&cells, &records);
        assert_eq!(bar_flag(&summaries[0]), None);
        assert_eq!(bar_flag(&summaries[1]), Some("invalid"));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("throughput.svg");
        let value = |s: &CellSummary| Some(s.messages_per_s_median);
        grouped_bars(
            &path,
            "throughput",
            "messages/s",
            &summaries,
            &value,
            &|_| None,
        )
        .expect("draws");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("\ninvalid\n</text>"), "{svg}");
        assert!(svg.contains("not the server"), "{svg}");
        // Without a flagged cell: no label, no caption note.
        grouped_bars(
            &path,
            "throughput",
            "messages/s",
            &summaries[..1],
            &value,
            &|_| None,
        )
        .expect("draws");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(!svg.contains("\ninvalid\n</text>") && !svg.contains("not the server"));
    }
}
