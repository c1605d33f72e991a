//! `berth info`, `berth doctor`, `berth system service`.

use clap::{Args, Subcommand};

use berth::engine::{Engine, EngineOptions};

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Serve the Docker Engine API on a UNIX socket, for the docker CLI, docker-py, compose
    /// and testcontainers (DOCKER_HOST=unix://SOCKET).
    Service(ServiceArgs),
    /// Show how berth is set up on this machine (as `berth info`).
    Info(InfoArgs),
}

#[derive(Args)]
pub struct ServiceArgs {
    /// Exit after SECS seconds with no client and no running request; 0 never exits.
    #[arg(short, long, value_name = "SECS", default_value_t = 5)]
    time: u64,
    /// Where to listen: unix:///PATH (default: $XDG_RUNTIME_DIR/berth/berth.sock). A socket
    /// passed by systemd's socket activation (LISTEN_FDS) is used instead when present.
    #[arg(value_name = "URI")]
    uri: Option<String>,
    /// How much to print on stderr: error, warn, info, or debug (every request).
    #[arg(long, value_name = "LEVEL", default_value = "warn", value_parser = ["error", "warn", "info", "debug"])]
    log_level: String,
}

/// `berth system service`: returns the exit status.
pub fn service(opts: EngineOptions, args: ServiceArgs) -> i32 {
    let socket = match args.uri.as_deref() {
        None => None,
        Some(u) => match u.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Some(std::path::PathBuf::from(p)),
            _ => {
                return super::report(
                    anyhow::anyhow!(
                        "berth serves the API on a UNIX socket only: give unix:///PATH (got {u:?}); a TCP listener would hand your account to anyone who reaches the port"
                    ),
                    125,
                )
            }
        },
    };
    let serve = berth::api::ServeOptions {
        socket,
        idle: (args.time > 0).then(|| std::time::Duration::from_secs(args.time)),
        engine: opts,
        log_requests: args.log_level == "debug",
    };
    match berth::api::serve(serve) {
        Ok(()) => 0,
        Err(e) => super::report(anyhow::Error::new(e), 1),
    }
}

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
    println!(
        "Docker API: DOCKER_HOST=unix://{} (serve it with `berth system service`)",
        berth::api::default_socket(&info.runtime_dir).display()
    );
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
