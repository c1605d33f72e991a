//! `berth run` and `berth create`: Docker's flags, turned into a `RunRequest` and `RunFlags`
//! for the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use std::collections::BTreeMap;

use berth::engine::{CreateConfig, Engine, HostConfig, MountRequest, RunFlags};
use berth::monitor::proto::Request;
use berth::net::PortSpec;
use berth::spec::ulimit::Ulimit;
use berth::spec::RunRequest;
use berth::state::Isolation;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background under berth's monitor and print the container id.
    #[arg(short, long)]
    detach: bool,
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
    /// Set a label on the container (K=V, or K for an empty value).
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    label: Vec<String>,
    /// Mount a host directory (/HOST:CTR), a named volume (NAME:CTR) or a new anonymous
    /// volume (CTR), with :ro or :rw.
    #[arg(short, long = "volume", value_name = "[SRC:]CTR[:ro]")]
    volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=...].
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Mount the volumes and binds of another container (CONTAINER[:ro|rw]).
    #[arg(long, value_name = "CONTAINER")]
    volumes_from: Vec<String>,
    /// Mount a tmpfs at PATH (PATH[:OPTIONS]).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Restart policy while berth's monitor lives: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no", value_name = "POLICY")]
    restart: String,
    /// Log options: max-size=SIZE (10m), max-file=N (2).
    #[arg(long, value_name = "OPT")]
    log_opt: Vec<String>,
    /// A resource limit of the process, as Docker writes it: NAME=SOFT[:HARD] (nofile, nproc,
    /// core, cpu, data, fsize, locks, memlock, msgqueue, nice, rss, rtprio, rttime, sigpending,
    /// stack; -1 for unlimited), e.g. --ulimit nofile=1024:2048.
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Seconds `berth stop` waits before SIGKILL (default 10).
    #[arg(long, value_name = "SECS")]
    stop_timeout: Option<u32>,
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
    /// User namespace: "" (berth's map: root is you), keep-id[:uid=N,gid=N] (your uid/gid
    /// inside is you outside, and the process runs as it), host (as root: none).
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
    /// Run in a KVM microVM with its own kernel instead of a container.
    #[arg(long)]
    vm: bool,
    /// vCPUs of the microVM (--vm).
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Memory of the microVM (--vm): 512M, 2G, or a plain number of MiB.
    #[arg(short = 'm', long, value_name = "SIZE")]
    memory: Option<String>,
    /// Network: none (only lo), host, slirp4netns[:port_handler=slirp4netns], pasta, or a
    /// network made with `berth network create` (default: user-mode networking, see `berth info`);
    /// with --vm: passt (user-mode, the default) or none.
    #[arg(long, alias = "net", value_name = "MODE|NAME")]
    network: Option<String>,
    /// Publish a container port on the host: [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]; without
    /// HOSTPORT a free port is picked (`berth port` shows it).
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:][HOSTPORT:]CTRPORT[/PROTO]"
    )]
    publish: Vec<String>,
    /// Publish every port the image EXPOSEs, each on a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Another name the container has on a user-defined network.
    #[arg(long = "network-alias", value_name = "NAME")]
    network_alias: Vec<String>,
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

/// `--label K=V` (or `K`, an empty value), as Docker reads it.
fn labels(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// The create configuration the flags describe. Only the flags' text is read here; the engine
/// checks how they combine ([`CreateConfig::resolve`]).
fn config(a: &RunArgs) -> anyhow::Result<CreateConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(MountRequest::parse_volume(v)?);
    }
    for m in &a.mount {
        mounts.push(MountRequest::parse_mount(m)?);
    }
    let cpus = match &a.cpus {
        None => None,
        Some(c) => Some(
            c.parse::<f64>()
                .ok()
                .filter(|c| c.is_finite() && *c > 0.0)
                .with_context(|| {
                    format!("invalid --cpus {c:?}: give a number of CPUs such as 2")
                })?,
        ),
    };
    let memory = match &a.memory {
        None => None,
        Some(m) => Some(super::vmm::parse_mib(m)? << 20),
    };
    let log_opts = a
        .log_opt
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| {
                    format!("invalid --log-opt {o:?}: write it KEY=VALUE, e.g. max-size=10m")
                })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(CreateConfig {
        image: a.args[0].clone(),
        name: a.name.clone(),
        cmd: a.args[1..].to_vec(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        env,
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        labels: labels(&a.label),
        tty: a.tty,
        open_stdin: a.interactive,
        stop_timeout: a.stop_timeout,
        host: HostConfig {
            mounts,
            tmpfs: a.tmpfs.clone(),
            volumes_from: a.volumes_from.clone(),
            network: a.network.clone(),
            publish: a
                .publish
                .iter()
                .map(|p| p.parse::<PortSpec>())
                .collect::<Result<_, _>>()?,
            publish_all: a.publish_all,
            aliases: a.network_alias.clone(),
            restart: a.restart.parse()?,
            auto_remove: a.rm,
            read_only: a.read_only,
            init: a.init,
            privileged: a.privileged,
            cap_add: a.cap_add.clone(),
            cap_drop: a.cap_drop.clone(),
            security_opt: a.security_opt.clone(),
            userns: a.userns.clone(),
            isolation: if a.vm {
                Isolation::Vm
            } else {
                Isolation::Container
            },
            cpus,
            memory,
            ulimits: a
                .ulimit
                .iter()
                .map(|u| Ulimit::parse(u))
                .collect::<Result<_, _>>()?,
            log_opts,
        },
    })
}

/// The create configuration, checked by the engine: the image, the spec's request, the flags.
fn resolved(a: &RunArgs) -> anyhow::Result<(String, RunRequest, RunFlags)> {
    Ok(config(a)?.resolve()?)
}

/// Runs the container and returns its exit status (125 for berth's own errors).
pub fn run(engine: &Engine, args: RunArgs) -> i32 {
    let (image, req, flags) = match resolved(&args) {
        Ok(r) => r,
        Err(e) => return super::report(e, 125),
    };
    let tty = req.tty;
    if args.detach {
        return match engine
            .create(&image, req, &flags)
            .and_then(|id| engine.start_created(&id, None))
        {
            Ok(started) => {
                println!("{}", started.id);
                0
            }
            Err(e) => {
                let code = e.exit_code();
                super::report(anyhow::Error::new(e), code)
            }
        };
    }
    if flags.restart != berth::monitor::policy::RestartPolicy::No {
        // A restart policy needs the monitor: create, start attached, follow to the end.
        let attach = Request::Attach {
            stdin: args.interactive,
            stdout: true,
            stderr: true,
        };
        let started = engine
            .create(&image, req, &flags)
            .and_then(|id| engine.start_created(&id, Some(attach)));
        return match started {
            Ok(s) => super::container::follow_attached(s, tty, args.interactive),
            Err(e) => {
                let code = e.exit_code();
                super::report(anyhow::Error::new(e), code)
            }
        };
    }
    match engine.run(&image, req, flags) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            super::report(anyhow::Error::new(e), code)
        }
    }
}

/// `berth create`: the container, ready for `berth start`; prints its id. A flag berth
/// refuses is a usage error (125, as Docker); other failures are 1.
pub fn create(engine: &Engine, args: RunArgs) -> i32 {
    let parsed = (|| {
        if args.detach {
            bail!("berth create takes no -d: the container is created stopped; `berth start` runs it in the background");
        }
        resolved(&args)
    })();
    let (image, req, flags) = match parsed {
        Ok(p) => p,
        Err(e) => return super::report(e, 125),
    };
    match engine.create(&image, req, &flags) {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e @ berth::engine::EngineError::Usage(_)) => super::report(anyhow::Error::new(e), 125),
        Err(e) => super::report(anyhow::Error::new(e), 1),
    }
}
