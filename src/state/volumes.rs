//! Named volumes on disk: `volumes/<name>/volume.json` (what berth knows) and
//! `volumes/<name>/_data` (what containers see), with a lock so that parallel commands
//! create and remove them safely.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{flock_exclusive, io, valid_name, StateError, StoreLock};

/// What berth remembers about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for a `-v /path` without a name: `rm -v` and `volume prune` remove it.
    #[serde(default)]
    pub anonymous: bool,
}

/// The volumes directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    root: PathBuf,
}

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0} (`berth volume ls` lists them)")]
    NotFound(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)")]
    BadName(String),
    #[error("volume {name} is in use by container {users}: remove the container first (`berth rm {users}`), then the volume")]
    InUse { name: String, users: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl VolumeStore {
    pub fn new(root: PathBuf) -> VolumeStore {
        VolumeStore { root }
    }

    /// The volume's directory (its record and its data).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// What containers mount.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir(name).join("_data")
    }

    /// Held while volumes are created or removed.
    pub fn lock(&self) -> Result<StoreLock, VolumeError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        Ok(StoreLock(flock_exclusive(&self.root.join(".lock"))?))
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        let path = self.dir(name).join("volume.json");
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VolumeError::NotFound(name.to_string())
            } else {
                StateError::Io {
                    what: "reading",
                    path: path.clone(),
                    source: e,
                }
                .into()
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source }.into())
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<VolumeRecord> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        let mut out: Vec<VolumeRecord> = rd
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("volume.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Creates volume `name` (the caller holds the lock); an existing one is returned as it
    /// is, as `docker volume create` does. The flag says whether it is new.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(VolumeRecord, bool), VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::BadName(name.to_string()));
        }
        match self.get(name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let rec = VolumeRecord {
            name: name.to_string(),
            created: crate::clock::rfc3339(crate::clock::now_nanos()),
            labels,
            anonymous,
        };
        let dir = self.dir(name);
        let data = self.data_dir(name);
        std::fs::create_dir_all(&data).map_err(io("creating", &data))?;
        // Docker's volume root: world-searchable, like a fresh directory in an image.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting the mode of", &data))?;
        let tmp = dir.join("volume.json.tmp");
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|source| StateError::Corrupt {
            path: tmp.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
        let dst = dir.join("volume.json");
        std::fs::rename(&tmp, &dst).map_err(io("renaming", &dst))?;
        Ok((rec, true))
    }

    /// Forgets volume `name` (its record goes first, so a half-removed volume is not listed);
    /// the caller removes the data, which may belong to mapped ids.
    pub fn forget(&self, name: &str) -> Result<PathBuf, VolumeError> {
        let dir = self.dir(name);
        let rec = dir.join("volume.json");
        match std::fs::remove_file(&rec) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => Err(StateError::Io {
                what: "removing",
                path: rec,
                source: e,
            }
            .into()),
        }
    }

    /// The volume whose data directory is `path`, if any.
    pub fn name_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut parts = rel.components();
        let name = parts.next()?.as_os_str().to_str()?.to_string();
        (parts.next()?.as_os_str() == "_data").then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_list_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(dir.path().to_path_buf());
        let (v, new) = store.create("data", BTreeMap::new(), false).unwrap();
        assert!(new);
        assert!(store.data_dir("data").is_dir());
        let (again, new) = store.create("data", BTreeMap::new(), true).unwrap();
        assert!(!new);
        assert_eq!(again, v, "an existing volume is kept as it is");
        assert!(matches!(
            store.create("../x", BTreeMap::new(), false),
            Err(VolumeError::BadName(_))
        ));
        assert_eq!(store.list().len(), 1);
        assert_eq!(
            store.name_of(&store.data_dir("data")).as_deref(),
            Some("data")
        );
        store.forget("data").unwrap();
        assert!(matches!(store.get("data"), Err(VolumeError::NotFound(_))));
        assert!(store.list().is_empty());
    }
}
