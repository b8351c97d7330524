//! Writes a run's results: JSON summary, HdrHistogram percentile text, and SVG charts.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use serde::Serialize;

/// Latencies are recorded in microseconds and reported in milliseconds.
pub const MICROS_PER_MS: f64 = 1000.0;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("drawing {path}: {message}")]
    Plot { path: String, message: String },
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A new latency histogram: 1 µs to 1 hour at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; a failure here is a programming error.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The usual latency figures, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / MICROS_PER_MS;
        LatencySummary {
            count: histogram.len(),
            min_ms: ms(histogram.min()),
            mean_ms: histogram.mean() / MICROS_PER_MS,
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One second of a run, by receive time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SecondStats {
    /// Seconds since the run started; this row covers [second, second + 1).
    pub second: u64,
    /// Messages handed to the producer in this second.
    pub sent: u64,
    /// First outputs received in this second.
    pub received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n").map_err(io_error(path))?;
    out.flush().map_err(io_error(path))
}

/// HdrHistogram's `outputPercentileDistribution` text (what its plotter reads), with values
/// scaled from microseconds to milliseconds.
pub fn write_hgrm<W: Write>(out: &mut W, histogram: &Histogram<u64>) -> io::Result<()> {
    let digits = usize::from(histogram.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / MICROS_PER_MS;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            writeln!(
                out,
                "{value:12.digits$} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            )?;
        } else {
            writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}")?;
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            histogram.mean() / MICROS_PER_MS,
            histogram.stdev() / MICROS_PER_MS,
            histogram.max() as f64 / MICROS_PER_MS,
        )
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    )
}

/// HdrHistogram's sub-bucket count for `sigfig` digits (not exposed by the crate): the
/// power of two that resolves one part in 2 * 10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2.0 * 10f64.powi(i32::from(sigfig));
    1u64 << (largest.log2().ceil() as u32)
}

pub fn write_hgrm_file(path: &Path, histogram: &Histogram<u64>) -> Result<(), ReportError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::new(file);
    write_hgrm(&mut out, histogram).map_err(io_error(path))?;
    out.flush().map_err(io_error(path))
}

/// Points of the percentile curve: (1/(1-p), latency ms), the x axis HdrHistogram plots use.
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(5)
        .filter(|step| step.quantile_iterated_to() < 1.0)
        .map(|step| {
            (
                1.0 / (1.0 - step.quantile_iterated_to()),
                step.value_iterated_to() as f64 / MICROS_PER_MS,
            )
        })
        .collect()
}

/// `1/(1-p)` as a percentile label: 10 -> "90%", 1000 -> "99.9%".
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".to_owned();
    }
    let percent = 100.0 * (1.0 - 1.0 / x);
    let text = format!("{percent:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// A line for a chart: its name and points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

fn plot_error(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Plot {
        path: path.display().to_string(),
        message,
    }
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Latency by percentile, log-scaled over 1/(1-p) so the tail gets the room it deserves.
pub fn plot_percentiles(
    path: &Path,
    title: &str,
    curves: &[Series<'_>],
) -> Result<(), ReportError> {
    let fail = plot_error(path);
    let max_x = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(100.0f64, f64::max);
    let x_end = 10f64.powf(max_x.log10().ceil());
    let max_y = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..x_end).log_scale(), 0f64..max_y)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, curve) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(curve.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// Lines over a linear x axis, e.g. messages per second or p99 per second of a run.
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Series<'_>],
) -> Result<(), ReportError> {
    let fail = plot_error(path);
    let points = || lines.iter().flat_map(|l| l.points.iter());
    let max_x = points().map(|p| p.0).fold(1.0f64, f64::max);
    let min_x = points().map(|p| p.0).fold(max_x, f64::min).min(0.0);
    let max_y = points()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(min_x..max_x, 0f64..max_y)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, line) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&point| Circle::new(point, 2, color.filled())),
            )
            .map_err(|e| fail(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// The three charts of a run: percentile curve, throughput and latency per second.
pub fn plot_run(
    dir: &Path,
    title: &str,
    histogram: &Histogram<u64>,
    series: &[SecondStats],
) -> Result<(), ReportError> {
    plot_percentiles(
        &dir.join("latency-percentiles.svg"),
        &format!("End-to-end latency by percentile: {title}"),
        &[Series {
            name: "end-to-end",
            points: percentile_curve(histogram),
        }],
    )?;
    let column = |f: fn(&SecondStats) -> f64| -> Vec<(f64, f64)> {
        series.iter().map(|s| (s.second as f64, f(s))).collect()
    };
    plot_lines(
        &dir.join("throughput.svg"),
        &format!("Throughput per second: {title}"),
        "seconds since start",
        "messages / s",
        &[
            Series {
                name: "sent",
                points: column(|s| s.sent as f64),
            },
            Series {
                name: "received",
                points: column(|s| s.received as f64),
            },
        ],
    )?;
    plot_lines(
        &dir.join("latency-over-time.svg"),
        &format!("Latency of outputs received each second: {title}"),
        "seconds since start",
        "latency (ms)",
        &[
            Series {
                name: "p99",
                points: column(|s| s.p99_ms),
            },
            Series {
                name: "p50",
                points: column(|s| s.p50_ms),
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut histogram = latency_histogram();
        for micros in 1..=10_000u64 {
            histogram.record(micros).expect("in range");
        }
        histogram
    }

    #[test]
    fn summary_reads_percentiles_in_ms() {
        let summary = LatencySummary::of(&sample());
        assert_eq!(summary.count, 10_000);
        assert!((summary.p50_ms - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 9.9).abs() < 0.01, "{summary:?}");
        assert!((summary.max_ms - 10.0).abs() < 0.01, "{summary:?}");
        assert_eq!(LatencySummary::of(&latency_histogram()).count, 0);
    }

    #[test]
    fn hgrm_is_the_standard_text_format() {
        let mut text = Vec::new();
        write_hgrm(&mut text, &sample()).expect("write to vec");
        let text = String::from_utf8(text).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(
            lines
                .next()
                .map(str::split_whitespace)
                .map(Iterator::collect::<Vec<_>>),
            Some(vec![
                "Value",
                "Percentile",
                "TotalCount",
                "1/(1-Percentile)"
            ])
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                l.split_whitespace()
                    .map(|f| f.parse::<f64>().expect("numeric column"))
                    .collect()
            })
            .collect();
        assert!(rows.len() > 20);
        let last = rows.last().expect("rows");
        assert_eq!(last.len(), 3, "the 100% row has no 1/(1-p)");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!((last[0] - 10.0).abs() < 0.01);
        for pair in rows.windows(2) {
            assert!(pair[0][0] <= pair[1][0] && pair[0][1] <= pair[1][1]);
            assert!(pair[0][2] <= pair[1][2]);
        }
        let median = rows.iter().find(|r| r[1] >= 0.5).expect("median row");
        assert!((median[0] - 5.0).abs() < 0.01);
        assert!((median[3] - 2.0).abs() < 1e-9);
        // Max is the highest value equivalent to 10 000 µs at 3 digits, as in Java.
        assert!(text.contains("#[Max     =       10.007, Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
        assert!(text
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("#[Buckets")));
    }

    #[test]
    fn percentile_labels_read_naturally() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1e6), "99.9999%");
    }

    #[test]
    fn charts_are_written_as_svg() {
        let dir = tempfile::tempdir().expect("temp dir");
        let series: Vec<SecondStats> = (0..5)
            .map(|second| SecondStats {
                second,
                sent: 1000,
                received: 990 + second,
                p50_ms: 6.0,
                p99_ms: 11.0 + second as f64,
                max_ms: 20.0,
            })
            .collect();
        plot_run(dir.path(), "test", &sample(), &series).expect("plots");
        for name in [
            "latency-percentiles.svg",
            "throughput.svg",
            "latency-over-time.svg",
        ] {
            let svg = std::fs::read_to_string(dir.path().join(name)).expect("svg written");
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{name}");
            assert!(
                svg.contains("latency") || svg.contains("messages"),
                "{name}"
            );
        }
        // An empty run still draws (empty) charts rather than failing.
        plot_run(dir.path(), "empty", &latency_histogram(), &[]).expect("plots");
    }
}
