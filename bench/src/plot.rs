//! SVG plots (plotters): lag over time per rate (median and maximum per 100 ms), the lag
//! distribution per rate (as percentile curves), and the throughput backlog trace.

use std::path::Path;

use plotters::prelude::*;

use crate::lag::LagRun;
use crate::stats::quantile;

/// Colours of successive series.
const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// `(t, p50, max)` per 100 ms bucket.
fn buckets(samples: &[(f64, f64)]) -> Vec<(f64, f64, f64)> {
    let mut by: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for &(t, lag) in samples {
        by.entry((t * 10.0) as i64).or_default().push(lag);
    }
    by.into_iter()
        .map(|(b, mut v)| {
            v.sort_by(f64::total_cmp);
            (
                b as f64 / 10.0,
                quantile(&v, 0.5),
                *v.last().unwrap_or(&0.0),
            )
        })
        .collect()
}

/// Lag over time of one rate → `path`.
pub fn lag_over_time(path: &Path, run: &LagRun) -> PlotResult {
    let b = buckets(&run.samples);
    let xmax = b.last().map(|p| p.0 + 0.1).unwrap_or(1.0);
    let ymax = b.iter().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Replication lag over time at {} writes/s", run.rate),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the writer started")
        .y_desc("lag (ms)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(b.iter().map(|p| (p.0, p.1)), BLUE))?
        .label("median per 100 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(b.iter().map(|p| (p.0, p.2)), RED))?
        .label("max per 100 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Lag distribution of every rate (percentile curves) → `path`.
pub fn lag_distribution(path: &Path, runs: &[LagRun]) -> PlotResult {
    let curves: Vec<(u32, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r.samples.iter().map(|s| s.1).collect();
            v.sort_by(f64::total_cmp);
            let pts = (0..=1000)
                .map(|i| {
                    let q = f64::from(i) / 1000.0;
                    (quantile(&v, q.max(0.0001)), q * 100.0)
                })
                .collect();
            (r.rate, pts)
        })
        .collect();
    let xmax = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Replication lag distribution (cumulative)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("lag (ms)")
        .y_desc("% of writes arrived within")
        .draw()?;
    for (i, (rate, pts)) in curves.into_iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, c))?
            .label(format!("{rate} writes/s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Backlog (documents behind) over time at the sustained rate → `path`.
pub fn backlog(path: &Path, rate: f64, trace: &[(f64, f64)]) -> PlotResult {
    let xmax = trace.last().map(|p| p.0 + 0.1).unwrap_or(1.0);
    let ymax = trace.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Backlog at a sustained {rate:.0} writes/s"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("documents not yet on cloud")
        .draw()?;
    chart.draw_series(LineSeries::new(trace.iter().copied(), BLUE))?;
    root.present()?;
    Ok(())
}
