//! User-namespace id maps: the user's subordinate ranges from /etc/subuid and /etc/subgid,
//! written into a child's namespace through newuidmap/newgidmap (or directly for a single id).

use std::path::Path;
use std::process::{Command, Stdio};

/// One line of a uid or gid map: `size` ids from `container` inside map to `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// How the container's ids relate to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// berth runs as real root: no user namespace at all, as Docker and rootful Podman do.
    HostRoot,
    /// Container root is the user; 1..=N are the user's subordinate range.
    Subordinate,
    /// No subordinate range: only container root (the user) exists; chown to other ids fails.
    SingleId,
}

/// The complete mapping a container (or an unpack helper) runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    pub mode: IdMode,
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    #[error("cannot run {tool}: {source}; install it with `apt-get install uidmap`")]
    ToolMissing {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed for pid {pid}: {stderr}; check that /etc/sub{kind} has a range for this user and that {tool} is setuid root (`berth doctor`)")]
    ToolFailed {
        tool: &'static str,
        kind: &'static str,
        pid: i32,
        stderr: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("--userns=host needs berth to run as root: an unprivileged user cannot share the host's user namespace with a container; drop --userns, or use --userns=keep-id to own the files the container writes")]
    HostNeedsRoot,
    #[error("--userns=keep-id maps the unprivileged user who runs berth; as root there is no user namespace and files in bind mounts keep the container's ids: drop --userns=keep-id")]
    KeepIdAsRoot,
    #[error("--userns=keep-id needs a subordinate id range to fill the other ids of the container; add `{user}:100000:65536` to /etc/subuid and /etc/subgid (`berth doctor`)")]
    KeepIdNeedsRange { user: String },
    #[error("--userns=keep-id: {kind} {id} is outside the {count} ids of the subordinate range; give a smaller {kind} with keep-id:{kind}=N")]
    KeepIdOutOfRange {
        kind: &'static str,
        id: u32,
        count: u32,
    },
}

/// `--userns`: how a container's ids relate to the user's, as podman names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsernsMode {
    /// berth's map: container root is the user, 1..=N the subordinate range.
    #[default]
    Default,
    /// No user namespace (berth runs as root).
    Host,
    /// The user's own uid/gid (or the given ones) inside is the user outside; the process
    /// runs as that uid/gid unless `-u` says otherwise.
    KeepId { uid: Option<u32>, gid: Option<u32> },
}

/// An unknown `--userns` value.
#[derive(Debug, thiserror::Error)]
#[error("invalid --userns {0:?}: valid modes are \"\" (berth's default map), host (as root), keep-id and keep-id:uid=N,gid=N")]
pub struct UsernsModeError(pub String);

impl std::str::FromStr for UsernsMode {
    type Err = UsernsModeError;

    fn from_str(s: &str) -> Result<Self, UsernsModeError> {
        let bad = || UsernsModeError(s.to_string());
        match s {
            "" => return Ok(UsernsMode::Default),
            "host" => return Ok(UsernsMode::Host),
            "keep-id" => {
                return Ok(UsernsMode::KeepId {
                    uid: None,
                    gid: None,
                })
            }
            _ => {}
        }
        let opts = s.strip_prefix("keep-id:").ok_or_else(bad)?;
        let (mut uid, mut gid) = (None, None);
        for opt in opts.split(',') {
            let (slot, value) = match opt.split_once('=') {
                Some(("uid", v)) => (&mut uid, v),
                Some(("gid", v)) => (&mut gid, v),
                _ => return Err(bad()),
            };
            *slot = Some(value.parse().map_err(|_| bad())?);
        }
        Ok(UsernsMode::KeepId { uid, gid })
    }
}

impl std::fmt::Display for UsernsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsernsMode::Default => Ok(()),
            UsernsMode::Host => f.write_str("host"),
            UsernsMode::KeepId { uid, gid } => {
                f.write_str("keep-id")?;
                let opts: Vec<String> = [("uid", uid), ("gid", gid)]
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                    .collect();
                if !opts.is_empty() {
                    write!(f, ":{}", opts.join(","))?;
                }
                Ok(())
            }
        }
    }
}

impl serde::Serialize for UsernsMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for UsernsMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// podman's keep-id map of one kind (uid or gid): container ids below `id` are the first of
/// the subordinate range, `id` is the user (`host_id`), and the ids above it take the rest of
/// the range, so the container has as many ids as with berth's default map.
pub fn keep_id_ranges(id: u32, host_id: u32, sub: SubRange) -> Vec<IdRange> {
    let mut out = Vec::with_capacity(3);
    if id > 0 {
        out.push(IdRange {
            container: 0,
            host: sub.start,
            size: id.min(sub.count),
        });
    }
    out.push(IdRange {
        container: id,
        host: host_id,
        size: 1,
    });
    if sub.count > id {
        out.push(IdRange {
            container: id + 1,
            host: sub.start + id,
            size: sub.count - id,
        });
    }
    out
}

/// A subordinate range read from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Parses a subid file's text and returns the first range belonging to `name` or `id`.
pub fn parse_subid(text: &str, name: &str, id: u32) -> Option<SubRange> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(':');
            let owner = parts.next()?;
            let start = parts.next()?.trim().parse().ok()?;
            let count: u32 = parts.next()?.trim().parse().ok()?;
            (owner == name || owner == id.to_string()).then_some(SubRange { start, count })
        })
        .find(|r| r.count > 0)
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Looks up the subordinate range of the current user in `file` (/etc/subuid or /etc/subgid).
pub fn sub_range(file: &Path, uid: u32) -> Option<SubRange> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subid(&text, &user_name(uid), uid)
}

impl IdMapping {
    /// The mapping for the calling user: none for root, the subordinate ranges where present,
    /// else a single-id map.
    pub fn for_current_user() -> IdMapping {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        if uid == 0 && std::env::var_os("BERTH_FORCE_USERNS").is_none() {
            return IdMapping {
                mode: IdMode::HostRoot,
                uid: vec![],
                gid: vec![],
            };
        }
        let subu = sub_range(Path::new("/etc/subuid"), uid);
        let subg = sub_range(Path::new("/etc/subgid"), uid);
        Self::build(uid, gid, subu, subg)
    }

    /// Pure construction from the user's ids and ranges (unit-tested).
    pub fn build(uid: u32, gid: u32, subu: Option<SubRange>, subg: Option<SubRange>) -> IdMapping {
        match (subu, subg) {
            (Some(u), Some(g)) => IdMapping {
                mode: IdMode::Subordinate,
                uid: vec![
                    IdRange {
                        container: 0,
                        host: uid,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host: u.start,
                        size: u.count,
                    },
                ],
                gid: vec![
                    IdRange {
                        container: 0,
                        host: gid,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host: g.start,
                        size: g.count,
                    },
                ],
            },
            _ => IdMapping {
                mode: IdMode::SingleId,
                uid: vec![IdRange {
                    container: 0,
                    host: uid,
                    size: 1,
                }],
                gid: vec![IdRange {
                    container: 0,
                    host: gid,
                    size: 1,
                }],
            },
        }
    }

    /// The mapping a container with `--userns=MODE` runs under, for the calling user.
    pub fn for_userns(mode: UsernsMode) -> Result<IdMapping, IdMapError> {
        let uid = nix::unistd::geteuid().as_raw();
        let root = uid == 0 && std::env::var_os("BERTH_FORCE_USERNS").is_none();
        match mode {
            UsernsMode::Default => Ok(Self::for_current_user()),
            UsernsMode::Host if root => Ok(Self::for_current_user()),
            UsernsMode::Host => Err(IdMapError::HostNeedsRoot),
            UsernsMode::KeepId { .. } if root => Err(IdMapError::KeepIdAsRoot),
            UsernsMode::KeepId {
                uid: inner_uid,
                gid: inner_gid,
            } => {
                let gid = nix::unistd::getegid().as_raw();
                Self::keep_id(
                    (uid, gid),
                    (inner_uid.unwrap_or(uid), inner_gid.unwrap_or(gid)),
                    sub_range(Path::new("/etc/subuid"), uid),
                    sub_range(Path::new("/etc/subgid"), uid),
                )
                .map_err(|e| match e {
                    IdMapError::KeepIdNeedsRange { .. } => IdMapError::KeepIdNeedsRange {
                        user: user_name(uid),
                    },
                    e => e,
                })
            }
        }
    }

    /// Pure construction of the keep-id mapping (unit-tested): `user` (uid, gid) on the host
    /// is `inner` (uid, gid) in the container.
    pub fn keep_id(
        user: (u32, u32),
        inner: (u32, u32),
        subu: Option<SubRange>,
        subg: Option<SubRange>,
    ) -> Result<IdMapping, IdMapError> {
        let (Some(u), Some(g)) = (subu, subg) else {
            return Err(IdMapError::KeepIdNeedsRange {
                user: user.0.to_string(),
            });
        };
        for (kind, id, sub) in [("uid", inner.0, u), ("gid", inner.1, g)] {
            if id > sub.count {
                return Err(IdMapError::KeepIdOutOfRange {
                    kind,
                    id,
                    count: sub.count,
                });
            }
        }
        Ok(IdMapping {
            mode: IdMode::Subordinate,
            uid: keep_id_ranges(inner.0, user.0, u),
            gid: keep_id_ranges(inner.1, user.1, g),
        })
    }

    /// Whether a user namespace is needed at all.
    pub fn uses_userns(&self) -> bool {
        self.mode != IdMode::HostRoot
    }

    /// Whether container gid `id` exists (maps to some host id).
    pub fn maps_gid(&self, id: u32) -> bool {
        self.mode == IdMode::HostRoot || in_ranges(&self.gid, id)
    }

    /// Whether container uid `id` exists (maps to some host id).
    pub fn maps_uid(&self, id: u32) -> bool {
        self.mode == IdMode::HostRoot || in_ranges(&self.uid, id)
    }

    /// The warning printed once per run in single-id mode.
    pub fn warning(&self) -> Option<String> {
        (self.mode == IdMode::SingleId).then(|| {
            let uid = nix::unistd::geteuid().as_raw();
            let name = user_name(uid);
            format!(
                "warning: no subordinate id range for {name}: only root exists in the container and chown to other ids fails; \
                 fix: add `{name}:100000:65536` to /etc/subuid and /etc/subgid"
            )
        })
    }

    /// Writes this mapping into the user namespace of `pid`, from the parent namespace.
    pub fn apply(&self, pid: i32) -> Result<(), IdMapError> {
        match self.mode {
            IdMode::HostRoot => Ok(()),
            IdMode::Subordinate => {
                // The two helpers write different files of the namespace: run them side by
                // side, so that a start waits for one setuid exec instead of two in a row.
                let uid = spawn_map_tool("newuidmap", pid, &self.uid)?;
                let gid = spawn_map_tool("newgidmap", pid, &self.gid);
                let uid = finish_map_tool(uid, "newuidmap", "uid", pid);
                uid.and(finish_map_tool(gid?, "newgidmap", "gid", pid))
            }
            IdMode::SingleId => {
                // An unprivileged process may map its own ids once setgroups is denied.
                write_proc(pid, "setgroups", "deny")?;
                write_proc(pid, "uid_map", &format_map(&self.uid))?;
                write_proc(pid, "gid_map", &format_map(&self.gid))
            }
        }
    }
}

fn in_ranges(ranges: &[IdRange], id: u32) -> bool {
    ranges
        .iter()
        .any(|r| id >= r.container && id - r.container < r.size)
}

fn format_map(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

fn write_proc(pid: i32, file: &str, text: &str) -> Result<(), IdMapError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|source| IdMapError::Write { path, source })
}

/// Starts `tool` (newuidmap or newgidmap) writing `ranges` into the namespace of `pid`.
fn spawn_map_tool(
    tool: &'static str,
    pid: i32,
    ranges: &[IdRange],
) -> Result<std::process::Child, IdMapError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.container.to_string(),
            r.host.to_string(),
            r.size.to_string(),
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IdMapError::ToolMissing { tool, source })
}

/// Waits for a tool started by [`spawn_map_tool`]; its error output says why it failed.
fn finish_map_tool(
    child: std::process::Child,
    tool: &'static str,
    kind: &'static str,
    pid: i32,
) -> Result<(), IdMapError> {
    let out = child
        .wait_with_output()
        .map_err(|source| IdMapError::ToolMissing { tool, source })?;
    if !out.status.success() {
        return Err(IdMapError::ToolFailed {
            tool,
            kind,
            pid,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_range_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:300000:1000\nbob:0:0\n";
        assert_eq!(
            parse_subid(text, "alice", 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, "carol", 1001),
            Some(SubRange {
                start: 300000,
                count: 1000
            })
        );
        assert_eq!(
            parse_subid(text, "bob", 1002),
            None,
            "empty range is no range"
        );
    }

    #[test]
    fn subordinate_map_puts_user_at_root() {
        let m = IdMapping::build(
            1000,
            1000,
            Some(SubRange {
                start: 100000,
                count: 65536,
            }),
            Some(SubRange {
                start: 100000,
                count: 65536,
            }),
        );
        assert_eq!(m.mode, IdMode::Subordinate);
        assert_eq!(format_map(&m.uid), "0 1000 1\n1 100000 65536\n");
        assert!(m.maps_gid(5));
        assert!(!m.maps_gid(70000));
    }

    const SUB: SubRange = SubRange {
        start: 100000,
        count: 65536,
    };

    #[test]
    fn keep_id_maps_the_user_to_their_own_id() {
        let m = IdMapping::keep_id((1000, 1001), (1000, 1001), Some(SUB), Some(SUB)).unwrap();
        assert_eq!(
            format_map(&m.uid),
            "0 100000 1000\n1000 1000 1\n1001 101000 64536\n"
        );
        assert_eq!(
            format_map(&m.gid),
            "0 100000 1001\n1001 1001 1\n1002 101001 64535\n"
        );
        // As many ids as berth's default map, and every host id of the range used once.
        let default = IdMapping::build(1000, 1001, Some(SUB), Some(SUB));
        let total = |r: &[IdRange]| r.iter().map(|r| r.size).sum::<u32>();
        assert_eq!(total(&m.uid), total(&default.uid));
        assert!(m.maps_uid(0) && m.maps_uid(65536) && !m.maps_uid(65537));
    }

    #[test]
    fn keep_id_edges_root_and_the_last_id() {
        assert_eq!(
            format_map(&keep_id_ranges(0, 1000, SUB)),
            "0 1000 1\n1 100000 65536\n",
            "keep-id:uid=0 is berth's default map"
        );
        assert_eq!(
            format_map(&keep_id_ranges(65536, 1000, SUB)),
            "0 100000 65536\n65536 1000 1\n"
        );
        let err = IdMapping::keep_id((1000, 1000), (70000, 1000), Some(SUB), Some(SUB));
        assert!(matches!(
            err,
            Err(IdMapError::KeepIdOutOfRange { id: 70000, .. })
        ));
        let err = IdMapping::keep_id((1000, 1000), (1000, 1000), None, Some(SUB));
        assert!(matches!(err, Err(IdMapError::KeepIdNeedsRange { .. })));
    }

    #[test]
    fn userns_modes_parse_and_print_back() {
        for (text, mode) in [
            ("", UsernsMode::Default),
            ("host", UsernsMode::Host),
            (
                "keep-id",
                UsernsMode::KeepId {
                    uid: None,
                    gid: None,
                },
            ),
            (
                "keep-id:uid=1000,gid=50",
                UsernsMode::KeepId {
                    uid: Some(1000),
                    gid: Some(50),
                },
            ),
            (
                "keep-id:gid=7",
                UsernsMode::KeepId {
                    uid: None,
                    gid: Some(7),
                },
            ),
        ] {
            assert_eq!(text.parse::<UsernsMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), text);
        }
        for bad in [
            "private",
            "keep-id:",
            "keep-id:uid=x",
            "keep-id:size=3",
            "auto",
        ] {
            let e = bad.parse::<UsernsMode>().unwrap_err().to_string();
            assert!(e.contains("keep-id:uid=N,gid=N"), "{bad}: {e}");
        }
    }

    #[test]
    fn single_id_without_ranges() {
        let m = IdMapping::build(1000, 1000, None, Some(SubRange { start: 1, count: 5 }));
        assert_eq!(m.mode, IdMode::SingleId);
        assert_eq!(format_map(&m.gid), "0 1000 1\n");
        assert!(!m.maps_gid(5));
    }
}
