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
