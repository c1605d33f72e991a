//! `berth info`, `berth doctor`.

use clap::Args;

use berth::engine::Engine;

#[derive(Args)]
pub struct InfoArgs {
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    format: String,
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

/// `berth unshare [CMD [ARGS...]]`, as `podman unshare`.
#[derive(Args)]
pub struct UnshareArgs {
    /// The command and its arguments (default: $SHELL, else /bin/sh).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD [ARGS]..."
    )]
    command: Vec<String>,
}

/// Runs the command in berth's user namespace and returns its exit status (125 when berth
/// could not start it).
pub fn unshare(args: UnshareArgs) -> i32 {
    let argv = if args.command.is_empty() {
        vec![std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into())]
    } else {
        args.command
    };
    let ids = berth::container::IdMapping::for_current_user();
    if let Some(w) = ids.warning() {
        eprintln!("{w}");
    }
    match berth::container::userns::run_command(&ids, &argv) {
        Ok(code) => code,
        Err(e) => super::report(anyhow::Error::new(e), 125),
    }
}
