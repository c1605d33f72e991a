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

    #[test]
    fn single_id_without_ranges() {
        let m = IdMapping::build(1000, 1000, None, Some(SubRange { start: 1, count: 5 }));
        assert_eq!(m.mode, IdMode::SingleId);
        assert_eq!(format_map(&m.gid), "0 1000 1\n");
        assert!(!m.maps_gid(5));
    }
}
