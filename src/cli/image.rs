//! `berth load`, `berth images`, `berth image ls`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use berth::engine::Engine;

#[derive(Args)]
pub struct LoadArgs {
    /// The archive to read (oci-archive or docker-archive).
    #[arg(short, long)]
    input: PathBuf,
    /// Print nothing.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Show only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show full ids.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Import images from an archive.
    Load(LoadArgs),
}

pub fn load(engine: &Engine, args: LoadArgs) -> anyhow::Result<()> {
    let loaded = engine
        .load(&args.input)
        .with_context(|| format!("loading {}", args.input.display()))?;
    if !args.quiet {
        for img in loaded {
            if img.names.is_empty() {
                println!("Loaded image ID: {}", img.id);
            }
            for n in img.names {
                println!("Loaded image: {n}");
            }
        }
    }
    Ok(())
}

/// "3 hours ago" from an RFC 3339 timestamp, as Docker prints CREATED.
fn ago(created: Option<&str>) -> String {
    let Some(ts) = created else {
        return "N/A".into();
    };
    let Some(secs) = parse_rfc3339(ts) else {
        return ts.to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = (now - secs).max(0);
    match d {
        0..=59 => "Less than a minute ago".into(),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86399 => format!("{} hours ago", d / 3600),
        86400..=2_591_999 => format!("{} days ago", d / 86400),
        _ => format!("{} months ago", d / 2_592_000),
    }
}

fn parse_rfc3339(ts: &str) -> Option<i64> {
    let date = ts.get(0..10)?;
    let time = ts.get(11..19)?;
    let mut dp = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (dp.next()?.ok()?, dp.next()?.ok()?, dp.next()?.ok()?);
    let mut tp = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (tp.next()?.ok()?, tp.next()?.ok()?, tp.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Human size with Docker's decimal units.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

pub fn images(engine: &Engine, args: ImagesArgs) -> anyhow::Result<()> {
    let list = engine.images()?;
    if args.format == "json" {
        let rows: Vec<_> = list
            .iter()
            .map(|i| {
                serde_json::json!({
                    "Repository": i.repository, "Tag": i.tag, "ID": i.id,
                    "CreatedAt": i.created, "Size": i.size,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let short = |id: &str| {
        let hex = id.trim_start_matches("sha256:");
        if args.no_trunc {
            id.to_string()
        } else {
            hex[..12.min(hex.len())].to_string()
        }
    };
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for i in &list {
            if seen.insert(i.id.clone()) {
                println!("{}", short(&i.id));
            }
        }
        return Ok(());
    }
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for i in &list {
        rows.push([
            i.repository.clone(),
            i.tag.clone(),
            short(&i.id),
            ago(i.created.as_deref()),
            human_size(i.size),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// Prints rows as left-aligned columns separated by three spaces, like Docker.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{:<width$}   ", c, width = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

pub fn image(engine: &Engine, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Ls(a) => images(engine, a),
        ImageCommand::Load(a) => load(engine, a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_dates() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86401));
        assert_eq!(parse_rfc3339("2024-03-01T00:00:00Z"), Some(1709251200));
    }
}
