//! Command-line front end: one file per command group.

mod bench;
mod container;
mod format;
mod image;
mod network;
mod registry;
mod run;
mod system;
mod vmm;
mod volume;

use clap::{Parser, Subcommand};

use berth::engine::{Engine, EngineOptions};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Rootless developer sandbox: containers in user namespaces, with a microVM wall"
)]
struct Cli {
    /// Force a rootfs driver: overlay, fuse-overlayfs or copy (default: the fastest that works).
    #[arg(
        long,
        global = true,
        env = "BERTH_STORAGE_DRIVER",
        value_name = "DRIVER"
    )]
    storage_driver: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a new container.
    Run(Box<run::RunArgs>),
    /// Create a container without starting it.
    Create(Box<run::RunArgs>),
    /// Start containers in the background (with -a: attached, returning the exit status).
    Start(container::StartArgs),
    /// Stop containers: the stop signal, then SIGKILL after a timeout.
    Stop(container::StopArgs),
    /// Send a signal to containers (default SIGKILL).
    Kill(container::KillArgs),
    /// Stop and start containers again.
    Restart(container::StopArgs),
    /// Give a container another name.
    Rename(container::RenameArgs),
    /// Wait for containers to end and print their exit status.
    Wait(container::WaitArgs),
    /// Show a container's output (kept by its monitor).
    Logs(container::LogsArgs),
    /// Attach this terminal to a running container.
    Attach(container::AttachArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Show a running container's processes.
    Top(container::TopArgs),
    /// Show containers' CPU, memory, pids and I/O.
    Stats(container::StatsArgs),
    /// Copy files between a container and the host.
    Cp(container::CpArgs),
    /// Make an image of a container's changes.
    Commit(container::CommitArgs),
    /// Show containers or images as JSON.
    Inspect(container::InspectArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Import images from an oci-archive or docker-archive tarball.
    Load(image::LoadArgs),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry (credentials go to the podman/Docker auth file).
    Login(registry::LoginArgs),
    /// Forget the credentials for a registry.
    Logout(registry::LogoutArgs),
    /// Write images to an archive (docker-archive or oci-archive).
    Save(image::SaveArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Remove images.
    Rmi(image::RmiArgs),
    /// Show the history of an image.
    History(image::HistoryArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List containers.
    Ps(container::PsArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Show how berth is set up on this machine.
    Info(system::InfoArgs),
    /// Serve the Docker Engine API (`system service`), and more about berth itself.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Check this machine for what berth needs, and say how to fix what is missing.
    Doctor,
    /// Run a command (default: $SHELL) in a user namespace with berth's id map: as root there,
    /// the user can chown or remove files owned by subordinate ids.
    Unshare(system::UnshareArgs),
    /// Boot a kernel in a bare microVM with a serial console on stdout (no image, no agent).
    Vmm(vmm::VmmArgs),
    /// Measure startup and density of both walls beside the installed peers.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Manage user-defined networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// List a container's published ports.
    Port(network::PortArgs),
    /// The rootless network namespace of user-defined networks (started by `berth run`).
    #[command(hide = true)]
    NetnsDaemon,
    /// The API service's helper for engine work that forks (not for people).
    #[command(name = "__engine", hide = true)]
    EngineHelper,
    /// Run by berth-monitor when a sandbox has ended (not for people).
    #[command(name = "__exited", hide = true)]
    Exited(ExitedArgs),
}

/// `berth __exited`, written by berth-monitor.
#[derive(clap::Args)]
struct ExitedArgs {
    #[arg(long)]
    id: String,
    #[arg(long)]
    code: i32,
    #[arg(long)]
    stopped: bool,
    #[arg(long)]
    listen: i32,
    #[arg(long)]
    client: Vec<i32>,
}

/// Runs the CLI and returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version succeed; a bad flag or value is a usage error, which Docker
            // reports as 125 (not clap's 2, which scripts would take for the command's own).
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    let opts = EngineOptions {
        storage_driver: cli.storage_driver,
    };
    if let Command::Doctor = cli.command {
        return system::doctor();
    }
    if let Command::Unshare(args) = cli.command {
        // Before the engine opens anything: the fork wants a single-threaded process.
        return system::unshare(args);
    }
    if let Command::Bench(cmd) = cli.command {
        return match bench::bench(cmd) {
            Ok(()) => 0,
            Err(e)
                if e.downcast_ref::<berth::bench::BenchError>()
                    .is_some_and(|b| matches!(b, berth::bench::BenchError::Interrupted)) =>
            {
                eprintln!("berth bench: {e}");
                130
            }
            Err(e) => report(e, 1),
        };
    }
    if let Command::Vmm(args) = cli.command {
        return vmm::vmm(args);
    }
    if let Command::System(system::SystemCommand::Service(args)) = cli.command {
        // Its own runtime and threads: nothing of the CLI's path runs before it.
        return system::service(opts, args);
    }
    if let Command::EngineHelper = cli.command {
        return berth::api::helper::main(opts);
    }
    if let Command::NetnsDaemon = cli.command {
        return berth::net::netns::daemon_main(
            &berth::paths::Dirs::from_env(),
            &berth::container::IdMapping::for_current_user(),
        );
    }
    // Docker's convention: `run` fails with 125 when the engine itself fails, other commands with 1.
    let engine_error = if matches!(cli.command, Command::Run(_) | Command::Exec(_)) {
        125
    } else {
        1
    };
    let engine = match Engine::open(opts) {
        Ok(e) => e,
        Err(e) => return report(anyhow::Error::new(e), engine_error),
    };
    let result = match cli.command {
        Command::Run(args) => return run::run(&engine, *args),
        Command::Start(args) => return container::start(&engine, args),
        Command::Attach(args) => return container::attach_cmd(&engine, args),
        Command::Exec(args) => return container::exec(&engine, args),
        Command::Exited(a) => {
            return engine.monitor_exited(berth::engine::ExitedArgs {
                id: a.id,
                code: a.code,
                stopped: a.stopped,
                listener: a.listen,
                clients: a.client,
            })
        }
        Command::Create(args) => return run::create(&engine, *args),
        Command::Stop(a) => container::stop(&engine, a),
        Command::Kill(a) => container::kill(&engine, a),
        Command::Restart(a) => container::restart(&engine, a),
        Command::Rename(a) => container::rename(&engine, a),
        Command::Wait(a) => container::wait(&engine, a),
        Command::Logs(a) => container::logs(&engine, a),
        Command::Inspect(a) => container::inspect(&engine, a),
        Command::Top(a) => container::top(&engine, a),
        Command::Stats(a) => container::stats(&engine, a),
        Command::Cp(a) => container::cp(&engine, a),
        Command::Commit(a) => container::commit(&engine, a),
        Command::Volume(cmd) => volume::volume(&engine, cmd),
        Command::Load(args) => image::load(&engine, args),
        Command::Pull(a) => registry::pull(&engine, a),
        Command::Push(a) => registry::push(&engine, a),
        Command::Login(a) => registry::login(&engine, a),
        Command::Logout(a) => registry::logout(&engine, a),
        Command::Save(a) => image::save(&engine, a),
        Command::Tag(a) => image::tag(&engine, a),
        Command::Rmi(a) => image::rmi(&engine, a),
        Command::History(a) => image::history(&engine, a),
        Command::Images(args) => image::images(&engine, args),
        Command::Image(cmd) => image::image(&engine, cmd),
        Command::Ps(args) => container::ps(&engine, args),
        Command::Rm(args) => container::rm(&engine, args),
        Command::Info(args) => system::info(&engine, args),
        Command::System(system::SystemCommand::Info(args)) => system::info(&engine, args),
        Command::System(system::SystemCommand::Service(_)) => unreachable!("handled above"),
        Command::Network(cmd) => network::network(&engine, cmd),
        Command::Port(args) => network::port(&engine, args),
        Command::Doctor
        | Command::Unshare(_)
        | Command::Vmm(_)
        | Command::Bench(_)
        | Command::NetnsDaemon
        | Command::EngineHelper => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => report(e, 1),
    }
}

/// Prints an error with its causes once each, and returns `code`.
pub fn report(e: anyhow::Error, code: i32) -> i32 {
    let mut msg = format!("berth: {e}");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !last.contains(&c) {
            msg.push_str(&format!(": {c}"));
        }
        last = c;
    }
    eprintln!("{msg}");
    code
}
