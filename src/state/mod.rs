//! Container records on disk: `containers/<id>/state.json`, written atomically, with a store
//! lock so that parallel `berth run --name` calls cannot take the same name, and a lock per
//! container (`$XDG_RUNTIME_DIR/berth/containers/<id>/lock`) that serialises the commands
//! changing one container. Volumes live in [`volumes`].

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::monitor::policy::RestartPolicy;

pub mod events;
pub mod volumes;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the container name {name:?} is already in use by container {id}: remove it with `berth rm {name}` or pick another name")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container {0} is running: stop it first (`berth stop {0}`) or use `berth rm -f {0}`")]
    Running(String),
    #[error(
        "container name {name:?} matches more than one container by id prefix: give more of the id"
    )]
    Ambiguous { name: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    /// Ended; its monitor waits out the restart back-off before starting it again.
    Restarting,
    Exited,
    /// Its monitor died (killed): the container went with it, its end is unknown.
    Dead,
}

impl Status {
    /// Docker's name (`State.Status`, `ps --filter status=`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// Which wall a sandbox runs behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Container,
    Vm,
}

/// The bounds of a sandbox's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: crate::monitor::log::DEFAULT_MAX_SIZE,
            max_files: crate::monitor::log::DEFAULT_MAX_FILES,
        }
    }
}

/// What kind of mount a [`MountRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// One mount a container was created with (`-v`, `--mount`, `--tmpfs`, `--volumes-from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub kind: MountKind,
    /// The volume's name (volumes only).
    #[serde(default)]
    pub name: Option<String>,
    /// The host path (the volume's data directory for volumes; empty for tmpfs).
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
    /// An anonymous volume (`-v /path`): `rm -v` removes it with the container.
    #[serde(default)]
    pub anonymous: bool,
    /// tmpfs options (`size=64m,mode=1777`).
    #[serde(default)]
    pub options: Vec<String>,
}

/// What berth remembers about one container.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: Vec<String>,
    pub created: u64,
    pub status: Status,
    pub exit_code: Option<i32>,
    /// The berth process that supervises the container while it runs.
    pub monitor_pid: Option<i32>,
    /// Rootfs driver used, and the directories with files owned by mapped ids.
    pub driver: String,
    pub writable: Vec<PathBuf>,
    /// `--rm`: the record goes away with the container, also after a crash of berth.
    #[serde(default)]
    pub auto_remove: bool,
    /// Published ports (`-p`, `-P`), as bound on the host.
    #[serde(default)]
    pub ports: Vec<crate::net::PublishedPort>,
    /// The network: none, host, slirp4netns, pasta or a user-defined network's name.
    #[serde(default)]
    pub network: String,
    /// What `--network`, `-p`, `-P` (expanded) and `--network-alias` asked for: the network
    /// is set up again at each start. `None` in records older than networking (no network).
    #[serde(default)]
    pub network_options: Option<crate::net::NetworkOptions>,
    /// The address, gateway and hardware address of its last start (None when it was not
    /// connected): `inspect` shows them while it runs.
    #[serde(default)]
    pub endpoint: Option<crate::net::Endpoint>,
    /// Further user-defined networks a run joined (`network connect`): they go with that run.
    #[serde(default)]
    pub connected: Vec<crate::net::Connected>,
    /// The container's first process, as the host sees it, while it runs.
    #[serde(default)]
    pub pid: Option<i32>,
    /// The monitor's start time (`/proc/PID/stat` field 22), so that a reused pid is not
    /// taken for it.
    #[serde(default)]
    pub monitor_start: Option<u64>,
    /// The monitor's socket (detached containers; foreground runs have none).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// RFC 3339 times of the last start and end.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub restart_count: u32,
    /// The last restart back-off, in milliseconds (doubles while restarts come quickly).
    #[serde(default)]
    pub restart_delay_ms: u64,
    /// A user stopped it: the restart policy does not bring it back.
    #[serde(default)]
    pub manually_stopped: bool,
    /// Why it could not start, or why its end is unknown.
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub tty: bool,
    /// `-i`: stdin kept open for `attach`.
    #[serde(default)]
    pub open_stdin: bool,
    /// The log's bounds; `None` for foreground runs, whose output goes to the terminal.
    #[serde(default)]
    pub log: Option<LogConfig>,
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    #[serde(default)]
    pub isolation: Isolation,
    /// `--label K=V`, as given.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--stop-timeout` (seconds), or the default of `berth stop`.
    #[serde(default)]
    pub stop_timeout: Option<u32>,
    /// The image's StopSignal (signal number); SIGTERM when `None`.
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// What a `--vm` sandbox boots at each start; `None` for containers.
    #[serde(default)]
    pub machine: Option<VmMachine>,
    /// `--userns`: the id map it runs under at each start.
    #[serde(default)]
    pub userns: crate::container::UsernsMode,
}

/// Which network a microVM's NIC is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmNetwork {
    /// No NIC: loopback only.
    None,
    /// A user-mode network of its own (passt).
    Passt,
    /// A network made with `berth network create`, shared with containers.
    Named(String),
}

/// A microVM sandbox's machine, fixed when it is created: the VMM boots it anew from this
/// at each start (`start`, `restart`, the restart policy), as a container's stage 1 reads
/// its bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMachine {
    pub cpus: u8,
    pub mem_mib: u64,
    pub network: VmNetwork,
    /// The guest kernel and the initramfs holding the agent.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The image's layers as erofs disks, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// Host directories shared over virtio-9p (`-v`, `--mount`), in the spec's order.
    pub shares: Vec<VmShare>,
    /// The disk holding the root's writable layer across runs (in the sandbox's directory);
    /// none for `--rm`, whose writable layer is the guest's memory.
    #[serde(default)]
    pub upper: Option<PathBuf>,
    /// The ids the guest sees the user's files in the shares as (`--userns=keep-id`: the
    /// user's own); none: root's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_owner: Option<(u32, u32)>,
}

/// One virtio-9p share of a [`VmMachine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmShare {
    pub path: PathBuf,
    pub tag: String,
    pub read_only: bool,
}

/// What the scans over every container read of each record (the name check of `create`,
/// the sweep for stale records): a start reads all records twice, and decoding each one
/// whole (network options, mounts, ...) is most of that work once there are dozens. The
/// fields a [`ContainerRecord`] cannot do without are required here too, so both accept
/// the same files.
#[derive(Deserialize)]
struct RecordSummary {
    id: String,
    name: String,
    status: Status,
    monitor_pid: Option<i32>,
    #[serde(default)]
    monitor_start: Option<u64>,
    #[allow(dead_code)]
    image: serde::de::IgnoredAny,
    #[allow(dead_code)]
    image_id: serde::de::IgnoredAny,
    #[allow(dead_code)]
    command: serde::de::IgnoredAny,
    #[allow(dead_code)]
    created: serde::de::IgnoredAny,
    #[allow(dead_code)]
    driver: serde::de::IgnoredAny,
    #[allow(dead_code)]
    writable: serde::de::IgnoredAny,
}

/// Whether the process `pid` that supervises a container (started at `start`, in clock
/// ticks since boot) is still that process and alive.
fn supervisor_alive(pid: Option<i32>, start: Option<u64>) -> bool {
    let Some(pid) = pid else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match start {
        Some(start) => process_start_time(pid) == Some(start),
        None => true,
    }
}

/// The containers directory, and the runtime directory for their locks and sockets.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    root: PathBuf,
    runtime: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Holds the store lock until dropped.
pub struct StoreLock(#[allow(dead_code)] std::fs::File);

/// Holds one container's lock until dropped.
pub struct ContainerLock(std::fs::File);

impl ContainerLock {
    /// The lock's descriptor, for processes forked while it is held to close.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

fn flock_exclusive(p: &Path) -> Result<std::fs::File, StateError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(io("opening", p))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(StateError::Io {
                what: "locking",
                path: p.to_path_buf(),
                source: e,
            });
        }
    }
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl ContainerStore {
    /// `root` holds the containers' directories, `runtime` their locks and sockets.
    pub fn new(root: PathBuf, runtime: PathBuf) -> ContainerStore {
        ContainerStore { root, runtime }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The container's runtime directory (lock, monitor socket).
    pub fn runtime_dir(&self, id: &str) -> PathBuf {
        self.runtime.join(id)
    }

    /// Where a detached container's monitor listens.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.runtime_dir(id).join("monitor.sock")
    }

    /// The store lock: taken while a name is checked and claimed.
    pub fn lock(&self) -> Result<StoreLock, StateError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        Ok(StoreLock(flock_exclusive(&self.root.join(".lock"))?))
    }

    /// The lock of container `id`: every command that changes the container holds it.
    pub fn lock_container(&self, id: &str) -> Result<ContainerLock, StateError> {
        let dir = self.runtime_dir(id);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        Ok(ContainerLock(flock_exclusive(&dir.join("lock"))?))
    }

    /// Reads container `id`'s record again (under its lock, to see the latest).
    pub fn load(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.dir(id).join("state.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotFound(id.to_string())
            } else {
                StateError::Io {
                    what: "reading",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Removes container `id`'s runtime directory (its lock and socket).
    pub fn remove_runtime(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.runtime_dir(id));
    }

    /// All records (unreadable directories are skipped: they are being created or removed).
    pub fn list(&self) -> Vec<ContainerRecord> {
        let mut out: Vec<ContainerRecord> = self.scan();
        out.sort_by_key(|r| std::cmp::Reverse(r.created));
        out
    }

    /// Every record decoded as `T`, in directory order (unreadable ones skipped, as in
    /// [`Self::list`]).
    fn scan<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        rd.flatten()
            .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<ContainerRecord, StateError> {
        let all = self.list();
        if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
            return Ok(r.clone());
        }
        let matches: Vec<_> = all
            .iter()
            .filter(|r| !key.is_empty() && r.id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StateError::NotFound(key.to_string())),
            _ => Err(StateError::Ambiguous {
                name: key.to_string(),
            }),
        }
    }

    /// Checks a name is free; the caller holds the lock until the record is saved.
    pub fn check_name(&self, name: &str) -> Result<(), StateError> {
        if !valid_name(name) {
            return Err(StateError::BadName(name.to_string()));
        }
        if let Some(r) = self
            .scan::<RecordSummary>()
            .into_iter()
            .find(|r| r.name == name)
        {
            return Err(StateError::NameInUse {
                name: name.to_string(),
                id: r.id[..12].to_string(),
            });
        }
        Ok(())
    }

    /// Writes a record atomically.
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), StateError> {
        let dir = self.dir(&rec.id);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        // One temporary file per writer: two berth processes never share one.
        let tmp = dir.join(format!("state.json.{}.tmp", std::process::id()));
        let data = serde_json::to_vec_pretty(rec).map_err(|source| StateError::Corrupt {
            path: tmp.clone(),
            source,
        })?;
        std::fs::write(&tmp, data).map_err(io("writing", &tmp))?;
        let dst = dir.join("state.json");
        std::fs::rename(&tmp, &dst).map_err(io("renaming", &dst))
    }

    /// Records whose supervising berth died without cleaning up (killed with SIGKILL).
    pub fn stale(&self) -> Vec<ContainerRecord> {
        self.scan::<RecordSummary>()
            .into_iter()
            .filter(|r| {
                matches!(r.status, Status::Running | Status::Restarting)
                    && !supervisor_alive(r.monitor_pid, r.monitor_start)
            })
            .filter_map(|r| self.load(&r.id).ok())
            .collect()
    }

    /// Whether the process that supervises the container (its monitor, or the foreground
    /// `berth run`) is the one the record names and still alive.
    pub fn monitor_alive(rec: &ContainerRecord) -> bool {
        supervisor_alive(rec.monitor_pid, rec.monitor_start)
    }

    /// Whether the container runs (its supervisor is alive and says so).
    pub fn is_running(rec: &ContainerRecord) -> bool {
        rec.status == Status::Running && Self::monitor_alive(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            image_id: "sha256:x".into(),
            command: vec![],
            created: 1,
            status: Status::Exited,
            exit_code: Some(0),
            monitor_pid: None,
            driver: "overlay".into(),
            writable: vec![],
            auto_remove: false,
            ..ContainerRecord::default()
        }
    }

    #[test]
    fn names_are_unique_and_found_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(dir.path().join("data"), dir.path().join("run"));
        store.save(&rec("abcdef0123456789", "web")).unwrap();
        assert!(matches!(
            store.check_name("web"),
            Err(StateError::NameInUse { .. })
        ));
        assert!(matches!(
            store.check_name("-bad"),
            Err(StateError::BadName(_))
        ));
        store.check_name("db").unwrap();
        assert_eq!(store.find("abcd").unwrap().name, "web");
        store.save(&rec("abcfff0123456789", "db")).unwrap();
        assert!(matches!(
            store.find("abc"),
            Err(StateError::Ambiguous { .. })
        ));
        assert_eq!(store.find("abcf").unwrap().name, "db");
        assert_eq!(store.find("web").unwrap().id, "abcdef0123456789");
        assert!(store.find("zzz").is_err());
    }
}
