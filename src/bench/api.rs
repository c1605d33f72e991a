//! `berth bench api`: what the Docker Engine API costs. The same `docker run --rm --network
//! none IMG true`, by the same docker CLI, through berth's socket, podman's (`podman system
//! service`) and rootful Docker's, beside the berth CLI doing it directly; then N concurrent
//! `docker run -d` through each API; and the idle berth service's memory.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::peers::Podman;
use super::report::{Measured, Report, Row};
use super::startup::{measure_runs, row};
use super::{have, interrupted, BenchEnv, BenchError, Machine, Wall};

/// What `berth bench api` was asked.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub image: String,
    pub runs: usize,
    pub warmups: usize,
    /// `podman`, `docker` (rootful, started by the bench where it can be).
    pub peers: Vec<String>,
    /// Containers started at once in the concurrency row.
    pub concurrent: usize,
}

/// A Docker API service the bench started, stopped when dropped.
struct Service {
    socket: PathBuf,
    child: Child,
}

impl Service {
    fn start(mut cmd: Command, socket: &Path) -> Result<Service, String> {
        let _ = std::fs::remove_file(socket);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the service: {e}"))?;
        let mut svc = Service {
            socket: socket.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(socket).is_err() {
            if Instant::now() > deadline {
                return Err(format!("no API on {} within 60 s", socket.display()));
            }
            if let Ok(Some(status)) = svc.child.try_wait() {
                return Err(format!("the service exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(svc)
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CLI_HINTS", "false");
        cmd
    }

    /// RSS and PSS of the service process, in MiB.
    fn memory(&self) -> Option<(f64, f64)> {
        let pid = self.child.id() as i32;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()?;
        let (pss, _) = super::procs::pss_sum(&[pid]);
        Some((rss / 1024.0, pss as f64 / 1024.0))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !matches!(
            super::wait_timeout(&mut self.child, Duration::from_secs(20)),
            super::Waited::Exited(_)
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `N × docker run -d` at once, then removed; the time until all have started.
fn concurrent(
    svc: &Service,
    image: &str,
    n: usize,
    runs: usize,
    label: &str,
) -> Result<Measured, String> {
    let bar = super::progress(runs, label);
    let mut m = Measured::default();
    for _ in 0..runs {
        let began = Instant::now();
        let children: Vec<Child> = (0..n)
            .map(|_| {
                svc.docker(&["run", "-d", "--network", "none", image, "sleep", "600"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("docker run -d: {e}"))?;
        let mut ids = Vec::new();
        let mut failure = None;
        for c in children {
            match c.wait_with_output() {
                Ok(o) if o.status.success() => {
                    ids.push(String::from_utf8_lossy(&o.stdout).trim().to_string())
                }
                Ok(o) => failure = Some(super::last_line(&String::from_utf8_lossy(&o.stderr))),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        let elapsed = began.elapsed();
        if !ids.is_empty() {
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.iter().map(String::as_str));
            let _ = svc
                .docker(&rm)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(why) = failure {
            bar.finish_and_clear();
            return Err(format!("a docker run -d failed: {why}"));
        }
        m.times_ms.push(elapsed.as_secs_f64() * 1000.0);
        bar.inc(1);
        if interrupted() {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(m)
}

/// Runs the bench.
pub fn run(env: &BenchEnv, opts: &ApiOptions) -> Result<Report, BenchError> {
    if opts.runs == 0 {
        return Err(BenchError::Zero { flag: "runs" });
    }
    env.check_image(&opts.image)?;
    let machine = Machine::probe();
    let image = opts.image.as_str();
    let mut rows = Vec::new();
    let run_args = ["run", "--rm", "--network", "none", image, "true"];
    let docker_missing = have("docker")
        .is_none()
        .then(|| "the docker CLI is not installed".to_string());

    let cli = measure_runs(env, opts.warmups, opts.runs, "berth CLI", |_| {
        env.berth(&run_args)
    });
    rows.push(row(
        "berth CLI",
        Wall::Container,
        true,
        "berth",
        &run_args,
        cli,
    ));

    let socket = env.scratch.join("berth-api.sock");
    let uri = format!("unix://{}", socket.display());
    let berth_svc = match &docker_missing {
        Some(why) => Err(why.clone()),
        None => Service::start(
            env.berth(&["system", "service", "--time", "0", &uri]),
            &socket,
        ),
    };
    let (api_row, concurrent_row) = match &berth_svc {
        Ok(svc) => {
            // Idle: after one request (the first one maps what serving needs), nothing running.
            let _ = svc
                .docker(&["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(300));
            let idle = svc.memory();
            let timed = measure_runs(env, opts.warmups, opts.runs, "docker -> berth", |_| {
                svc.docker(&run_args)
            });
            let many = concurrent(
                svc,
                image,
                opts.concurrent,
                opts.runs.min(3),
                "berth API, concurrent",
            );
            (timed.map(|m| (m, idle)), many)
        }
        Err(why) => (Err(why.clone()), Err(why.clone())),
    };
    let mut r = row(
        "docker CLI -> berth API",
        Wall::Container,
        true,
        "docker",
        &run_args,
        api_row
            .as_ref()
            .map(|(m, _)| m.clone())
            .map_err(|e| e.to_string()),
    );
    let idle = api_row.ok().and_then(|(_, idle)| idle);
    if let (Ok(svc), Some((idle_rss, idle_pss))) = (&berth_svc, idle) {
        if let Some((rss, pss)) = svc.memory() {
            r.note = Some(format!(
                "the service idle: RSS {idle_rss:.1} MiB, PSS {idle_pss:.1} MiB; after the runs: RSS {rss:.1} MiB, PSS {pss:.1} MiB"
            ));
        }
    }
    rows.push(r);
    drop(berth_svc);

    let mut concurrent_rows = vec![{
        let mut r = row(
            &format!("{} x docker run -d -> berth API", opts.concurrent),
            Wall::Container,
            true,
            "docker",
            &["run", "-d", "--network", "none", image, "sleep", "600"],
            concurrent_row,
        );
        r.note = Some("time until all have started".into());
        r
    }];

    if opts.peers.iter().any(|p| p == "podman") {
        let (one, many) = podman(env, opts, docker_missing.as_deref());
        rows.push(one);
        concurrent_rows.push(many);
    }
    if opts.peers.iter().any(|p| p == "docker") {
        rows.push(docker_peer(env, opts, docker_missing.as_deref()));
    }
    rows.extend(concurrent_rows);
    Ok(Report {
        benchmark: "api",
        machine,
        date: super::startup::date(),
        image: opts.image.clone(),
        runs: opts.runs,
        warmups: opts.warmups,
        rows,
    })
}

/// podman's Docker API (`podman system service`), with the bench's podman storage.
fn podman(env: &BenchEnv, opts: &ApiOptions, docker_missing: Option<&str>) -> (Row, Row) {
    let run_args = |image: &str| {
        ["run", "--rm", "--network", "none", image, "true"]
            .map(String::from)
            .to_vec()
    };
    let many_args = ["run", "-d", "--network", "none", "IMAGE", "sleep", "600"];
    let fail = |why: String| {
        (
            row(
                "docker CLI -> podman API",
                Wall::Container,
                false,
                "docker",
                &run_args("IMAGE")
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                Err(why.clone()),
            ),
            row(
                &format!("{} x docker run -d -> podman API", opts.concurrent),
                Wall::Container,
                false,
                "docker",
                &many_args,
                Err(why),
            ),
        )
    };
    if let Some(why) = docker_missing {
        return fail(why.to_string());
    }
    let p = match Podman::prepare(env, &opts.image) {
        Ok(p) => p,
        Err(why) => return fail(why),
    };
    let socket = env.scratch.join("podman-api.sock");
    let uri = format!("unix://{}", socket.display());
    let mut cmd = p.command(&[
        "--runtime",
        p.runtime,
        "system",
        "service",
        "--time",
        "0",
        &uri,
    ]);
    cmd.env("XDG_RUNTIME_DIR", env.scratch.join("podman-run"));
    let _ = std::fs::create_dir_all(env.scratch.join("podman-run"));
    let svc = match Service::start(cmd, &socket) {
        Ok(s) => s,
        Err(why) => return fail(format!("podman system service: {why}")),
    };
    let args = run_args(&p.image);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let one = measure_runs(env, opts.warmups, opts.runs, "docker -> podman", |_| {
        svc.docker(&args)
    });
    let many = concurrent(
        &svc,
        &p.image,
        opts.concurrent,
        opts.runs.min(3),
        "podman API, concurrent",
    );
    let many_args = [
        "run",
        "-d",
        "--network",
        "none",
        p.image.as_str(),
        "sleep",
        "600",
    ];
    (
        row(
            "docker CLI -> podman API",
            Wall::Container,
            false,
            "docker",
            &args,
            one,
        ),
        row(
            &format!("{} x docker run -d -> podman API", opts.concurrent),
            Wall::Container,
            false,
            "docker",
            &many_args,
            many,
        ),
    )
}

/// Rootful Docker (Debian's docker.io): started by the bench, as root, with its own data
/// directory and socket, the image loaded from berth.
fn docker_peer(env: &BenchEnv, opts: &ApiOptions, docker_missing: Option<&str>) -> Row {
    let args = ["run", "--rm", "--network", "none", "IMAGE", "true"];
    let fail = |why: String| {
        row(
            "docker CLI -> Docker (rootful)",
            Wall::Container,
            false,
            "docker",
            &args,
            Err(why),
        )
    };
    if let Some(why) = docker_missing {
        return fail(why.to_string());
    }
    if have("dockerd").is_none() {
        return fail("dockerd not installed (apt-get install docker.io)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return fail("rootful Docker needs root: run the bench as root to include it".into());
    }
    let dir = env.scratch.join("dockerd");
    let socket = dir.join("docker.sock");
    let _ = std::fs::create_dir_all(&dir);
    let mut cmd = Command::new("dockerd");
    cmd.arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args(["--iptables=false", "--bridge=none"]);
    let svc = match Service::start(cmd, &socket) {
        Ok(s) => s,
        Err(why) => return fail(format!("dockerd: {why}")),
    };
    let archive = dir.join("image.tar");
    let archive_s = archive.display().to_string();
    let saved = env
        .berth(&["save", "-o", &archive_s, &opts.image])
        .status()
        .is_ok_and(|s| s.success());
    let loaded = saved
        && svc
            .docker(&["load", "-i", &archive_s])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !loaded {
        return fail("could not load the image into dockerd (berth save | docker load)".into());
    }
    let image = opts.image.clone();
    let run_args = ["run", "--rm", "--network", "none", image.as_str(), "true"];
    let one = measure_runs(env, opts.warmups, opts.runs, "docker -> dockerd", |_| {
        svc.docker(&run_args)
    });
    let _ = svc
        .docker(&["system", "prune", "-a", "-f"])
        .stdout(Stdio::null())
        .status();
    row(
        "docker CLI -> Docker (rootful)",
        Wall::Container,
        false,
        "docker",
        &run_args,
        one,
    )
}
