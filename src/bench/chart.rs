//! `--chart FILE.svg|FILE.png`: a bar chart of a report, one bar per measured system (median,
//! with a min–max whisker), berth's container wall, berth's microVM wall and the peers in
//! their own colours, titled with the machine and the date. Density reports get a second
//! panel with the memory per sandbox.
//!
//! plotters draws it. Its text layout needs a TrueType font: the system's (DejaVu Sans where
//! installed, else any .ttf under /usr/share/fonts), or BERTH_CHART_FONT.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, Row};
use super::{BenchError, Summary, Wall};

const CONTAINER: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const VM: RGBColor = RGBColor(0xe0, 0x7b, 0x10);
const PEER: RGBColor = RGBColor(0x8c, 0x8c, 0x8c);

/// Checks, before any measuring, that a chart can be drawn to `path`: SVG or PNG by its
/// extension, with a font for the labels. True for SVG.
pub fn check(path: &Path) -> Result<bool, BenchError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let svg = match ext.as_deref() {
        Some("svg") => true,
        Some("png") => false,
        _ => return Err(BenchError::ChartFormat(path.to_path_buf())),
    };
    load_font()?;
    Ok(svg)
}

/// Draws `report` to `path`; the extension picks SVG or PNG.
pub fn draw(report: &Report, path: &Path) -> Result<(), BenchError> {
    let svg = check(path)?;
    let bars = report.measured().count().max(1);
    let density = report.benchmark == "density";
    let width = if density { 1400 } else { 1000 };
    let height = 130 + 44 * bars as u32;
    let fail = |e: String| BenchError::Chart {
        path: path.to_path_buf(),
        reason: e,
    };
    if svg {
        let root = SVGBackend::new(path, (width, height)).into_drawing_area();
        paint(report, &root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    } else {
        let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
        paint(report, &root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

fn paint<DB: DrawingBackend>(report: &Report, root: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(&report.title(), ("sans-serif", 17))
        .map_err(err)?;
    let rows: Vec<(&Row, Summary, Option<Summary>)> = report
        .measured()
        .map(|(row, m, s)| {
            let mem = m
                .density
                .as_ref()
                .and_then(|d| Summary::of(&d.pss_kib))
                .map(|p| Summary {
                    median: p.median / 1024.0,
                    min: p.min / 1024.0,
                    max: p.max / 1024.0,
                });
            (row, s, mem)
        })
        .collect();
    if report.benchmark == "density" {
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        let times: Vec<_> = rows.iter().map(|(r, s, _)| (*r, *s)).collect();
        panel(
            &left,
            &times,
            "start of one sandbox, ms (median, min–max) — blue: container, orange: microVM, grey: peers",
            "ms",
        )?;
        let mem: Vec<_> = rows
            .iter()
            .filter_map(|(r, _, m)| m.map(|m| (*r, m)))
            .collect();
        panel(&right, &mem, "memory per idle sandbox, MiB PSS", "MiB")?;
    } else {
        let times: Vec<_> = rows.iter().map(|(r, s, _)| (*r, *s)).collect();
        panel(
            &root,
            &times,
            "start + exit of `true`, ms (median, min–max) — blue: berth container, orange: berth microVM, grey: peers",
            "ms",
        )?;
    }
    Ok(())
}

/// One horizontal bar chart: a bar per row at its median, a whisker from min to max.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[(&Row, Summary)],
    caption: &str,
    unit: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = rows.len().max(1);
    let top = rows.iter().map(|(_, s)| s.max).fold(0.0, f64::max);
    let x_max = if top > 0.0 { top * 1.22 } else { 1.0 };
    let label_width = rows
        .iter()
        .map(|(r, _)| r.name.chars().count())
        .max()
        .unwrap_or(10) as u32
        * 7
        + 16;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(label_width.min(area.dim_in_pixel().0 / 2))
        .build_cartesian_2d(0.0..x_max, (0..n).into_segmented())
        .map_err(err)?;
    // The first row at the top: segment 0 is drawn at the bottom.
    let slot = |i: usize| n - 1 - i;
    let names: Vec<String> = rows.iter().rev().map(|(r, _)| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    for (i, (row, s)) in rows.iter().enumerate() {
        let color = match (row.berth, row.wall) {
            (true, Wall::Container) => CONTAINER,
            (true, Wall::Vm) => VM,
            (false, _) => PEER,
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(slot(i))),
                (s.median, SegmentValue::Exact(slot(i) + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(8, 8, 0, 0);
        let center = || SegmentValue::CenterOf(slot(i));
        let whisker = BLACK.stroke_width(1);
        chart.draw_series(std::iter::once(bar)).map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(s.min, center()), (s.max, center())],
                whisker,
            )))
            .map_err(err)?;
        for end in [s.min, s.max] {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((end, center()))
                        + PathElement::new(vec![(0, -6), (0, 6)], whisker),
                ))
                .map_err(err)?;
        }
        let label = if s.median >= 100.0 {
            format!("{:.0}", s.median)
        } else {
            format!("{:.2}", s.median)
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((s.max, center()))
                    + Text::new(label, (8, -7), ("sans-serif", 12).into_font()),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// Registers a TrueType font for plotters' "sans-serif" (once per process).
fn load_font() -> Result<(), BenchError> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        let Some(path) = find_font() else {
            return false;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(BenchError::NoFont)
    }
}

fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CHART_FONT") {
        return Some(PathBuf::from(p));
    }
    let known = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    ];
    if let Some(p) = known.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(p);
    }
    // Any TrueType font, breadth first.
    let mut dirs = vec![PathBuf::from("/usr/share/fonts")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Measured;
    use crate::bench::Machine;

    fn report() -> Report {
        let row = |name: &str, wall, berth, t: &[f64]| Row {
            name: name.into(),
            wall,
            berth,
            command: String::new(),
            result: Ok(Measured {
                times_ms: t.to_vec(),
                ..Default::default()
            }),
            note: None,
        };
        Report {
            benchmark: "startup",
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                kernel: "6.1.0".into(),
                memory_mib: 1024,
                available_mib: 512,
                kvm: "kvm".into(),
            },
            date: "2026-12-01T08:00:00Z".into(),
            image: "busybox".into(),
            runs: 3,
            warmups: 1,
            rows: vec![
                row(
                    "berth container",
                    Wall::Container,
                    true,
                    &[20.0, 25.0, 30.0],
                ),
                row("berth microVM", Wall::Vm, true, &[300.0, 320.0, 410.0]),
                row(
                    "podman (runc, overlay)",
                    Wall::Container,
                    false,
                    &[150.0, 160.0, 170.0],
                ),
            ],
        }
    }

    #[test]
    fn charts_come_out_as_svg_and_png_with_the_systems_named() {
        if find_font().is_none() {
            crate::testing::skip(
                "no TrueType font on this machine (apt-get install fonts-dejavu-core)",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("c.svg");
        draw(&report(), &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..60.min(text.len())]);
        for name in [
            "berth container",
            "berth microVM",
            "podman (runc, overlay)",
            "Test CPU",
        ] {
            assert!(text.contains(name), "{name} missing from the SVG");
        }
        let png = dir.path().join("c.png");
        draw(&report(), &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let e = draw(&report(), &dir.path().join("c.pdf")).unwrap_err();
        assert!(e.to_string().contains(".svg or .png"), "{e}");
    }
}
