//! `berth bench density`: start N idle sandboxes of each kind one after the other, then
//! measure what each costs in memory: the PSS of every process that belongs to it (for a
//! container: its monitor and everything below; for a microVM: the VMM process, whose PSS
//! holds the guest memory the guest has touched, and its helpers; for podman: conmon and
//! everything below), read once they have all been idle for a few seconds. Every sandbox
//! started is removed at the end, also when interrupted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::peers::{Peer, Podman};
use super::report::{Density, Measured, Report, Row};
use super::startup::{date, row};
use super::{interrupted, procs, time_command, BenchEnv, BenchError, Machine, Ran, Wall};

/// What `berth bench density` was asked.
#[derive(Debug, Clone)]
pub struct DensityOptions {
    pub image: String,
    pub count: usize,
    pub walls: Vec<Wall>,
    pub peers: Vec<Peer>,
    /// Guest memory of each microVM (`--memory`), e.g. "64M".
    pub vm_memory: String,
}

/// Idle for as long as a bench may take; the bench removes it.
const IDLE: [&str; 2] = ["sleep", "2147483647"];
/// How long every row's sandboxes stay idle after the last start before their memory is read:
/// what an idle sandbox costs, not what its start-up left behind for a moment (a microVM's
/// guest reports the pages it freed two seconds after its balloon driver started).
const SETTLE: Duration = Duration::from_secs(5);

pub fn run(env: &BenchEnv, opts: &DensityOptions) -> Result<Report, BenchError> {
    if opts.count == 0 {
        return Err(BenchError::Zero { flag: "count" });
    }
    env.check_image(&opts.image)?;
    let mut rows = Vec::new();
    if opts.walls.contains(&Wall::Container) {
        rows.push(berth_containers(env, opts)?);
    }
    if opts.walls.contains(&Wall::Vm) {
        rows.push(berth_vms(env, opts)?);
    }
    for &peer in &opts.peers {
        match peer {
            Peer::Podman => rows.push(podman(env, opts)?),
            other => rows.push(row(
                other.name(),
                Wall::Container,
                false,
                other.name(),
                &[],
                Err("not measured for density: its sandboxes have no detached mode to hold them idle".into()),
            )),
        }
    }
    Ok(Report {
        benchmark: "density",
        // Probed after the sandboxes are gone, so "fits" counts from memory free of them.
        machine: Machine::probe(),
        date: date(),
        image: opts.image.clone(),
        runs: opts.count,
        warmups: 0,
        rows,
    })
}

/// Starts `count` sandboxes one after the other with `start(i)` (which records what it
/// started, for the clean-up, and returns how long that start took and the guest's boot
/// figure); then, unless one failed, reads each one's memory with `memory(i)` (its processes,
/// and for a microVM its guest memory touched). The figures, or why there are none.
fn start_all(
    count: usize,
    label: &str,
    mut start: impl FnMut(usize) -> Result<(f64, Option<f64>), String>,
    mut memory: impl FnMut(usize) -> Result<(Vec<i32>, Option<u64>), String>,
) -> Result<Result<Measured, String>, BenchError> {
    let bar = super::progress(count, label);
    let mut m = Measured::default();
    let begin = Instant::now();
    let mut failure = None;
    for i in 0..count {
        match start(i) {
            Ok((ms, boot)) => {
                m.times_ms.push(ms);
                m.boot_ms.extend(boot);
            }
            Err(reason) => {
                failure = Some(format!("failed: {reason}"));
                break;
            }
        }
        bar.inc(1);
        if interrupted() {
            break;
        }
    }
    let mut d = Density {
        total_ms: begin.elapsed().as_secs_f64() * 1000.0,
        ..Default::default()
    };
    bar.finish_and_clear();
    if interrupted() {
        return Err(BenchError::Interrupted);
    }
    if let Some(reason) = failure {
        return Ok(Err(reason));
    }
    std::thread::sleep(SETTLE);
    for i in 0..count {
        let (pids, guest) = match memory(i) {
            Ok(found) => found,
            Err(reason) => return Ok(Err(reason)),
        };
        let (pss, unreadable) = procs::pss_sum(&pids);
        d.pss_kib.push(pss as f64);
        d.unreadable += unreadable;
        d.guest_kib.extend(guest.map(|g| g as f64));
    }
    m.density = Some(d);
    Ok(Ok(m))
}

/// Times one command that returns once its sandbox runs (`run -d`).
fn timed(env: &BenchEnv, cmd: Command) -> Result<(f64, Option<f64>), String> {
    match time_command(env, cmd) {
        Ran::Ok(d, _, _) => Ok((d.as_secs_f64() * 1000.0, None)),
        Ran::Failed(reason) => Err(reason),
    }
}

/// Detached berth containers (`berth run -d`), each under its own monitor.
fn berth_containers(env: &BenchEnv, opts: &DensityOptions) -> Result<Row, BenchError> {
    let names: Vec<String> = (0..opts.count).map(|i| env.sandbox_name("c", i)).collect();
    let mut started = Started::Berth(env, Vec::new());
    let result = start_all(
        opts.count,
        "berth containers",
        |i| {
            let mut args = vec![
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &names[i],
                &opts.image,
            ];
            args.extend(IDLE);
            started.add_name(&names[i]);
            timed(env, env.berth(&args))
        },
        |i| match berth_monitor(env, &names[i]) {
            Some(pid) => Ok((procs::tree(pid), None)),
            None => Err(format!("{} is not running after its start", names[i])),
        },
    )?;
    drop(started);
    let args = [
        "run",
        "-d",
        "--network",
        "none",
        &opts.image,
        IDLE[0],
        IDLE[1],
    ];
    let mut r = row(
        "berth container",
        Wall::Container,
        true,
        "berth",
        &args,
        result,
    );
    r.note = Some("memory = PSS of the container's monitor and every process below it".into());
    Ok(r)
}

/// The PID at the top of a running berth container: its monitor.
fn berth_monitor(env: &BenchEnv, name: &str) -> Option<i32> {
    let out = env.berth(&["inspect", name]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let pids = [
        v[0]["State"]["MonitorPid"].as_i64(),
        v[0]["State"]["Pid"].as_i64(),
    ];
    pids.into_iter()
        .flatten()
        .find(|&p| p > 0)
        .map(|p| p as i32)
}

/// berth microVMs, each a `berth run --vm` process this bench holds (a microVM's VMM lives in
/// the berth process that started it). Ready when berth reports the guest agent ready.
fn berth_vms(env: &BenchEnv, opts: &DensityOptions) -> Result<Row, BenchError> {
    let mut args = vec![
        "run",
        "--vm",
        "--rm",
        "--network",
        "none",
        "--memory",
        &opts.vm_memory,
        &opts.image,
    ];
    args.extend(IDLE);
    let mut command_args = args.clone();
    command_args.insert(2, "--name");
    command_args.insert(3, "NAME");
    let skip = |why: String| {
        Ok(row(
            "berth microVM",
            Wall::Vm,
            true,
            "berth",
            &command_args,
            Err(why),
        ))
    };
    if let Some(why) = super::peers::kvm_unusable() {
        return skip(why);
    }
    let Some(mem_kib) = crate::spec::parse_size(&opts.vm_memory).map(|b| b / 1024) else {
        return skip(format!(
            "--vm-memory {}: not a size such as 64M",
            opts.vm_memory
        ));
    };
    let names: Vec<String> = (0..opts.count).map(|i| env.sandbox_name("vm", i)).collect();
    let mut started = Started::Vms(env, Vec::new());
    let pids = std::cell::RefCell::new(Vec::new());
    let result = start_all(
        opts.count,
        "berth microVMs",
        |i| {
            let mut a = args.clone();
            a.insert(2, "--name");
            a.insert(3, &names[i]);
            let mut cmd = env.berth(&a);
            cmd.env("BERTH_BOOT_TIMES", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let t0 = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start berth: {e}"))?;
            pids.borrow_mut().push(child.id() as i32);
            let ready = wait_ready(&mut child, env.timeout);
            started.add_vm(&names[i], child);
            ready.map(|boot| (t0.elapsed().as_secs_f64() * 1000.0, boot))
        },
        |i| {
            // The guest memory lives in the jailed VMM, a child of the `berth` started here;
            // look through the whole tree (the largest match, should a parent map it too).
            let tree = procs::tree(pids.borrow()[i]);
            let guest = tree
                .iter()
                .filter_map(|&p| procs::mapping_rss_kib(p, mem_kib))
                .max();
            Ok((tree, guest))
        },
    )?;
    drop(started);
    let mut r = row(
        "berth microVM",
        Wall::Vm,
        true,
        "berth",
        &command_args,
        result,
    );
    r.note = Some(format!(
        "memory = PSS of the VMM process (with the {} guest memory it has touched) and its helpers",
        opts.vm_memory
    ));
    Ok(r)
}

/// Reads a starting `berth run --vm`'s stderr until it reports the agent ready; the guest's
/// uptime then. Its stderr keeps being drained afterwards so the VM never blocks on it.
fn wait_ready(child: &mut Child, timeout: Duration) -> Result<Option<f64>, String> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = String::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains("agent ready") {
                let uptime = line
                    .split("guest uptime ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<f64>().ok());
                let _ = tx.send(Ok(uptime));
                sent = true;
            } else if !line.trim().is_empty() {
                last = line;
            }
        }
        if !sent {
            let _ = tx.send(Err(if last.is_empty() {
                "berth ended before the guest was ready".to_string()
            } else {
                last
            }));
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        if interrupted() {
            return Err("interrupted".into());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return r,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("not ready within {} s", timeout.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("berth ended before the guest was ready".into())
            }
        }
    }
}

fn podman(env: &BenchEnv, opts: &DensityOptions) -> Result<Row, BenchError> {
    let p = match Podman::prepare(env, &opts.image) {
        Ok(p) => p,
        Err(reason) => {
            return Ok(row(
                "podman",
                Wall::Container,
                false,
                "podman",
                &[],
                Err(reason),
            ))
        }
    };
    let runtime = p.runtime;
    let names: Vec<String> = (0..opts.count)
        .map(|i| env.sandbox_name("podman", i))
        .collect();
    let result = start_all(
        opts.count,
        "podman",
        |i| {
            let mut args = vec![
                "run",
                "-d",
                "--network",
                "none",
                "--runtime",
                runtime,
                "--name",
                &names[i],
                &p.image,
            ];
            args.extend(IDLE);
            timed(env, p.command(&args))
        },
        |i| match p.sandbox_pids(&names[i]) {
            pids if pids.is_empty() => Err(format!("{} is not running after its start", names[i])),
            pids => Ok((pids, None)),
        },
    );
    // Dropping `p` removes every container of this bench's podman storage.
    drop(p);
    let args = [
        "run",
        "-d",
        "--network",
        "none",
        "--runtime",
        runtime,
        &opts.image,
        IDLE[0],
        IDLE[1],
    ];
    let mut r = row(
        &format!("podman ({runtime}, overlay)"),
        Wall::Container,
        false,
        "podman",
        &args,
        result?,
    );
    r.note = Some(
        "memory = PSS of conmon and every process below it (the shared pause process not counted)"
            .into(),
    );
    Ok(r)
}

/// Sandboxes to remove when a measurement ends, however it ends.
enum Started<'a> {
    /// Names of detached berth containers.
    Berth(&'a BenchEnv, Vec<String>),
    /// `berth run --vm` processes held by the bench, with the names they were given.
    Vms(&'a BenchEnv, Vec<(String, Child)>),
}

impl Started<'_> {
    fn add_name(&mut self, name: &str) {
        if let Started::Berth(_, names) = self {
            names.push(name.to_string());
        }
    }

    fn add_vm(&mut self, name: &str, child: Child) {
        if let Started::Vms(_, vms) = self {
            vms.push((name.to_string(), child));
        }
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        match self {
            Started::Berth(env, names) => {
                for chunk in names.chunks(50) {
                    let mut args = vec!["rm", "-f"];
                    args.extend(chunk.iter().map(String::as_str));
                    let _ = quiet(env.berth(&args)).status();
                }
            }
            Started::Vms(env, vms) => {
                // SIGTERM reaches the guest's process; its end ends the VM and berth (--rm).
                for (_, child) in vms.iter() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(child.id() as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                for (name, child) in vms.iter_mut() {
                    if let super::Waited::TimedOut | super::Waited::Interrupted =
                        super::wait_timeout(child, Duration::from_secs(20))
                    {
                        // Killed by the wait; its record may remain.
                        let _ = quiet(env.berth(&["rm", "-f", name])).status();
                    }
                }
            }
        }
    }
}

fn quiet(mut cmd: Command) -> Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
