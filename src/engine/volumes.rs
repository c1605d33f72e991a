//! Volumes and mounts: `-v`, `--mount`, `--tmpfs` and `--volumes-from` turned into the binds
//! and tmpfs entries of a spec, named volumes created on first use and filled from the
//! image, and `berth volume create|ls|inspect|rm|prune`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{random_hex, EngineError};
use crate::rootfs;
use crate::spec::BindVolume;
use crate::state::volumes::{VolumeError, VolumeRecord};
use crate::state::{ContainerRecord, MountKind, MountRecord};

/// Where a requested mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path.
    Bind(PathBuf),
    /// A named volume, or an anonymous one (`None`), created on first use.
    Volume {
        name: Option<String>,
        /// `volume-nocopy`: do not fill a new volume from the image.
        nocopy: bool,
    },
    /// A tmpfs with these options (`size=64m`, `mode=1777`).
    Tmpfs(Vec<String>),
}

/// One `-v`, `--mount` or `--tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: MountSource,
    pub target: PathBuf,
    pub read_only: bool,
}

impl MountRequest {
    /// Parses `-v SOURCE:TARGET[:OPTS]` or `-v TARGET` (an anonymous volume). A source
    /// starting with `/` (or `.`) is a host path, anything else a volume name.
    pub fn parse_volume(s: &str) -> Result<MountRequest, EngineError> {
        let bad = |why: &str| EngineError::Usage(format!("invalid volume {s:?}: {why}"));
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, ""),
            [src, t] => (Some(*src), *t, ""),
            [src, t, o] => (Some(*src), *t, *o),
            _ => return Err(bad("expected [SOURCE:]TARGET[:ro|rw]")),
        };
        if !target.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        if is_root(target) {
            return Err(bad(
                "the container path can't be '/': mount it on a directory, e.g. -v DIR:/data",
            ));
        }
        let mut read_only = false;
        let mut nocopy = false;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                "nocopy" => nocopy = true,
                "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" => {}
                other => return Err(bad(&format!("unknown option {other:?}; use ro or rw"))),
            }
        }
        let source = match source {
            None => MountSource::Volume { name: None, nocopy },
            Some(p) if p.starts_with('/') => MountSource::Bind(PathBuf::from(p)),
            Some(p) if p.starts_with('.') || p.starts_with('~') => {
                return Err(bad("a host path must be absolute"))
            }
            Some(name) if crate::state::valid_name(name) => MountSource::Volume {
                name: Some(name.to_string()),
                nocopy,
            },
            Some(_) => return Err(bad(
                "a volume name uses letters, digits, '_', '.' and '-'; a host path starts with /",
            )),
        };
        Ok(MountRequest {
            source,
            target: PathBuf::from(target),
            read_only,
        })
    }

    /// Parses `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]...`.
    pub fn parse_mount(s: &str) -> Result<MountRequest, EngineError> {
        let bad = |why: String| EngineError::Usage(format!("invalid --mount {s:?}: {why}"));
        let mut kind = "volume";
        let mut source: Option<&str> = None;
        let mut target: Option<&str> = None;
        let mut read_only = false;
        let mut nocopy = false;
        let mut tmpfs = Vec::new();
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, "true"));
            let yes = matches!(v, "true" | "1" | "yes");
            match k {
                "type" => kind = v,
                "source" | "src" => source = Some(v),
                "target" | "destination" | "dst" => target = Some(v),
                "readonly" | "ro" => read_only = yes,
                "volume-nocopy" => nocopy = yes,
                "tmpfs-size" => tmpfs.push(format!("size={v}")),
                "tmpfs-mode" => tmpfs.push(format!("mode={v}")),
                "bind-propagation" | "consistency" | "bind-nonrecursive" => {}
                other => return Err(bad(format!("unknown field {other:?}"))),
            }
        }
        let target = target.ok_or_else(|| bad("target= is required".into()))?;
        let source = match kind {
            "bind" => MountSource::Bind(PathBuf::from(
                source.ok_or_else(|| bad("a bind mount needs source=".into()))?,
            )),
            "volume" => MountSource::Volume {
                name: source.map(String::from),
                nocopy,
            },
            "tmpfs" => {
                if source.is_some() {
                    return Err(bad("a tmpfs has no source".into()));
                }
                MountSource::Tmpfs(tmpfs)
            }
            other => {
                return Err(bad(format!(
                    "unknown type {other:?}: use bind, volume or tmpfs"
                )))
            }
        };
        Self::checked(source, target, read_only).map_err(|why| bad(why.to_string()))
    }

    /// A mount from its parts (`--mount`'s fields, an API `Mount`), checked as Docker checks
    /// them: an absolute target that is not `/`, an existing absolute bind source, a valid
    /// volume name.
    pub fn checked(
        source: MountSource,
        target: &str,
        read_only: bool,
    ) -> Result<MountRequest, EngineError> {
        let bad = |why: &str| EngineError::Usage(why.to_string());
        if !target.starts_with('/') {
            return Err(bad("the target must be an absolute path"));
        }
        if is_root(target) {
            return Err(bad(
                "the target can't be '/': mount it on a directory, e.g. target=/data",
            ));
        }
        match &source {
            MountSource::Bind(src) => {
                if !src.is_absolute() {
                    return Err(bad("the source of a bind mount must be an absolute path"));
                }
                if !src.exists() {
                    // Docker's --mount refuses a missing bind source (-v creates it).
                    return Err(EngineError::Usage(format!(
                        "bind source path does not exist: {}; create it first or use -v",
                        src.display()
                    )));
                }
            }
            MountSource::Volume { name: Some(n), .. } if !crate::state::valid_name(n) => {
                return Err(EngineError::Usage(format!("invalid volume name {n:?}")));
            }
            _ => {}
        }
        Ok(MountRequest {
            source,
            target: PathBuf::from(target),
            read_only,
        })
    }

    /// `--tmpfs PATH[:OPTIONS]`.
    pub fn parse_tmpfs(s: &str) -> Result<MountRequest, EngineError> {
        let (path, opts) = s.split_once(':').unwrap_or((s, ""));
        if !path.starts_with('/') {
            return Err(EngineError::Usage(format!(
                "invalid --tmpfs {s:?}: the path must be absolute, e.g. --tmpfs /run"
            )));
        }
        Ok(MountRequest {
            source: MountSource::Tmpfs(
                opts.split(',')
                    .filter(|o| !o.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            target: PathBuf::from(path),
            read_only: false,
        })
    }
}

/// Whether a container path names `/` itself (`/`, `//`, `/.`, `/x/..`): Docker refuses a
/// mount there, and the container's root cannot be replaced by a bind.
fn is_root(target: &str) -> bool {
    let mut depth = 0usize;
    for c in Path::new(target).components() {
        match c {
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::ParentDir => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth == 0
}

/// The mounts of a new container, resolved.
pub(super) struct ResolvedMounts {
    pub binds: Vec<BindVolume>,
    /// `PATH:OPTIONS` entries for the spec.
    pub tmpfs: Vec<String>,
    pub records: Vec<MountRecord>,
}

/// `berth volume inspect`: a volume and where it lives.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInspect {
    pub name: String,
    pub driver: &'static str,
    pub mountpoint: PathBuf,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub scope: &'static str,
    pub options: BTreeMap<String, String>,
    /// berth's addition: the containers that use it (any state).
    pub used_by: Vec<String>,
    pub anonymous: bool,
}

impl super::Engine {
    /// Turns `-v`/`--mount`/`--tmpfs` and `--volumes-from` into spec entries, creating
    /// volumes on first use and filling new ones from the image (`lowers`) at their path.
    pub(super) fn resolve_mounts(
        &self,
        requests: &[MountRequest],
        volumes_from: &[String],
        lowers: &[PathBuf],
    ) -> Result<ResolvedMounts, EngineError> {
        let mut wanted: Vec<MountRequest> = Vec::new();
        for from in volumes_from {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m @ ("ro" | "rw"))) => (n, Some(m == "ro")),
                _ => (from.as_str(), None),
            };
            let other = self.containers.find(name).map_err(|_| {
                EngineError::Usage(format!(
                    "--volumes-from {name}: no such container (`berth ps -a` lists them)"
                ))
            })?;
            for m in other.mounts.iter().filter(|m| m.kind != MountKind::Tmpfs) {
                let source = match (&m.kind, &m.name) {
                    (MountKind::Volume, Some(n)) => MountSource::Volume {
                        name: Some(n.clone()),
                        nocopy: true,
                    },
                    _ => MountSource::Bind(m.source.clone()),
                };
                wanted.push(MountRequest {
                    source,
                    target: m.destination.clone(),
                    read_only: mode.unwrap_or(m.read_only),
                });
            }
        }
        wanted.extend(requests.iter().cloned());
        for (i, m) in wanted.iter().enumerate() {
            if wanted[..i].iter().any(|o| o.target == m.target) {
                return Err(EngineError::Usage(format!(
                    "duplicate mount point {}: give each container path one mount",
                    m.target.display()
                )));
            }
        }
        let mut out = ResolvedMounts {
            binds: vec![],
            tmpfs: vec![],
            records: vec![],
        };
        for m in wanted {
            match m.source {
                MountSource::Bind(host) => {
                    out.binds.push(BindVolume {
                        host: host.clone(),
                        container: m.target.clone(),
                        read_only: m.read_only,
                    });
                    out.records.push(MountRecord {
                        kind: MountKind::Bind,
                        name: None,
                        source: host,
                        destination: m.target,
                        read_only: m.read_only,
                        anonymous: false,
                        options: vec![],
                    });
                }
                MountSource::Volume { name, nocopy } => {
                    let anonymous = name.is_none();
                    let name = name.unwrap_or_else(|| random_hex(32));
                    let (vol, new) = {
                        let _lock = self.volumes.lock()?;
                        self.volumes.create(&name, BTreeMap::new(), anonymous)?
                    };
                    let data = self.volumes.data_dir(&vol.name);
                    if new && !nocopy {
                        let rel = m.target.strip_prefix("/").unwrap_or(&m.target);
                        rootfs::fill_from_layers(lowers, rel, &data, &self.ids)?;
                    }
                    out.binds.push(BindVolume {
                        host: data.clone(),
                        container: m.target.clone(),
                        read_only: m.read_only,
                    });
                    out.records.push(MountRecord {
                        kind: MountKind::Volume,
                        name: Some(vol.name),
                        source: data,
                        destination: m.target,
                        read_only: m.read_only,
                        anonymous,
                        options: vec![],
                    });
                }
                MountSource::Tmpfs(options) => {
                    let target = m.target.to_string_lossy().into_owned();
                    out.tmpfs.push(if options.is_empty() {
                        target
                    } else {
                        format!("{target}:{}", options.join(","))
                    });
                    out.records.push(MountRecord {
                        kind: MountKind::Tmpfs,
                        name: None,
                        source: PathBuf::new(),
                        destination: m.target,
                        read_only: false,
                        anonymous: false,
                        options,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes the anonymous volumes of `rec` that no other container uses.
    pub(super) fn remove_anonymous_volumes(&self, rec: &ContainerRecord) {
        for m in rec.mounts.iter().filter(|m| m.anonymous) {
            if let Some(name) = &m.name {
                if self.volume_users(name).iter().all(|u| u.id == rec.id) {
                    let _ = self.remove_volume_data(name);
                }
            }
        }
    }

    /// The containers (any state) that mount volume `name`.
    fn volume_users(&self, name: &str) -> Vec<crate::state::ContainerRecord> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| m.name.as_deref() == Some(name)))
            .collect()
    }

    fn remove_volume_data(&self, name: &str) -> Result<(), EngineError> {
        let _lock = self.volumes.lock()?;
        let dir = self.volumes.forget(name)?;
        if std::fs::remove_dir_all(&dir).is_err() {
            // Files written by the container's other users belong to mapped ids.
            rootfs::remove_owned_tree(vec![dir], &self.ids)?;
        }
        Ok(())
    }

    /// `berth volume create [NAME]`: a new volume (a random name without one); an existing
    /// one is left as it is.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let name = name.map(String::from).unwrap_or_else(|| random_hex(32));
        let _lock = self.volumes.lock()?;
        let (v, _) = self.volumes.create(&name, labels, false)?;
        Ok(v.name)
    }

    /// `berth volume ls`.
    pub fn volumes(&self) -> Vec<VolumeRecord> {
        self.volumes.list()
    }

    /// `berth volume inspect NAME`.
    pub fn volume_inspect(&self, name: &str) -> Result<VolumeInspect, EngineError> {
        let v = self.volumes.get(name)?;
        let used_by = self
            .volume_users(name)
            .into_iter()
            .map(|c| c.name)
            .collect();
        Ok(VolumeInspect {
            mountpoint: self.volumes.data_dir(&v.name),
            name: v.name,
            driver: "local",
            created_at: v.created,
            labels: v.labels,
            scope: "local",
            options: BTreeMap::new(),
            used_by,
            anonymous: v.anonymous,
        })
    }

    /// `berth volume ls [--filter ...]`: the volumes that pass `filters` (Docker's `name`,
    /// `label`, `dangling`, `driver`), each with whether a container uses it.
    pub fn volumes_matching(
        &self,
        filters: &[(String, String)],
    ) -> Result<Vec<(VolumeRecord, bool)>, EngineError> {
        super::filters::check_volume_filters(filters)?;
        let used: std::collections::BTreeSet<String> = self
            .containers
            .list()
            .into_iter()
            .flat_map(|c| c.mounts.into_iter().filter_map(|m| m.name))
            .collect();
        let mut out = Vec::new();
        for v in self.volumes.list() {
            let in_use = used.contains(&v.name);
            if super::filters::volume_matches(&v, in_use, filters)? {
                out.push((v, in_use));
            }
        }
        Ok(out)
    }

    /// `berth volume rm NAME`: refuses a volume a container (in any state) uses.
    pub fn volume_remove(&self, name: &str) -> Result<(), EngineError> {
        self.volumes.get(name)?;
        let users: Vec<String> = self
            .volume_users(name)
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                users: users.join(", "),
            }
            .into());
        }
        self.remove_volume_data(name)
    }

    /// `berth volume prune [-a] [--filter label=...]`: removes the anonymous volumes no
    /// container uses (with `all`, every unused volume) that pass `filters`; returns their
    /// names and the bytes their data took.
    pub fn volume_prune(
        &self,
        all: bool,
        filters: &[(String, String)],
    ) -> Result<(Vec<String>, u64), EngineError> {
        let mut removed = Vec::new();
        let mut reclaimed = 0;
        for (v, in_use) in self.volumes_matching(filters)? {
            if in_use || !(all || v.anonymous) {
                continue;
            }
            let size = super::inspect::disk_bytes(&self.volumes.data_dir(&v.name));
            match self.remove_volume_data(&v.name) {
                Ok(()) => {
                    removed.push(v.name);
                    reclaimed += size;
                }
                Err(EngineError::Volume(VolumeError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, reclaimed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_parse_like_docker() {
        let m = MountRequest::parse_volume("data:/var/lib/data:ro").unwrap();
        assert_eq!(
            m.source,
            MountSource::Volume {
                name: Some("data".into()),
                nocopy: false
            }
        );
        assert!(m.read_only);
        let m = MountRequest::parse_volume("/srv:/srv").unwrap();
        assert_eq!(m.source, MountSource::Bind("/srv".into()));
        let m = MountRequest::parse_volume("/cache").unwrap();
        assert_eq!(
            m.source,
            MountSource::Volume {
                name: None,
                nocopy: false
            }
        );
        assert!(MountRequest::parse_volume("data:relative").is_err());
        assert!(MountRequest::parse_volume("./here:/x").is_err());
        assert!(MountRequest::parse_volume("a:/b:bogus").is_err());
        for root in ["/srv:/", "/srv://", "/srv:/.", "data:/x/..", "/"] {
            let e = MountRequest::parse_volume(root).unwrap_err();
            assert!(e.to_string().contains("can't be '/'"), "{root}: {e}");
        }
        assert!(MountRequest::parse_mount("type=bind,src=/,target=/").is_err());
    }

    #[test]
    fn mount_flags_parse_like_docker() {
        let m = MountRequest::parse_mount("type=volume,source=v1,target=/data,readonly").unwrap();
        assert!(m.read_only);
        assert_eq!(m.target, PathBuf::from("/data"));
        let m = MountRequest::parse_mount("type=tmpfs,dst=/run,tmpfs-size=1m").unwrap();
        assert_eq!(m.source, MountSource::Tmpfs(vec!["size=1m".into()]));
        let m = MountRequest::parse_mount("type=bind,src=/,target=/host").unwrap();
        assert_eq!(m.source, MountSource::Bind("/".into()));
        assert!(MountRequest::parse_mount("type=bind,src=/no/such/dir,target=/x").is_err());
        assert!(MountRequest::parse_mount("type=nfs,target=/x").is_err());
        assert!(MountRequest::parse_mount("type=volume,source=v").is_err());
    }
}
