//! Views into and processes in a running container: `berth exec`, `berth top`,
//! `berth stats`. The last two read /proc; rootless on a host without delegated cgroups
//! there are no cgroup figures, and what stands in for them is said where shown.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::EngineError;
use crate::container::exec::{ExecRequest, ResolvedUser};
use crate::container::process::load_spec;
use crate::state::{ContainerRecord, ContainerStore};

/// What `berth exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    /// `-e K=V` on top of the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
    /// `--privileged`: every capability the kernel has.
    pub privileged: bool,
}

/// One process of a container, for `berth top`.
#[derive(Debug, Clone)]
pub struct ContainerProcess {
    pub pid: i32,
    pub ppid: i32,
    /// Host uid, and the uid inside the container.
    pub host_uid: u32,
    pub uid: Option<u32>,
    /// User plus system CPU time.
    pub cpu: Duration,
    pub cmd: String,
}

/// `berth stats` figures for one container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub id: String,
    pub name: String,
    /// Percent of one CPU over the sampling interval.
    pub cpu_percent: f64,
    /// Sum of the processes' proportional set size (smaps_rollup), bytes.
    pub memory_pss: u64,
    pub pids: usize,
    /// Bytes received and sent on the container's own interfaces other than lo; `None`
    /// with the host's network, whose counters are the host's.
    pub net_rx: Option<u64>,
    pub net_tx: Option<u64>,
    /// Bytes read from and written to storage (`/proc/PID/io`).
    pub block_read: u64,
    pub block_write: u64,
    /// The sample's CPU figures as running totals, for clients that work out the share
    /// themselves (the Docker API's `cpu_stats` and `precpu_stats`).
    pub cpu: CpuTotals,
    /// What the container's memory is measured against: the host's (no cgroup limit).
    pub memory_limit: u64,
}

/// CPU time used at the start and the end of a sample, in nanoseconds: the container's
/// processes', and the whole host's (all CPUs, /proc/stat).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuTotals {
    pub container_before: u64,
    pub container_after: u64,
    pub system_before: u64,
    pub system_after: u64,
    pub online_cpus: u32,
}

/// The host's CPU time so far over all CPUs (/proc/stat's `cpu` line), in nanoseconds.
fn system_cpu_ns(tick: u64) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ticks * (1_000_000_000 / tick.max(1))
}

/// The host's memory (/proc/meminfo's MemTotal), in bytes.
fn host_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    field(&text, "MemTotal:").unwrap_or(0) * 1024
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf with a constant name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// (ppid, utime + stime in ticks) from /proc/PID/stat.
fn stat_fields(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn ns_inode(pid: i32, ns: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|m| m.ino())
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The most of a guest's process list berth reads (a hostile guest could send without end).
const MAX_PROCESS_LIST: usize = 8 << 20;

/// A writer that keeps at most `limit` bytes and fails past them.
struct Bounded {
    data: Vec<u8>,
    limit: usize,
}

impl Bounded {
    fn new(limit: usize) -> Bounded {
        Bounded {
            data: Vec::new(),
            limit,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "the guest's answer is over {} bytes",
                self.limit
            )));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl super::Engine {
    fn running(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let rec = self.container(key)?;
        match rec.pid {
            Some(_) if ContainerStore::is_running(&rec) => Ok(rec),
            _ => Err(EngineError::NotRunning(rec.name)),
        }
    }

    /// `berth exec`: runs `opts.cmd` in container `key`; returns its exit status (0 at
    /// once with `detach`).
    pub fn exec(&self, key: &str, opts: &ExecOptions) -> Result<i32, EngineError> {
        let rec = self.running(key)?;
        let spec = load_spec(&self.containers.dir(&rec.id))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| EngineError::Usage("the container's spec has no process".into()))?;
        if opts.cmd.is_empty() {
            return Err(EngineError::Usage(
                "no command: give one after the container, e.g. `berth exec C sh`".into(),
            ));
        }
        process.set_args(Some(opts.cmd.clone()));
        let mut extra = opts.env.clone();
        if opts.tty {
            extra.insert(0, "TERM=xterm".into());
        }
        let env = crate::spec::merge_env(&process.env().clone().unwrap_or_default(), &extra);
        process.set_env(Some(env));
        if let Some(w) = &opts.workdir {
            if !w.starts_with('/') {
                return Err(EngineError::Usage(format!(
                    "the working directory {w:?} is invalid: it needs to be an absolute path"
                )));
            }
            process.set_cwd(w.into());
        }
        process.set_terminal(Some(opts.tty));
        if opts.privileged {
            let all = crate::spec::caps::effective_caps(&[], &[], true)
                .map_err(|e| EngineError::Spec(e.into()))?;
            process.set_capabilities(Some(crate::spec::process_capabilities(&all)?));
        }
        if rec.machine.is_some() {
            return self.exec_vm(&rec, spec, process, opts);
        }
        let ids = &self.ids_for(rec.userns)?;
        let resolve = |user: &str,
                       passwd: Option<&str>,
                       group: Option<&str>|
         -> Result<ResolvedUser, String> {
            let u = crate::spec::user::resolve(user, passwd, group).map_err(|e| e.to_string())?;
            if !ids.maps_uid(u.uid) || !ids.maps_gid(u.gid) {
                return Err(format!(
                    "user {user} ({}:{}) does not exist in this container's user namespace; use an id inside its range",
                    u.uid, u.gid
                ));
            }
            Ok((u.uid, u.gid, u.additional_gids))
        };
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let code = crate::container::exec::exec(ExecRequest {
            init: nix::unistd::Pid::from_raw(rec.pid.unwrap_or(0)),
            process,
            user: opts.user.clone(),
            resolve_user: &resolve,
            seccomp,
            seccomp_cache: Some(self.dirs.cache.join("seccomp")),
            ids,
            attach_stdin: opts.interactive,
            detach: opts.detach,
        })?;
        Ok(code)
    }

    /// The host pids of container `rec`'s processes (those in its pid namespace); for a
    /// microVM, its VMM and the VMM's children (passt): the guest's processes are the
    /// guest kernel's, which the host cannot see (`berth exec C ps` can).
    fn pids_of(rec: &ContainerRecord) -> Vec<i32> {
        let Some(init) = rec.pid else {
            return vec![];
        };
        if rec.machine.is_some() {
            let mut pids = vec![init];
            let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, stat_fields(p)?.0)))
                .collect();
            let mut i = 0;
            while i < pids.len() {
                let parent = pids[i];
                pids.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
                i += 1;
            }
            pids.sort_unstable();
            return pids;
        }
        let Some(ns) = ns_inode(init, "pid") else {
            return vec![];
        };
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        let mut pids: Vec<i32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| ns_inode(*p, "pid") == Some(ns))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// `berth top`: the container's processes.
    pub fn top(&self, key: &str) -> Result<Vec<ContainerProcess>, EngineError> {
        let rec = self.running(key)?;
        if rec.machine.is_some() {
            return self.top_vm(&rec);
        }
        let tick = ticks_per_second();
        let mut out = Vec::new();
        for pid in Self::pids_of(&rec) {
            let Some((ppid, ticks)) = stat_fields(pid) else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let host_uid = field(&status, "Uid:").unwrap_or(0) as u32;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            let cmd = if cmd.is_empty() {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| format!("[{}]", c.trim()))
                    .unwrap_or_default()
            } else {
                cmd
            };
            out.push(ContainerProcess {
                pid,
                ppid,
                host_uid,
                uid: self.ids.uid.iter().find_map(|r| {
                    (host_uid >= r.host && host_uid - r.host < r.size)
                        .then(|| r.container + (host_uid - r.host))
                }),
                cpu: Duration::from_millis(ticks * 1000 / tick),
                cmd,
            });
        }
        Ok(out)
    }

    /// A microVM's processes are the guest kernel's: its agent lists them (uids as the guest
    /// has them; the host user owns them all).
    fn top_vm(&self, rec: &ContainerRecord) -> Result<Vec<ContainerProcess>, EngineError> {
        let mut out = Bounded::new(MAX_PROCESS_LIST);
        let job = berth_agent::protocol::Builtin::Processes;
        self.vm_job(rec, "berth top", job, None, &mut out)?;
        let host_uid = nix::unistd::getuid().as_raw();
        let text = String::from_utf8_lossy(&out.data);
        let mut list = Vec::new();
        for line in text.lines() {
            let p: berth_agent::protocol::GuestProcess =
                serde_json::from_str(line).map_err(|e| {
                    EngineError::Sandbox(crate::vm::sandbox::SandboxError::Protocol(
                        berth_agent::protocol::ProtocolError::Malformed {
                            kind: "process list",
                            why: e.to_string(),
                        },
                    ))
                })?;
            list.push(ContainerProcess {
                pid: p.pid,
                ppid: p.ppid,
                host_uid,
                uid: Some(p.uid),
                cpu: Duration::from_millis(p.cpu_ms),
                cmd: crate::vm::exec::printable(&p.cmd),
            });
        }
        Ok(list)
    }

    /// The host pids of container `key`'s processes, for `berth top` with `ps` options.
    pub fn container_pids(&self, key: &str) -> Result<BTreeSet<i32>, EngineError> {
        let rec = self.running(key)?;
        if rec.machine.is_some() {
            return Err(EngineError::Usage(format!(
                "`berth top` with ps options runs the host's ps, which cannot see into microVM {}: run `berth top {}` without options, or `berth exec {} ps ...` with the image's own ps",
                rec.name, rec.name, rec.name
            )));
        }
        Ok(Self::pids_of(&rec).into_iter().collect())
    }

    /// `berth stats`: CPU over `interval`, memory, pids, network and storage I/O of the
    /// running containers `keys` (all running ones when empty).
    pub fn stats(&self, keys: &[String], interval: Duration) -> Result<Vec<Stats>, EngineError> {
        let recs: Vec<ContainerRecord> = if keys.is_empty() {
            self.containers()
                .into_iter()
                .filter(|r| ContainerStore::is_running(r) && r.pid.is_some())
                .collect()
        } else {
            keys.iter()
                .map(|k| self.running(k))
                .collect::<Result<_, _>>()?
        };
        let cpu = |rec: &ContainerRecord| -> u64 {
            Self::pids_of(rec)
                .iter()
                .filter_map(|p| stat_fields(*p).map(|s| s.1))
                .sum()
        };
        let tick_n = ticks_per_second();
        let before: Vec<u64> = recs.iter().map(cpu).collect();
        let system_before = system_cpu_ns(tick_n);
        let t0 = Instant::now();
        std::thread::sleep(interval);
        let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
        let system_after = system_cpu_ns(tick_n);
        let tick = tick_n as f64;
        let online_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_limit = host_memory();
        let ns = |ticks: u64| ticks * (1_000_000_000 / tick_n.max(1));
        let mut out = Vec::new();
        for (rec, b) in recs.iter().zip(before) {
            let pids = Self::pids_of(rec);
            let after = cpu(rec);
            let used = after.saturating_sub(b) as f64 / tick;
            let mut pss = 0;
            let (mut rd, mut wr) = (0, 0);
            for p in &pids {
                if let Ok(t) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
                    pss += field(&t, "Pss:").unwrap_or(0) * 1024;
                }
                if let Ok(t) = std::fs::read_to_string(format!("/proc/{p}/io")) {
                    rd += field(&t, "read_bytes:").unwrap_or(0);
                    wr += field(&t, "write_bytes:").unwrap_or(0);
                }
            }
            let own_net = rec
                .pid
                .is_some_and(|p| ns_inode(p, "net") != ns_inode(std::process::id() as i32, "net"));
            let (net_rx, net_tx) = if own_net {
                let dev = rec
                    .pid
                    .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/net/dev")).ok())
                    .unwrap_or_default();
                let (mut rx, mut tx) = (0u64, 0u64);
                for line in dev.lines().skip(2) {
                    let Some((iface, counters)) = line.split_once(':') else {
                        continue;
                    };
                    if iface.trim() == "lo" {
                        continue;
                    }
                    let c: Vec<u64> = counters
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    rx += c.first().copied().unwrap_or(0);
                    tx += c.get(8).copied().unwrap_or(0);
                }
                (Some(rx), Some(tx))
            } else {
                (None, None)
            };
            out.push(Stats {
                id: rec.id.clone(),
                name: rec.name.clone(),
                cpu_percent: used / elapsed * 100.0,
                memory_pss: pss,
                pids: pids.len(),
                net_rx,
                net_tx,
                block_read: rd,
                block_write: wr,
                cpu: CpuTotals {
                    container_before: ns(b),
                    container_after: ns(after),
                    system_before,
                    system_after,
                    online_cpus,
                },
                memory_limit,
            });
        }
        Ok(out)
    }
}

/// Whether cgroup figures (limits, a memory total with page cache) exist for containers
/// here: a cgroup v2 hierarchy the user could have been delegated.
pub fn cgroup_note() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "memory is the sum of the container's processes' PSS; berth does not put containers in cgroups yet, so there are no limits"
    } else {
        "memory is the sum of the container's processes' PSS; this host has no unified cgroup hierarchy (cgroups v1), so rootless containers get no cgroup: no limits, no cgroup memory figure"
    }
}
