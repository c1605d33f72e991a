//! `berth info`, `berth doctor`, `berth ps`, `berth rm`.

use clap::Args;

use berth::engine::Engine;
use berth::state::Status;

#[derive(Args)]
pub struct InfoArgs {
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    format: String,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn info(engine: &Engine, args: InfoArgs) -> anyhow::Result<()> {
    let info = engine.info();
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("Version: {}", info.version);
    println!("Rootfs driver: {}", info.rootfs_driver);
    println!("User namespace: {}", info.userns_mode);
    for m in &info.uid_map {
        println!("  uid map: {m}");
    }
    println!("Data dir: {}", info.data_dir.display());
    println!("Runtime dir: {}", info.runtime_dir.display());
    println!("Images: {}", info.images);
    println!("Containers: {}", info.containers);
    let or_missing = |p: &Option<std::path::PathBuf>| {
        p.as_ref().map_or_else(
            || "not installed (scripts/build-guest builds it)".to_string(),
            |p| p.display().to_string(),
        )
    };
    println!("microVM kernel: {}", or_missing(&info.vm_kernel));
    println!("microVM agent: {}", or_missing(&info.vm_agent));
    println!("KVM: {}", info.kvm);
    println!("Network: {} (default)", info.network.default_backend);
    for (tool, path) in [
        ("slirp4netns", &info.network.slirp4netns),
        ("pasta", &info.network.pasta),
    ] {
        println!(
            "  {tool}: {}",
            path.as_ref()
                .map_or_else(|| "not installed".to_string(), |p| p.display().to_string())
        );
    }
    Ok(())
}

pub fn doctor() -> i32 {
    let checks = berth::system::run_checks();
    print!("{}", berth::system::render(&checks));
    i32::from(berth::system::has_failures(&checks))
}

pub fn ps(engine: &Engine, args: PsArgs) -> anyhow::Result<()> {
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    for r in engine.containers() {
        let running = berth::state::ContainerStore::is_running(&r);
        if !args.all && !running {
            continue;
        }
        if args.quiet {
            println!("{}", &r.id[..12]);
            continue;
        }
        let status = match (r.status, running) {
            (_, true) => "Up".to_string(),
            (Status::Exited, _) => format!("Exited ({})", r.exit_code.unwrap_or(0)),
            (Status::Created, _) => "Created".to_string(),
            (Status::Running, false) => "Exited (unknown)".to_string(),
        };
        let mut cmd = r.command.join(" ");
        if cmd.len() > 30 {
            cmd.truncate(27);
            cmd.push_str("...");
        }
        rows.push([
            r.id[..12].to_string(),
            r.image.clone(),
            format!("\"{cmd}\""),
            status,
            r.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            r.name.clone(),
        ]);
    }
    if !args.quiet {
        super::image::print_table(&rows);
    }
    Ok(())
}

pub fn rm(engine: &Engine, args: RmArgs) -> anyhow::Result<()> {
    let mut failed = None;
    for c in &args.containers {
        match engine.remove(c, args.force) {
            Ok(_) => println!("{c}"),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
