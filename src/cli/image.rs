//! `berth load`, `berth images`, `berth image ls`, `berth tag`, `berth rmi`,
//! `berth image inspect`, `berth history`, `berth save`, `berth image prune`
//! (and `berth image pull|push`, which are `berth pull|push`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use berth::engine::Engine;
use berth::image::ArchiveFormat;

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
    /// table (default), json (one object per line), a Go template ({{.Repository}}:{{.Tag}}),
    /// or `table TEMPLATE` (with a header, in columns).
    #[arg(long)]
    format: Option<String>,
    /// Show the manifest digests.
    #[arg(long)]
    digests: bool,
    /// Filter: reference=PATTERN, dangling=true|false, label=KEY[=VALUE], before=IMAGE,
    /// since=IMAGE (repeatable; each key must hold).
    #[arg(short, long = "filter")]
    filter: Vec<String>,
}

#[derive(Args)]
pub struct TagArgs {
    /// The image to name (name or id).
    source: String,
    /// The new name, NAME[:TAG].
    target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    /// Remove the image even when a stopped container uses it or it has several names.
    #[arg(short, long)]
    force: bool,
    /// Accepted for Docker compatibility; berth keeps no parent images.
    #[arg(long)]
    no_prune: bool,
    /// Images to remove (names or ids).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A Go template over each image ({{.Id}} {{.Config.Cmd}}), or json (the default).
    #[arg(short, long)]
    format: Option<String>,
    /// Images to inspect (names or ids).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Sizes and dates in human-readable form.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// Do not truncate the output.
    #[arg(long)]
    no_trunc: bool,
    /// Show only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// The image (name or id).
    image: String,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// docker-archive (as `docker save`) or oci-archive.
    #[arg(long, default_value = "docker-archive")]
    format: String,
    /// Images to save (names or ids).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Import images from an archive.
    Load(LoadArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove images.
    #[command(alias = "rmi", alias = "remove")]
    Rm(RmiArgs),
    /// Show images' configuration as JSON.
    Inspect(InspectArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Write images to an archive.
    Save(SaveArgs),
    /// Remove images without a name that no container uses.
    Prune(PruneArgs),
    /// Download an image from a registry.
    Pull(super::registry::PullArgs),
    /// Upload an image to a registry.
    Push(super::registry::PushArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, named or not.
    #[arg(short, long)]
    all: bool,
    /// Do not ask (berth never asks; accepted for Docker compatibility).
    #[arg(short, long)]
    force: bool,
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
    format!("{} ago", human_duration((now - secs).max(0)))
}

/// Docker's `units.HumanDuration`, from seconds.
fn human_duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    // Docker rounds hours to the nearest.
    let hours = (seconds + 1800) / 3600;
    match seconds {
        ..=0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
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

/// The fields of an `images` row, with their column headers.
const IMAGE_FIELDS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];

pub fn images(engine: &Engine, args: ImagesArgs) -> anyhow::Result<()> {
    let mut list = engine.images()?;
    if !args.filter.is_empty() {
        let filters = args
            .filter
            .iter()
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("invalid filter {f:?}: write KEY=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let kept = engine.images_matching(&filters)?;
        // A row stays when its image passed, under a name the filters kept.
        list.retain(|row| {
            kept.iter().any(|i| {
                i.id == row.id
                    && (row.repository == "<none>"
                        || i.repo_tags
                            .contains(&format!("{}:{}", row.repository, row.tag)))
            })
        });
    }
    let short = |id: &str| {
        let hex = id.trim_start_matches("sha256:");
        if args.no_trunc {
            id.to_string()
        } else {
            hex[..12.min(hex.len())].to_string()
        }
    };
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|i| {
            serde_json::json!({
                "Repository": i.repository, "Tag": i.tag, "ID": short(&i.id),
                "Digest": i.digest, "CreatedAt": i.created,
                "CreatedSince": ago(i.created.as_deref()), "Size": human_size(i.size),
            })
        })
        .collect();
    if !args.quiet {
        if let Some(text) = super::format::listing(args.format.as_deref(), &rows, IMAGE_FIELDS)
            .map_err(anyhow::Error::msg)?
        {
            print!("{text}");
            return Ok(());
        }
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for i in &list {
            if seen.insert(i.id.clone()) {
                println!("{}", short(&i.id));
            }
        }
        return Ok(());
    }
    if args.digests {
        let mut rows = vec![[
            "REPOSITORY".to_string(),
            "TAG".into(),
            "DIGEST".into(),
            "IMAGE ID".into(),
            "CREATED".into(),
            "SIZE".into(),
        ]];
        for i in &list {
            rows.push([
                i.repository.clone(),
                i.tag.clone(),
                i.digest.clone(),
                short(&i.id),
                ago(i.created.as_deref()),
                human_size(i.size),
            ]);
        }
        print_table(&rows);
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
        ImageCommand::Tag(a) => tag(engine, a),
        ImageCommand::Rm(a) => rmi(engine, a),
        ImageCommand::Inspect(a) => inspect(engine, a),
        ImageCommand::History(a) => history(engine, a),
        ImageCommand::Save(a) => save(engine, a),
        ImageCommand::Prune(a) => prune(engine, a),
        ImageCommand::Pull(a) => super::registry::pull(engine, a),
        ImageCommand::Push(a) => super::registry::push(engine, a),
    }
}

/// `berth image prune`: Docker's report of what went and the space it freed.
pub fn prune(engine: &Engine, args: PruneArgs) -> anyhow::Result<()> {
    let _ = args.force;
    let report = engine.prune_images(args.all, &[])?;
    if !report.deleted.is_empty() {
        println!("Deleted Images:");
        for n in &report.untagged {
            println!("untagged: {n}");
        }
        for id in &report.deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(())
}

/// `berth tag SOURCE TARGET`: prints nothing, as Docker.
pub fn tag(engine: &Engine, args: TagArgs) -> anyhow::Result<()> {
    engine.tag_image(&args.source, &args.target)?;
    Ok(())
}

/// `berth rmi`: each reference in turn, `Untagged:` and `Deleted:` lines as
/// Docker prints them; a reference that fails is reported and the rest go on.
pub fn rmi(engine: &Engine, args: RmiArgs) -> anyhow::Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    for reference in &args.images {
        match engine.remove_image(reference, args.force) {
            Ok(removal) => {
                for n in &removal.untagged {
                    println!("Untagged: {n}");
                }
                if let Some(id) = &removal.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(e) => {
                if let Some(previous) = failed.take() {
                    super::report(previous, 1);
                }
                failed = Some(e.into());
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// JSON as Docker prints it: four-space indents.
fn to_docker_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(out)?)
}

/// `berth image inspect`: a JSON array of the images found; an image not
/// found is an error after the others are printed, as with Docker.
pub fn inspect(engine: &Engine, args: InspectArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    for reference in &args.images {
        match engine.inspect_image(reference) {
            Ok(i) => found.push(i),
            Err(e) => {
                if let Some(previous) = failed.take() {
                    super::report(previous, 1);
                }
                failed = Some(e.into());
            }
        }
    }
    match args.format.as_deref() {
        None | Some("json") => println!("{}", to_docker_json(&found)?),
        Some(template) => {
            for image in &found {
                let v = serde_json::to_value(image)?;
                println!(
                    "{}",
                    super::format::render(template, &v).map_err(anyhow::Error::msg)?
                );
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `berth history`: IMAGE, CREATED, CREATED BY, SIZE, COMMENT, newest first.
pub fn history(engine: &Engine, args: HistoryArgs) -> anyhow::Result<()> {
    let rows = engine.image_history(&args.image)?;
    let id = |r: &berth::image::HistoryEntry| match &r.id {
        Some(id) if args.no_trunc => id.clone(),
        Some(id) => id.trim_start_matches("sha256:")[..12].to_string(),
        None => "<missing>".to_string(),
    };
    if args.format == "json" {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "ID": id(r), "Created": r.created, "CreatedBy": r.created_by,
                    "Size": r.size, "Comment": r.comment,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if args.quiet {
        for r in &rows {
            println!("{}", id(r));
        }
        return Ok(());
    }
    let mut table = vec![[
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for r in &rows {
        let created_by = r.created_by.replace('\t', " ");
        table.push([
            id(r),
            if args.human {
                ago(r.created.as_deref())
            } else {
                r.created.clone().unwrap_or_default()
            },
            if args.no_trunc {
                created_by
            } else {
                ellipsis(&created_by, 45)
            },
            if args.human {
                human_size(r.size)
            } else {
                r.size.to_string()
            },
            r.comment.clone(),
        ]);
    }
    print_table(&table);
    Ok(())
}

/// `berth save`: to `-o FILE` (complete or absent, never half-written), or
/// to standard output when it is not a terminal.
pub fn save(engine: &Engine, args: SaveArgs) -> anyhow::Result<()> {
    let format: ArchiveFormat = args.format.parse()?;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    engine
        .save_images(&args.images, format, args.output.as_deref(), &mut lock)
        .with_context(|| match &args.output {
            Some(p) => format!("saving to {}", p.display()),
            None => "saving to standard output".to_string(),
        })?;
    std::io::Write::flush(&mut lock)?;
    Ok(())
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

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(21 * 86400), "3 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
    }

    #[test]
    fn ellipsis_like_docker() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "x".repeat(50);
        let cut = ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }
}
