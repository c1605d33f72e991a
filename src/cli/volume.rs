//! `berth volume create|ls|inspect|rm|prune`.

use anyhow::Context;
use clap::{Args, Subcommand};

use berth::engine::Engine;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name without one).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON.
    Inspect(InspectArgs),
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove the anonymous volumes no container uses (-a: every unused volume).
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// A label KEY=VALUE (repeatable).
    #[arg(long)]
    label: Vec<String>,
    name: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: name=SUBSTRING, label=KEY[=VALUE], dangling=true|false, driver=local (repeatable).
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// table (default), json (one object per line), a Go template ({{.Name}}), or
    /// `table TEMPLATE` (with a header, in columns).
    #[arg(long)]
    format: Option<String>,
}

/// The fields of a `volume ls` row, with their column headers.
const VOLUME_FIELDS: &[(&str, &str)] = &[
    ("Driver", "DRIVER"),
    ("Name", "VOLUME NAME"),
    ("Labels", "LABELS"),
    ("Scope", "SCOPE"),
    ("Anonymous", "ANONYMOUS"),
];

#[derive(Args)]
pub struct InspectArgs {
    /// A Go template over each volume ({{.Mountpoint}}).
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Accepted for Docker's sake; a volume in use is never removed.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Every unused volume, named ones too.
    #[arg(short, long)]
    all: bool,
    /// Do not ask (berth never asks).
    #[arg(short, long)]
    force: bool,
}

pub fn volume(engine: &Engine, cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Create(a) => {
            let labels = super::network::key_values(&a.label).collect();
            println!("{}", engine.volume_create(a.name.as_deref(), labels)?);
        }
        VolumeCommand::Ls(a) => {
            let filters: Vec<(String, String)> = super::network::key_values(&a.filter).collect();
            let shown: Vec<_> = engine
                .volumes_matching(&filters)?
                .into_iter()
                .map(|(v, _)| v)
                .collect();
            if a.quiet {
                for v in &shown {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            let rows: Vec<serde_json::Value> = shown
                .iter()
                .map(|v| serde_json::json!({"Driver": "local", "Name": v.name, "Labels": v.labels, "Scope": "local", "Anonymous": v.anonymous}))
                .collect();
            if let Some(text) = super::format::listing(a.format.as_deref(), &rows, VOLUME_FIELDS)
                .map_err(anyhow::Error::msg)?
            {
                print!("{text}");
            } else {
                let mut rows = vec![["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                rows.extend(shown.iter().map(|v| ["local".to_string(), v.name.clone()]));
                super::image::print_table(&rows);
            }
        }
        VolumeCommand::Inspect(a) => {
            let mut all = Vec::new();
            for n in &a.names {
                all.push(serde_json::to_value(engine.volume_inspect(n)?)?);
            }
            match a.format.as_deref() {
                None | Some("json") => println!("{}", serde_json::to_string_pretty(&all)?),
                Some(t) => {
                    for v in &all {
                        println!(
                            "{}",
                            super::format::render(t, v).map_err(anyhow::Error::msg)?
                        );
                    }
                }
            }
        }
        VolumeCommand::Rm(a) => {
            let _ = a.force;
            let mut failed = None;
            for n in &a.names {
                match engine
                    .volume_remove(n)
                    .with_context(|| format!("removing volume {n}"))
                {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        if a.names.len() > 1 {
                            super::report(anyhow::anyhow!("{e:#}"), 1);
                        }
                        failed.get_or_insert(e);
                    }
                }
            }
            match failed {
                Some(e) if a.names.len() == 1 => return Err(e),
                Some(_) => anyhow::bail!("some volumes were not removed (see above)"),
                None => {}
            }
        }
        VolumeCommand::Prune(a) => {
            let _ = a.force;
            let (removed, _) = engine.volume_prune(a.all, &[])?;
            for n in &removed {
                println!("{n}");
            }
            println!("Total reclaimed volumes: {}", removed.len());
        }
    }
    Ok(())
}
