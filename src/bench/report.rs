//! A bench's result, and how it is shown: a table for the terminal, Markdown for a README,
//! JSON for programs.

use serde_json::{json, Value};

use super::{Machine, Summary, Wall};

/// One system of a report.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub wall: Wall,
    /// A berth row (as opposed to a peer).
    pub berth: bool,
    /// What was run, for people who want to repeat it.
    pub command: String,
    /// The figures, or why the system was skipped.
    pub result: Result<Measured, String>,
    /// Said under the table.
    pub note: Option<String>,
}

/// What was measured of one system.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Startup: one end-to-end time per run. Density: one start time per sandbox.
    pub times_ms: Vec<f64>,
    /// For microVMs: the guest's own uptime when it was ready (its boot timer), per run.
    pub boot_ms: Vec<f64>,
    pub density: Option<Density>,
}

/// The density figures of one system.
#[derive(Debug, Clone, Default)]
pub struct Density {
    /// Time to start all the sandboxes, one after the other.
    pub total_ms: f64,
    /// Per sandbox: the sum of the PSS of its processes.
    pub pss_kib: Vec<f64>,
    /// Per microVM: the guest memory it has touched (part of its PSS).
    pub guest_kib: Vec<f64>,
    /// Processes whose memory could not be read (not counted).
    pub unreadable: usize,
}

/// A whole bench run.
#[derive(Debug, Clone)]
pub struct Report {
    /// "startup" or "density".
    pub benchmark: &'static str,
    pub machine: Machine,
    /// RFC 3339, UTC.
    pub date: String,
    pub image: String,
    /// Startup: measured runs per system. Density: sandboxes per system.
    pub runs: usize,
    pub warmups: usize,
    pub rows: Vec<Row>,
}

impl Report {
    /// The row every ratio is taken against: berth's container run.
    fn base(&self) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.berth && r.wall == Wall::Container)
            .and_then(|r| r.result.as_ref().ok())
    }

    fn base_median(&self) -> Option<f64> {
        self.base()
            .and_then(|m| Summary::of(&m.times_ms))
            .map(|s| s.median)
    }

    fn base_pss(&self) -> Option<f64> {
        self.base()
            .and_then(|m| m.density.as_ref())
            .and_then(|d| Summary::of(&d.pss_kib))
            .map(|s| s.median)
    }

    /// The measured rows with their figures.
    pub fn measured(&self) -> impl Iterator<Item = (&Row, &Measured, Summary)> {
        self.rows.iter().filter_map(|r| {
            let m = r.result.as_ref().ok()?;
            Some((r, m, Summary::of(&m.times_ms)?))
        })
    }

    /// A title for the report and its chart.
    pub fn title(&self) -> String {
        let what = match self.benchmark {
            "density" => format!("berth bench density: {} idle sandboxes each", self.runs),
            "api" => format!(
                "berth bench api: `docker run --rm` of `true` in {} through each API, {} runs",
                self.image, self.runs
            ),
            _ => format!(
                "berth bench startup: `true` in {}, {} runs",
                self.image, self.runs
            ),
        };
        format!("{what} — {}, {}", self.machine.describe(), &self.date[..10])
    }

    pub fn to_json(&self) -> Value {
        let base = self.base_median();
        let base_pss = self.base_pss();
        let systems: Vec<Value> = self
            .measured()
            .map(|(row, m, s)| {
                let mut o = json!({
                    "name": row.name,
                    "wall": row.wall,
                    "berth": row.berth,
                    "command": row.command,
                    "runs": m.times_ms.len(),
                    "median_ms": round(s.median),
                    "min_ms": round(s.min),
                    "max_ms": round(s.max),
                    "ratio": base.map(|b| round(s.median / b)),
                });
                if let Some(b) = Summary::of(&m.boot_ms) {
                    o["boot_median_ms"] = json!(round(b.median));
                    o["boot_min_ms"] = json!(round(b.min));
                    o["boot_max_ms"] = json!(round(b.max));
                }
                if let Some(d) = &m.density {
                    o["total_ms"] = json!(round(d.total_ms));
                    if let Some(p) = Summary::of(&d.pss_kib) {
                        o["pss_mib"] = json!(round(p.median / 1024.0));
                        o["pss_min_mib"] = json!(round(p.min / 1024.0));
                        o["pss_max_mib"] = json!(round(p.max / 1024.0));
                        o["pss_ratio"] = json!(base_pss.map(|b| round(p.median / b)));
                        o["fits"] = json!(fits(&self.machine, p.median));
                    }
                    if let Some(g) = Summary::of(&d.guest_kib) {
                        o["guest_touched_mib"] = json!(round(g.median / 1024.0));
                    }
                    o["unreadable_processes"] = json!(d.unreadable);
                }
                if let Some(note) = &row.note {
                    o["note"] = json!(note);
                }
                o
            })
            .collect();
        let skipped: Vec<Value> = self
            .rows
            .iter()
            .filter_map(|r| {
                let reason = r.result.as_ref().err()?;
                Some(json!({ "name": r.name, "wall": r.wall, "reason": reason }))
            })
            .collect();
        json!({
            "benchmark": self.benchmark,
            "date": self.date,
            "machine": self.machine,
            "image": self.image,
            "runs": self.runs,
            "warmups": self.warmups,
            "systems": systems,
            "skipped": skipped,
        })
    }

    /// A table for the terminal (`markdown` false) or for a README.
    pub fn to_table(&self, markdown: bool) -> String {
        let density = self.benchmark == "density";
        let mut header: Vec<&str> = vec!["system", "wall"];
        if density {
            header.extend([
                "start all",
                "start median ms (min-max)",
                "memory per sandbox MiB (min-max)",
                "guest touched MiB",
                "fits in free memory",
                "memory vs berth container",
            ]);
        } else {
            header.extend([
                "median ms",
                "min ms",
                "max ms",
                "vs berth container",
                "guest boot ms",
            ]);
        }
        let base = self.base_median();
        let base_pss = self.base_pss();
        let mut lines: Vec<Vec<String>> = Vec::new();
        for (row, m, s) in self.measured() {
            let mut cells = vec![row.name.clone(), row.wall.label().to_string()];
            if let Some(d) = &m.density {
                let pss = Summary::of(&d.pss_kib);
                cells.push(format!("{:.2} s", d.total_ms / 1000.0));
                cells.push(format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max));
                cells.push(
                    pss.map(|p| {
                        format!(
                            "{:.2} ({:.2}-{:.2})",
                            p.median / 1024.0,
                            p.min / 1024.0,
                            p.max / 1024.0
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
                );
                cells.push(
                    Summary::of(&d.guest_kib)
                        .map(|g| format!("{:.1}", g.median / 1024.0))
                        .unwrap_or_else(|| "-".into()),
                );
                cells.push(
                    pss.map(|p| fits(&self.machine, p.median).to_string())
                        .unwrap_or_else(|| "-".into()),
                );
                cells.push(match (pss, base_pss) {
                    (Some(p), Some(b)) => format!("{:.2}x", p.median / b),
                    _ => "-".into(),
                });
            } else {
                cells.push(format!("{:.1}", s.median));
                cells.push(format!("{:.1}", s.min));
                cells.push(format!("{:.1}", s.max));
                cells.push(
                    base.map(|b| format!("{:.2}x", s.median / b))
                        .unwrap_or_else(|| "-".into()),
                );
                cells.push(
                    Summary::of(&m.boot_ms)
                        .map(|b| format!("{:.0}", b.median))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            lines.push(cells);
        }
        let mut out = String::new();
        if markdown {
            out.push_str(&format!("{}\n\n", self.title()));
            out.push_str(&format!("| {} |\n", header.join(" | ")));
            out.push_str(&format!(
                "|{}\n",
                header
                    .iter()
                    .enumerate()
                    .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
                    .collect::<String>()
            ));
            for cells in &lines {
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            for row in &self.rows {
                if let Err(reason) = &row.result {
                    out.push_str(&format!(
                        "\n- {} ({}): skipped: {reason}",
                        row.name,
                        row.wall.label()
                    ));
                }
            }
        } else {
            out.push_str(&format!("{}\n\n", self.title()));
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            for cells in &lines {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if i < 2 {
                            format!("{c:<w$}", w = widths[i])
                        } else {
                            format!("{c:>w$}", w = widths[i])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
            out.push_str(&line(&head));
            out.push('\n');
            for cells in &lines {
                out.push_str(&line(cells));
                out.push('\n');
            }
            for row in &self.rows {
                if let Err(reason) = &row.result {
                    out.push_str(&format!(
                        "{} ({}): skipped: {reason}\n",
                        row.name,
                        row.wall.label()
                    ));
                }
            }
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.note.as_ref().map(|n| format!("{}: {n}", r.name)))
            .collect();
        if !notes.is_empty() {
            out.push('\n');
            for n in notes {
                out.push_str(&format!("{}note: {n}\n", if markdown { "- " } else { "" }));
            }
        }
        if !markdown {
            out.push('\n');
            for (row, _, _) in self.measured() {
                out.push_str(&format!("{}: {}\n", row.name, row.command));
            }
        }
        out
    }
}

/// How many sandboxes of `pss_kib` each fit in the machine's available memory.
fn fits(machine: &Machine, pss_kib: f64) -> u64 {
    if pss_kib <= 0.0 {
        return 0;
    }
    (machine.available_mib as f64 * 1024.0 / pss_kib) as u64
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpu: "Test CPU".into(),
            cores: 2,
            kernel: "6.1.0".into(),
            memory_mib: 2048,
            available_mib: 1024,
            kvm: "kvm".into(),
        }
    }

    fn row(name: &str, wall: Wall, berth: bool, times: &[f64]) -> Row {
        Row {
            name: name.into(),
            wall,
            berth,
            command: format!("{name} true"),
            result: Ok(Measured {
                times_ms: times.to_vec(),
                ..Default::default()
            }),
            note: None,
        }
    }

    #[test]
    fn json_has_every_measured_system_and_the_skipped_ones_apart() {
        let mut skipped = row("qemu", Wall::Vm, false, &[]);
        skipped.result = Err("qemu-system-x86_64 not installed".into());
        let report = Report {
            benchmark: "startup",
            machine: machine(),
            date: "2026-12-01T08:00:00Z".into(),
            image: "busybox".into(),
            runs: 3,
            warmups: 1,
            rows: vec![
                row(
                    "berth container",
                    Wall::Container,
                    true,
                    &[10.0, 20.0, 30.0],
                ),
                row("podman", Wall::Container, false, &[100.0, 80.0, 90.0]),
                skipped,
            ],
        };
        let v = report.to_json();
        let systems = v["systems"].as_array().unwrap();
        assert_eq!(systems.len(), 2);
        assert_eq!(systems[1]["name"], "podman");
        assert_eq!(systems[1]["median_ms"], 90.0);
        assert_eq!(systems[1]["min_ms"], 80.0);
        assert_eq!(systems[1]["ratio"], 4.5);
        assert_eq!(systems[0]["wall"], "container");
        assert_eq!(v["skipped"][0]["name"], "qemu");
        let table = report.to_table(false);
        assert!(table.contains("4.50x"), "{table}");
        assert!(table.contains("qemu (vm): skipped: qemu-system-x86_64 not installed"));
        let md = report.to_table(true);
        assert!(
            md.contains("| podman | container | 90.0 | 80.0 | 100.0 | 4.50x | - |"),
            "{md}"
        );
    }

    #[test]
    fn density_reports_memory_and_what_fits() {
        let mut r = row("berth container", Wall::Container, true, &[5.0, 7.0]);
        if let Ok(m) = &mut r.result {
            m.density = Some(Density {
                total_ms: 12.0,
                pss_kib: vec![512.0, 512.0],
                guest_kib: vec![],
                unreadable: 0,
            });
        }
        let report = Report {
            benchmark: "density",
            machine: machine(),
            date: "2026-12-01T08:00:00Z".into(),
            image: "busybox".into(),
            runs: 2,
            warmups: 0,
            rows: vec![r],
        };
        let v = report.to_json();
        assert_eq!(v["systems"][0]["pss_mib"], 0.5);
        assert_eq!(v["systems"][0]["fits"], 2048);
        assert_eq!(v["systems"][0]["total_ms"], 12.0);
    }
}
