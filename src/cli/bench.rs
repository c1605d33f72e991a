//! `berth bench startup|density`: what each wall costs here, against the peers installed.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use berth::bench::{self, density, peers::Peer, report::Report, startup, BenchEnv, Wall};
use berth::paths::Dirs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time "start a sandbox running `true` and wait for it to exit", per wall and per peer.
    Startup(StartupArgs),
    /// Start N idle sandboxes of each kind; time to start them all and memory per sandbox.
    Density(DensityArgs),
    /// What the Docker Engine API costs: the docker CLI through berth's socket beside the
    /// berth CLI, podman's API and rootful Docker; concurrent runs; the service's memory.
    Api(ApiArgs),
}

#[derive(Args)]
pub struct ApiArgs {
    /// The image to run (it must be in berth's store: berth pull or berth load).
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Measured runs per system.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Unmeasured runs first, per system.
    #[arg(long, default_value_t = 2)]
    warmups: usize,
    /// Peers: podman (its `system service`), docker (rootful Docker, started by the bench as
    /// root); or none.
    #[arg(long, default_value = "podman,docker")]
    peers: String,
    /// Containers started at once through each API.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    #[command(flatten)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Markdown,
}

#[derive(Args)]
struct Output {
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also draw a bar chart of the medians, with min-max whiskers (FILE.svg or FILE.png).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Give up on a system whose one start takes longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    timeout: u64,
}

#[derive(Args)]
pub struct StartupArgs {
    /// The image to run (it must be in berth's store: berth pull or berth load).
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Measured runs per system.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Unmeasured runs first, per system.
    #[arg(long, default_value_t = 2)]
    warmups: usize,
    /// berth's walls to measure.
    #[arg(long, default_value = "container,vm")]
    walls: String,
    /// Peers to measure beside berth: podman, crun (runc where crun refuses the host), bwrap,
    /// qemu (berth's VMM and QEMU booting the same kernel), unshare (the floor); or none.
    #[arg(long, default_value = "podman,crun,bwrap,qemu")]
    peers: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct DensityArgs {
    /// The image to run (it must be in berth's store).
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Idle sandboxes per system.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// berth's walls to measure.
    #[arg(long, default_value = "container,vm")]
    walls: String,
    /// Peers to measure beside berth: podman, or none.
    #[arg(long, default_value = "podman")]
    peers: String,
    /// Guest memory of each microVM.
    #[arg(long, value_name = "SIZE", default_value = "64M")]
    vm_memory: String,
    #[command(flatten)]
    output: Output,
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let mut env = BenchEnv::new(exe, Dirs::from_env())?;
    bench::catch_interrupts();
    let chart = match &cmd {
        BenchCommand::Startup(a) => &a.output.chart,
        BenchCommand::Density(a) => &a.output.chart,
        BenchCommand::Api(a) => &a.output.chart,
    };
    if let Some(path) = chart {
        bench::chart::check(path)?;
    }
    let (report, output) = match cmd {
        BenchCommand::Startup(a) => {
            let opts = startup::StartupOptions {
                image: a.image,
                runs: a.runs,
                warmups: a.warmups,
                walls: Wall::parse_list(&a.walls)?,
                peers: Peer::parse_list(&a.peers)?,
            };
            env.timeout = std::time::Duration::from_secs(a.output.timeout);
            (startup::run(&env, &opts)?, a.output)
        }
        BenchCommand::Density(a) => {
            let opts = density::DensityOptions {
                image: a.image,
                count: a.count,
                walls: Wall::parse_list(&a.walls)?,
                peers: Peer::parse_list(&a.peers)?,
                vm_memory: a.vm_memory,
            };
            env.timeout = std::time::Duration::from_secs(a.output.timeout);
            (density::run(&env, &opts)?, a.output)
        }
        BenchCommand::Api(a) => {
            let peers: Vec<String> = a
                .peers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "none")
                .map(String::from)
                .collect();
            if let Some(bad) = peers
                .iter()
                .find(|p| !["podman", "docker"].contains(&p.as_str()))
            {
                anyhow::bail!("unknown peer {bad:?} for bench api: use podman, docker or none");
            }
            let opts = bench::api::ApiOptions {
                image: a.image,
                runs: a.runs,
                warmups: a.warmups,
                peers,
                concurrent: a.concurrent,
            };
            env.timeout = std::time::Duration::from_secs(a.output.timeout);
            (bench::api::run(&env, &opts)?, a.output)
        }
    };
    print(&report, &output)
}

fn print(report: &Report, output: &Output) -> anyhow::Result<()> {
    match output.format {
        Format::Table => print!("{}", report.to_table(false)),
        Format::Markdown => print!("{}", report.to_table(true)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
    }
    if let Some(path) = &output.chart {
        bench::chart::draw(report, path)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}
