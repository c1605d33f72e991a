//! The container commands past `run`: `start`, `stop`, `kill`, `restart`, `rm`, `rename`,
//! `wait`, `ps`, `inspect`, `logs`, `attach`.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use berth::attach::{self, SessionEnd, SessionOptions};
use berth::clock;
use berth::engine::{state_of, Engine, LogsOptions, StartedContainer};
use berth::monitor::log::Stream;
use berth::monitor::proto::Request;
use berth::state::{ContainerRecord, MountKind, Status};

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout and stderr and return the container's exit status.
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too (with -a).
    #[arg(short, long)]
    interactive: bool,
    /// The keys that detach from an attached terminal.
    #[arg(long, value_name = "KEYS", env = "BERTH_DETACH_KEYS", default_value = attach::DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to end it before SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECS"
    )]
    time: Option<u32>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// The signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id=, name=, status=, ancestor=, exited=, volume=, isolation= (repeatable).
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// table (default), json (one object per line), a Go template ({{.ID}} {{.Names}}), or
    /// `table TEMPLATE` (with a header, in columns).
    #[arg(long)]
    format: Option<String>,
    /// Full ids and commands.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A Go template over each object ({{.State.Status}}), or json.
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Only lines since a time: RFC 3339, Unix seconds, or a duration back (10m).
    #[arg(long)]
    since: Option<String>,
    /// Only lines before a time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Prefix each line with its RFC 3339 time.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not relay stdin.
    #[arg(long)]
    no_stdin: bool,
    /// The keys that detach.
    #[arg(long, value_name = "KEYS", env = "BERTH_DETACH_KEYS", default_value = attach::DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Pass SIGINT, SIGTERM and SIGHUP on to a container without a terminal.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    container: String,
}

/// Runs `f` for each container, printing the name on success as Docker does; the first
/// error is returned after all were tried.
fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut failed = None;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                if names.len() > 1 {
                    super::report(anyhow::anyhow!("{e:#}"), 1);
                }
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(e) if names.len() == 1 => Err(e),
        Some(_) => Err(anyhow::anyhow!("some containers failed (see above)")),
    }
}

/// Relays an attached session until it ends; returns the exit status for berth to end with.
pub fn follow_attached(started: StartedContainer, tty: bool, stdin: bool) -> i32 {
    follow_session(started, tty, stdin, attach::DEFAULT_DETACH_KEYS, true)
}

fn follow_session(
    started: StartedContainer,
    tty: bool,
    stdin: bool,
    keys: &str,
    proxy: bool,
) -> i32 {
    let Some(stream) = started.client else {
        return 0;
    };
    let detach_keys = match attach::parse_detach_keys(keys) {
        Ok(k) => k,
        Err(e) => return super::report(anyhow::anyhow!(e), 125),
    };
    let id = started.id.clone();
    let opts = SessionOptions {
        tty,
        stdin,
        detach_keys,
        proxy_signals: proxy,
        signal: Box::new(move |sig| {
            if let Ok(engine) = Engine::open(Default::default()) {
                let _ = engine.kill(&id, sig);
            }
        }),
    };
    match attach::session(stream, opts) {
        Ok(SessionEnd::Exited(code)) => code,
        Ok(SessionEnd::Detached) => {
            eprintln!("\r\nberth: detached from {} (it keeps running)", &started.id[..12]);
            0
        }
        Ok(SessionEnd::Lost) => super::report(
            anyhow::anyhow!(
                "the container's monitor went away without an exit status; `berth ps -a` shows what is known"
            ),
            125,
        ),
        Err(e) => super::report(anyhow::anyhow!("attached session: {e}"), 125),
    }
}

/// `berth start`: returns the exit status to end with (the container's with -a).
pub fn start(engine: &Engine, args: StartArgs) -> i32 {
    if args.attach {
        if args.containers.len() != 1 {
            return super::report(anyhow::anyhow!("start -a takes one container"), 1);
        }
        let rec = match engine.container(&args.containers[0]) {
            Ok(r) => r,
            Err(e) => return super::report(e.into(), 1),
        };
        let stdin = args.interactive && rec.open_stdin;
        let req = Request::Attach {
            stdin,
            stdout: true,
            stderr: true,
        };
        return match engine.start(&rec.id, Some(req)) {
            Ok(s) => follow_session(s, rec.tty, stdin, &args.detach_keys, true),
            Err(e) => {
                let code = e.exit_code();
                super::report(e.into(), code)
            }
        };
    }
    match each(&args.containers, |c| {
        engine.start(c, None)?;
        Ok(())
    }) {
        Ok(()) => 0,
        Err(e) => super::report(e, 1),
    }
}

/// Said on stderr when the stop signal did not end a container in time (as podman does).
fn killing(n: &berth::engine::KillNotice) {
    eprintln!(
        "berth: {} did not stop within {} seconds of {}: resorting to SIGKILL",
        n.name, n.secs, n.signal
    );
}

pub fn stop(engine: &Engine, args: StopArgs) -> anyhow::Result<()> {
    each(&args.containers, |c| {
        engine.stop_noting(c, args.time, &mut killing)?;
        Ok(())
    })
}

pub fn restart(engine: &Engine, args: StopArgs) -> anyhow::Result<()> {
    each(&args.containers, |c| {
        engine.restart(c, args.time, &mut killing)?;
        Ok(())
    })
}

pub fn kill(engine: &Engine, args: KillArgs) -> anyhow::Result<()> {
    let sig = berth::engine::parse_signal(&args.signal).with_context(|| {
        format!(
            "invalid signal {:?}: use a name (TERM, SIGKILL) or a number",
            args.signal
        )
    })?;
    each(&args.containers, |c| {
        engine.kill(c, sig)?;
        Ok(())
    })
}

pub fn rm(engine: &Engine, args: RmArgs) -> anyhow::Result<()> {
    each(&args.containers, |c| {
        engine.remove(c, args.force, args.volumes)?;
        Ok(())
    })
}

pub fn rename(engine: &Engine, args: RenameArgs) -> anyhow::Result<()> {
    engine.rename(&args.container, &args.new_name)?;
    Ok(())
}

pub fn wait(engine: &Engine, args: WaitArgs) -> anyhow::Result<()> {
    let mut failed = None;
    for c in &args.containers {
        match engine.wait(c) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                if args.containers.len() > 1 {
                    eprintln!("berth: {e}");
                }
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) if args.containers.len() == 1 => Err(e.into()),
        Some(_) => Err(anyhow::anyhow!(
            "some containers could not be waited for (see above)"
        )),
        None => Ok(()),
    }
}

fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id[..12.min(id.len())].to_string()
    }
}

/// The fields of a `ps` row, with their column headers.
const PS_FIELDS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Names", "NAMES"),
    ("Mounts", "MOUNTS"),
    ("Ports", "PORTS"),
    ("Isolation", "ISOLATION"),
];

/// One container as `ps --format json` shows it.
fn ps_row(r: &ContainerRecord, no_trunc: bool) -> Value {
    let mut cmd = r.command.join(" ");
    if !no_trunc && cmd.len() > 20 {
        let cut = (0..=19)
            .rev()
            .find(|i| cmd.is_char_boundary(*i))
            .unwrap_or(0);
        cmd.truncate(cut);
        cmd.push('…');
    }
    let mounts: Vec<String> = r
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs)
        .map(|m| {
            m.name
                .clone()
                .unwrap_or_else(|| m.source.display().to_string())
        })
        .collect();
    json!({
        "ID": short(&r.id, no_trunc),
        "Image": r.image,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": clock::rfc3339(r.created as i128 * 1_000_000_000),
        "RunningFor": format!("{} ago", clock::ago(r.created as i128 * 1_000_000_000)),
        "Status": berth::engine::status_text(r),
        "State": state_of(r).name(),
        "Names": r.name,
        "Mounts": mounts.join(","),
        "Ports": r
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        "Isolation": match r.isolation {
            berth::state::Isolation::Container => "container",
            berth::state::Isolation::Vm => "vm",
        },
    })
}

pub fn ps(engine: &Engine, args: PsArgs) -> anyhow::Result<()> {
    let filters: Vec<(String, String)> = args
        .filter
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("invalid filter {f:?}: use KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    // A status filter asks for stopped containers too, as in Docker.
    let all = args.all || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut shown = Vec::new();
    for r in engine.containers() {
        if !all && state_of(&r) != Status::Running {
            continue;
        }
        if berth::engine::filters::container_matches(&r, &filters)? {
            shown.push(r);
        }
    }
    if args.quiet {
        for r in &shown {
            println!("{}", short(&r.id, args.no_trunc));
        }
        return Ok(());
    }
    match args.format.as_deref() {
        None | Some("table") => {
            let mut rows = vec![[
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "PORTS".into(),
                "NAMES".into(),
            ]];
            for r in &shown {
                let row = ps_row(r, args.no_trunc);
                let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
                rows.push([
                    s("ID"),
                    s("Image"),
                    s("Command"),
                    s("RunningFor"),
                    s("Status"),
                    s("Ports"),
                    s("Names"),
                ]);
            }
            super::image::print_table(&rows);
        }
        other => {
            let rows: Vec<Value> = shown.iter().map(|r| ps_row(r, args.no_trunc)).collect();
            if let Some(text) =
                super::format::listing(other, &rows, PS_FIELDS).map_err(anyhow::Error::msg)?
            {
                print!("{text}");
            }
        }
    }
    Ok(())
}

/// `berth inspect NAME...`: containers, or images when no container has the name.
pub fn inspect(engine: &Engine, args: InspectArgs) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for n in &args.names {
        match engine.inspect_container(n) {
            Ok(v) => all.push(v),
            Err(berth::engine::EngineError::State(berth::state::StateError::NotFound(_))) => {
                let image = engine.inspect_image(n).map_err(|_| {
                    anyhow::anyhow!("no such container or image: {n} (`berth ps -a` and `berth images` list them)")
                })?;
                all.push(serde_json::to_value(image)?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    match args.format.as_deref() {
        None | Some("json") => println!("{}", serde_json::to_string_pretty(&all)?),
        Some(template) => {
            for v in &all {
                println!(
                    "{}",
                    super::format::render(template, v).map_err(anyhow::Error::msg)?
                );
            }
        }
    }
    Ok(())
}

pub fn logs(engine: &Engine, args: LogsArgs) -> anyhow::Result<()> {
    let now = clock::now_nanos();
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i128>> {
        v.as_deref()
            .map(|s| {
                clock::parse_since(s, now).with_context(|| {
                    format!("invalid {flag} {s:?}: give an RFC 3339 time, Unix seconds or a duration like 10m")
                })
            })
            .transpose()
    };
    let tail =
        match args.tail.as_str() {
            "all" | "-1" => None,
            n => Some(n.parse::<usize>().with_context(|| {
                format!("invalid --tail {n:?}: give a number of lines or \"all\"")
            })?),
        };
    let opts = LogsOptions {
        follow: args.follow,
        tail,
        since: time("--since", &args.since)?,
        until: time("--until", &args.until)?,
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    engine.logs(&args.container, &opts, &mut |e| {
        let stamp = if args.timestamps {
            format!("{} ", clock::rfc3339(e.time))
        } else {
            String::new()
        };
        match e.stream {
            Stream::Stdout => {
                let mut out = stdout.lock();
                out.write_all(stamp.as_bytes())?;
                out.write_all(&e.data)?;
                out.flush()
            }
            Stream::Stderr => {
                let mut err = stderr.lock();
                err.write_all(stamp.as_bytes())?;
                err.write_all(&e.data)
            }
        }
    })?;
    Ok(())
}

/// `berth attach`: returns the container's exit status, or 0 after detaching.
pub fn attach_cmd(engine: &Engine, args: AttachArgs) -> i32 {
    let rec = match engine.container(&args.container) {
        Ok(r) => r,
        Err(e) => return super::report(e.into(), 1),
    };
    if state_of(&rec) != Status::Running {
        return super::report(
            anyhow::anyhow!(
                "container {} is not running: start it with `berth start -a {}`",
                rec.name,
                rec.name
            ),
            1,
        );
    }
    if rec.socket.is_none() {
        return super::report(
            anyhow::anyhow!(
                "container {} runs in the foreground of another berth command: its terminal is that command's",
                rec.name
            ),
            1,
        );
    }
    let stdin = !args.no_stdin && rec.open_stdin;
    let req = Request::Attach {
        stdin,
        stdout: true,
        stderr: true,
    };
    match engine.start(&rec.id, Some(req)) {
        Ok(s) => follow_session(s, rec.tty, stdin, &args.detach_keys, args.sig_proxy),
        Err(e) => super::report(e.into(), 1),
    }
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin attached.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (K=V, or K to copy it from this environment).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// User to run as: name or uid, with an optional :group or :gid.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Start the process and return; its output is discarded.
    #[arg(short, long)]
    detach: bool,
    /// Give the process every capability.
    #[arg(long)]
    privileged: bool,
    /// The container, then the command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CONTAINER CMD"
    )]
    args: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// Options for the host's ps (e.g. -o pid,comm); its rows are cut to the container's.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PS OPTIONS"
    )]
    ps_args: Vec<String>,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one sample and exit (default: refresh every second).
    #[arg(long)]
    no_stream: bool,
    /// table (default) or json (one object per line).
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running).
    containers: Vec<String>,
}

/// `berth exec`: the process's exit status (125 for berth's own failures, 126/127 when the
/// command cannot run or is not found).
pub fn exec(engine: &Engine, args: ExecArgs) -> i32 {
    if args.args.len() < 2 {
        return super::report(
            anyhow::anyhow!("no command: give one after the container, e.g. `berth exec C sh`"),
            125,
        );
    }
    let env = args
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    let opts = berth::engine::ExecOptions {
        cmd: args.args[1..].to_vec(),
        env,
        user: args.user,
        workdir: args.workdir,
        tty: args.tty,
        interactive: args.interactive,
        detach: args.detach,
        privileged: args.privileged,
    };
    match engine.exec(&args.args[0], &opts) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            super::report(e.into(), code)
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

pub fn top(engine: &Engine, args: TopArgs) -> anyhow::Result<()> {
    if args.ps_args.is_empty() {
        let mut rows = vec![[
            "UID".to_string(),
            "PID".into(),
            "PPID".into(),
            "TIME".into(),
            "CMD".into(),
        ]];
        for p in engine.top(&args.container)? {
            let secs = p.cpu.as_secs();
            rows.push([
                p.uid
                    .map_or_else(|| format!("host:{}", p.host_uid), |u| u.to_string()),
                p.pid.to_string(),
                p.ppid.to_string(),
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
                p.cmd,
            ]);
        }
        super::image::print_table(&rows);
        return Ok(());
    }
    // Docker's way: the host's ps with the given options, its rows cut to the container's.
    let pids = engine.container_pids(&args.container)?;
    let out = std::process::Command::new("ps")
        .args(&args.ps_args)
        .output()
        .context("running ps: install procps, or run `berth top` without options")?;
    if !out.status.success() {
        bail!(
            "ps {} failed: {}",
            args.ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("the ps options must include the PID column (e.g. -o pid,comm)");
    };
    println!("{header}");
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{l}");
        }
    }
    Ok(())
}

pub fn stats(engine: &Engine, args: StatsArgs) -> anyhow::Result<()> {
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") => true,
        Some(other) => bail!("unknown --format {other:?}: use table or json"),
    };
    loop {
        let stats = engine.stats(&args.containers, std::time::Duration::from_millis(500))?;
        if !args.no_stream && !json {
            print!("\x1b[2J\x1b[H");
        }
        if json {
            for s in &stats {
                println!("{}", serde_json::to_string(s)?);
            }
        } else {
            let mut rows = vec![[
                "CONTAINER ID".to_string(),
                "NAME".into(),
                "CPU %".into(),
                "MEM (PSS)".into(),
                "MEM LIMIT".into(),
                "NET I/O".into(),
                "BLOCK I/O".into(),
                "PIDS".into(),
            ]];
            for s in &stats {
                rows.push([
                    s.id[..12].to_string(),
                    s.name.clone(),
                    format!("{:.2}%", s.cpu_percent),
                    human_bytes(s.memory_pss),
                    "none".into(),
                    match (s.net_rx, s.net_tx) {
                        (Some(r), Some(t)) => format!("{} / {}", human_bytes(r), human_bytes(t)),
                        _ => "host network".into(),
                    },
                    format!(
                        "{} / {}",
                        human_bytes(s.block_read),
                        human_bytes(s.block_write)
                    ),
                    s.pids.to_string(),
                ]);
            }
            super::image::print_table(&rows);
            println!("note: {}", berth::engine::cgroup_note());
        }
        if args.no_stream {
            return Ok(());
        }
        let _ = std::io::stdout().flush();
    }
}

#[derive(Args)]
pub struct CpArgs {
    /// Keep the files' uid and gid.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as the source.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:PATH, a host path, or - (a tar stream on stdin).
    src: String,
    /// CONTAINER:PATH, a host path, or - (a tar stream on stdout).
    dest: String,
}

#[derive(Args)]
pub struct CommitArgs {
    /// A comment for the new layer's history.
    #[arg(short, long)]
    message: Option<String>,
    /// The author.
    #[arg(short, long)]
    author: Option<String>,
    /// A Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL.
    #[arg(short, long)]
    change: Vec<String>,
    container: String,
    /// NAME[:TAG] for the new image (untagged without).
    image: Option<String>,
}

pub fn cp(engine: &Engine, args: CpArgs) -> anyhow::Result<()> {
    let src = berth::engine::CopyEnd::parse(&args.src);
    let dest = berth::engine::CopyEnd::parse(&args.dest);
    let opts = berth::engine::CopyOptions {
        archive: args.archive,
        follow_link: args.follow_link,
    };
    engine.copy(&src, &dest, opts)?;
    Ok(())
}

pub fn commit(engine: &Engine, args: CommitArgs) -> anyhow::Result<()> {
    let rec = engine.container(&args.container)?;
    // A microVM's agent stops the guest's processes while it archives (as Docker pauses).
    if state_of(&rec) == Status::Running && rec.machine.is_none() {
        eprintln!(
            "berth: warning: {} is running and cannot be paused without cgroups (rootless, this host): a file written during the commit may be caught half-way; stop it first for a consistent image",
            rec.name
        );
    }
    let opts = berth::engine::CommitOptions {
        message: args.message,
        author: args.author,
        changes: args.change,
    };
    let id = engine.commit(&rec.id, args.image.as_deref(), &opts)?;
    println!("{id}");
    Ok(())
}
