//! `berth run` and `berth create`: Docker's flags, turned into a `RunRequest` and `RunFlags`
//! for the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use berth::engine::{Engine, MountRequest, RunFlags, VmNetwork, VmRequest};
use berth::monitor::proto::Request;
use berth::net::{NetworkOptions, NetworkRequest, PortSpec};
use berth::spec::ulimit::Ulimit;
use berth::spec::{NetworkMode, RunRequest, SeccompMode};
use berth::state::LogConfig;

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
    // The engine settles the container's network; the spec only needs to know about host.
    let network = match a.network.as_deref() {
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        _ if a.vm => NetworkMode::None,
        _ => NetworkMode::Connected,
    };
    Ok(RunRequest {
        cmd: a.args[1..].to_vec(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        // Container mounts go through the engine (`RunFlags::mounts`), which resolves
        // volumes; a microVM takes --tmpfs as it is.
        volumes: vec![],
        tmpfs: if a.vm { a.tmpfs.clone() } else { vec![] },
        read_only: a.read_only,
        init: a.init,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        seccomp,
        privileged: a.privileged,
        network,
        tty: a.tty,
        ulimits: a
            .ulimit
            .iter()
            .map(|u| Ulimit::parse(u))
            .collect::<Result<_, _>>()?,
    })
}

/// The default microVM: one vCPU, 512 MiB (mapped lazily: only what the guest touches costs
/// host memory).
const VM_DEFAULT_CPUS: u8 = 1;
const VM_DEFAULT_MEM_MIB: u64 = 512;

/// The microVM `--vm` asks for, after refusing the flags a microVM cannot honour.
fn vm_request(a: &RunArgs) -> anyhow::Result<Option<VmRequest>> {
    if !a.vm {
        if a.cpus.is_some() || a.memory.is_some() {
            bail!("--cpus and --memory size a microVM (--vm); berth does not limit containers through cgroups yet");
        }
        return Ok(None);
    }
    let refuse = |flag: &str, why: &str| -> anyhow::Result<()> {
        bail!("{flag} is not available with --vm: {why}")
    };
    if !a.cap_add.is_empty() || !a.cap_drop.is_empty() || a.privileged {
        refuse("--cap-add/--cap-drop/--privileged", "the process in a microVM runs with the guest's own privileges; the VM itself is the wall")?;
    }
    if !a.security_opt.is_empty() {
        refuse(
            "--security-opt",
            "the guest agent applies no seccomp profile; the VM itself is the wall",
        )?;
    }
    let network = match a.network.as_deref() {
        None | Some("passt") => VmNetwork::Passt,
        Some("none") => VmNetwork::None,
        Some(other) => match other.parse::<NetworkRequest>() {
            Ok(NetworkRequest::Named(name)) => VmNetwork::Named(name),
            _ => {
                refuse(
                    &format!("--network {other}"),
                    "a microVM's network is user-mode (passt, the default), none, or a network made with `berth network create`",
                )?;
                VmNetwork::None
            }
        },
    };
    if network == VmNetwork::None && (!a.publish.is_empty() || a.publish_all) {
        refuse(
            "-p/-P with --network none",
            "published ports reach a microVM through its user-mode network (passt, the default)",
        )?;
    }
    if !a.network_alias.is_empty() && !matches!(network, VmNetwork::Named(_)) {
        refuse(
            "--network-alias",
            "aliases name a microVM on a user-defined network (--network NAME); its own user-mode network has no peers",
        )?;
    }
    let cpus = match &a.cpus {
        None => VM_DEFAULT_CPUS,
        Some(c) => match c.parse::<u8>() {
            Ok(n) if (1..=8).contains(&n) => n,
            _ => bail!("invalid --cpus {c:?}: a microVM gets a whole number of vCPUs from 1 to 8"),
        },
    };
    let mem_mib = match &a.memory {
        None => VM_DEFAULT_MEM_MIB,
        Some(m) => super::vmm::parse_mib(m)?,
    };
    Ok(Some(VmRequest {
        cpus,
        mem_mib,
        network,
    }))
}

/// `--network`, `-p`, `-P`, `--network-alias` for the engine.
fn network_options(a: &RunArgs) -> anyhow::Result<NetworkOptions> {
    let request = match a.network.as_deref() {
        None => NetworkRequest::Default,
        Some(n) => n.parse()?,
    };
    Ok(NetworkOptions {
        request,
        publish: a
            .publish
            .iter()
            .map(|p| p.parse::<PortSpec>())
            .collect::<Result<_, _>>()?,
        publish_all: a.publish_all,
        aliases: a.network_alias.clone(),
    })
}

fn log_config(opts: &[String]) -> anyhow::Result<LogConfig> {
    let mut log = LogConfig::default();
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                log.max_size = berth::spec::parse_size(v)
                    .with_context(|| format!("invalid --log-opt {o:?}: give a size like 10m"))?
            }
            Some(("max-file", v)) => {
                log.max_files = v.parse().ok().filter(|n| *n > 0).with_context(|| {
                    format!("invalid --log-opt {o:?}: give a count of at least 1")
                })?
            }
            _ => {
                bail!("unsupported --log-opt {o:?}: berth's log takes max-size=SIZE and max-file=N")
            }
        }
    }
    Ok(log)
}

/// The engine's flags from the command line (everything but the spec's own fields).
fn flags(a: &RunArgs, vm: Option<VmRequest>) -> anyhow::Result<RunFlags> {
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(MountRequest::parse_volume(v)?);
    }
    for m in &a.mount {
        mounts.push(MountRequest::parse_mount(m)?);
    }
    if !a.vm {
        for t in &a.tmpfs {
            mounts.push(MountRequest::parse_tmpfs(t)?);
        }
    }
    let restart = a.restart.parse()?;
    if a.rm && restart != berth::monitor::policy::RestartPolicy::No {
        bail!("--rm and --restart {} conflict: a container removed when it exits cannot restart; drop one of them", a.restart);
    }
    // A microVM's network is chosen by vm_request (which refuses -p/-P with --network none);
    // only the ports to publish and the aliases come from here.
    let network = if vm.is_some() {
        let publish = a
            .publish
            .iter()
            .map(|p| p.parse::<PortSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        NetworkOptions {
            request: NetworkRequest::None,
            publish,
            publish_all: a.publish_all,
            aliases: a.network_alias.clone(),
        }
    } else {
        network_options(a)?
    };
    Ok(RunFlags {
        name: a.name.clone(),
        remove: a.rm,
        attach_stdin: a.interactive,
        vm,
        network,
        restart,
        log: log_config(&a.log_opt)?,
        mounts,
        volumes_from: a.volumes_from.clone(),
        stop_timeout: a.stop_timeout,
        userns: a.userns.as_deref().unwrap_or("").parse()?,
    })
}

/// Runs the container and returns its exit status (125 for berth's own errors).
pub fn run(engine: &Engine, args: RunArgs) -> i32 {
    let parsed = request(&args).and_then(|r| {
        let vm = vm_request(&args)?;
        Ok((r, flags(&args, vm)?))
    });
    let (req, flags) = match parsed {
        Ok(r) => r,
        Err(e) => return super::report(e, 125),
    };
    let image = args.args[0].clone();
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
        let req = request(&args)?;
        let vm = vm_request(&args)?;
        Ok((req, flags(&args, vm)?))
    })();
    let (req, flags) = match parsed {
        Ok(p) => p,
        Err(e) => return super::report(e, 125),
    };
    match engine.create(&args.args[0], req, &flags) {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e @ berth::engine::EngineError::Usage(_)) => super::report(anyhow::Error::new(e), 125),
        Err(e) => super::report(anyhow::Error::new(e), 1),
    }
}
