//! Container records on disk: `containers/<id>/state.json`, written atomically, with a lock
//! so that parallel `berth run --name` calls cannot take the same name.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the container name {name:?} is already in use by container {id}: remove it with `berth rm {name}` or pick another name")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container {0} is running: stop it first")]
    Running(String),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// What berth remembers about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The containers directory.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    root: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Holds the store lock until dropped.
pub struct StoreLock(#[allow(dead_code)] std::fs::File);

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl ContainerStore {
    pub fn new(root: PathBuf) -> ContainerStore {
        ContainerStore { root }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn lock(&self) -> Result<StoreLock, StateError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let p = self.root.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io("opening", &p))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StateError::Io {
                what: "locking",
                path: p,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(StoreLock(f))
    }

    /// All records (unreadable directories are skipped: they are being created or removed).
    pub fn list(&self) -> Vec<ContainerRecord> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        let mut out: Vec<ContainerRecord> = rd
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.created));
        out
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<ContainerRecord, StateError> {
        let all = self.list();
        if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
            return Ok(r.clone());
        }
        let matches: Vec<_> = all
            .iter()
            .filter(|r| key.len() >= 3 && r.id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(StateError::NotFound(key.to_string())),
        }
    }

    /// Checks a name is free; the caller holds the lock until the record is saved.
    pub fn check_name(&self, name: &str) -> Result<(), StateError> {
        if !valid_name(name) {
            return Err(StateError::BadName(name.to_string()));
        }
        if let Some(r) = self.list().into_iter().find(|r| r.name == name) {
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
        let tmp = dir.join("state.json.tmp");
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
        self.list()
            .into_iter()
            .filter(|r| r.status != Status::Exited && !Self::monitor_alive(r))
            .collect()
    }

    fn monitor_alive(rec: &ContainerRecord) -> bool {
        rec.monitor_pid
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    }

    /// Whether the supervising process of a record is still alive.
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
            ports: vec![],
            network: String::new(),
        }
    }

    #[test]
    fn names_are_unique_and_found_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(dir.path().to_path_buf());
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
        assert_eq!(store.find("web").unwrap().id, "abcdef0123456789");
        assert!(store.find("zzz").is_err());
    }
}
