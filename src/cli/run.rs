//! `berth run`: Docker's flags, turned into a `RunRequest` for the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use berth::engine::{Engine, RunFlags};
use berth::spec::{BindVolume, NetworkMode, RunRequest, SeccompMode};

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep stdin attached to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (K=V, or K to copy it from this environment).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file (K=V per line, # comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: name or uid, with an optional :group or :gid.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Bind-mount a host directory: HOST:CONTAINER[:ro].
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    volume: Vec<String>,
    /// Mount a tmpfs at PATH (PATH[:OPTIONS]).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Make the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Run berth's reaper as PID 1, forwarding signals to the command.
    #[arg(long)]
    init: bool,
    /// Add a capability (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined.
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// All capabilities, no seccomp filter, no masked paths (inside the user namespace).
    #[arg(long)]
    privileged: bool,
    /// Network: none (only lo) or host.
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// The image, then the command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [CMD]..."
    )]
    args: Vec<String>,
}

/// `-e K` takes K from berth's own environment and is dropped when unset, as in Docker.
fn env_entry(raw: &str) -> Option<String> {
    if raw.contains('=') {
        Some(raw.to_string())
    } else {
        std::env::var(raw).ok().map(|v| format!("{raw}={v}"))
    }
}

fn read_env_file(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --env-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(env_entry)
        .collect())
}

fn request(a: &RunArgs) -> anyhow::Result<RunRequest> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let mut seccomp = SeccompMode::Default;
    let mut no_new_privs_off = false;
    for opt in &a.security_opt {
        match opt.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp = SeccompMode::Unconfined,
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {}
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privs_off = true,
            other => bail!("unsupported --security-opt {other:?}: berth accepts seccomp=unconfined and no-new-privileges[=true|false]"),
        }
    }
    if no_new_privs_off && !a.privileged {
        bail!("no-new-privileges=false needs --privileged: berth always sets no_new_privs with its seccomp filter");
    }
    let network = match a.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("unknown --network {other:?}: berth runs containers with --network none or --network host"),
    };
    let volumes = a
        .volume
        .iter()
        .map(|v| v.parse::<BindVolume>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunRequest {
        cmd: a.args[1..].to_vec(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        volumes,
        tmpfs: a.tmpfs.clone(),
        read_only: a.read_only,
        init: a.init,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        seccomp,
        privileged: a.privileged,
        network,
        tty: a.tty,
    })
}

/// Runs the container and returns its exit status (125 for berth's own errors).
pub fn run(engine: &Engine, args: RunArgs) -> i32 {
    let req = match request(&args) {
        Ok(r) => r,
        Err(e) => return super::report(e, 125),
    };
    let flags = RunFlags {
        name: args.name.clone(),
        remove: args.rm,
        attach_stdin: args.interactive,
    };
    match engine.run(&args.args[0], req, flags) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            super::report(anyhow::Error::new(e), code)
        }
    }
}
