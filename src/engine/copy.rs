//! `berth cp`: files between the host and a container (running or not), as a tar stream
//! between a process on each side, with Docker's rules for what lands where:
//! a file goes into an existing directory or becomes the destination file; a directory
//! becomes the destination (which must not exist) or goes into an existing one; `SRC/.`
//! copies a directory's contents. `-` stands for a tar stream on stdin or stdout.
//! The extracting side never writes outside the destination: no `..`, no symlinks followed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use berth_agent::archive::{consume, produce};
use berth_agent::protocol::Builtin;

use super::EngineError;
use crate::container::enter;
use crate::state::{ContainerRecord, ContainerStore};
use crate::vm::sandbox::SandboxError;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEnd {
    Host(PathBuf),
    Container {
        container: String,
        path: String,
    },
    /// `-`: a tar stream on stdin (as source) or stdout (as destination).
    Stream,
}

impl CopyEnd {
    /// Docker's reading: `-`, `CONTAINER:PATH` (a colon before any slash), else a host path.
    pub fn parse(s: &str) -> CopyEnd {
        if s == "-" {
            return CopyEnd::Stream;
        }
        match s.split_once(':') {
            Some((c, p)) if !c.is_empty() && !c.contains('/') => CopyEnd::Container {
                container: c.to_string(),
                path: if p.is_empty() {
                    "/".into()
                } else {
                    p.to_string()
                },
            },
            _ => CopyEnd::Host(PathBuf::from(s)),
        }
    }
}

/// `-a` and `-L`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Keep the files' uid and gid (otherwise the writing side's own).
    pub archive: bool,
    /// Follow a symlink given as the source.
    pub follow_link: bool,
}

fn pipe() -> Result<(File, File), EngineError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Monitor(format!("creating a pipe: {e}")))?;
    Ok((File::from(r), File::from(w)))
}

impl super::Engine {
    /// Starts `work` inside container `key`'s file system (running or stopped).
    fn spawn_inside<F>(&self, key: &str, work: F) -> Result<enter::Helper, EngineError>
    where
        F: FnOnce() -> Result<(), String>,
    {
        let rec = self.container(key)?;
        let ids = self.ids_for(rec.userns)?;
        let helper = match rec.pid {
            Some(pid) if ContainerStore::is_running(&rec) => {
                enter::spawn_in_running(nix::unistd::Pid::from_raw(pid), &ids, work)?
            }
            _ => {
                let _lock = self.containers.lock_container(&rec.id)?;
                enter::spawn_in_stopped(&self.containers.dir(&rec.id), &ids, work)?
            }
        };
        Ok(helper)
    }

    /// `berth cp SRC DEST`.
    pub fn copy(&self, src: &CopyEnd, dst: &CopyEnd, opts: CopyOptions) -> Result<(), EngineError> {
        let usage = |m: &str| Err(EngineError::Usage(m.to_string()));
        if let (CopyEnd::Container { container, .. }, CopyEnd::Host(_))
        | (CopyEnd::Host(_), CopyEnd::Container { container, .. }) = (src, dst)
        {
            let rec = self.container(container)?;
            if rec.isolation == crate::state::Isolation::Vm {
                return self.copy_vm(&rec, src, dst, opts);
            }
        }
        match (src, dst) {
            (CopyEnd::Container { container, path }, CopyEnd::Host(dest)) => {
                let (rd, wr) = pipe()?;
                let (path, follow) = (path.clone(), opts.follow_link);
                let rd_fd = rd.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    close_copy(rd_fd);
                    produce(&path, follow, wr)
                })?;
                let dest_s = dest.to_string_lossy().into_owned();
                let contents = src_contents(src);
                let local = consume(&dest_s, contents, false, opts.archive, false, rd);
                let remote = helper.wait();
                remote?;
                local.map_err(EngineError::Usage)
            }
            (CopyEnd::Container { container, path }, CopyEnd::Stream) => {
                self.copy_out(container, path, opts.follow_link, &mut io::stdout().lock())
            }
            (CopyEnd::Host(source), CopyEnd::Container { container, path }) => {
                let (rd, wr) = pipe()?;
                let (dest, archive) = (path.clone(), opts.archive);
                let contents = src_contents(src);
                let wr_fd = wr.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    // Our copy of the writing end would keep the stream from ending.
                    close_copy(wr_fd);
                    consume(&dest, contents, false, archive, false, rd)
                })?;
                let local = produce(&source.to_string_lossy(), opts.follow_link, wr);
                let remote = helper.wait();
                local.map_err(EngineError::Usage)?;
                remote?;
                Ok(())
            }
            (CopyEnd::Stream, CopyEnd::Container { container, path }) => {
                self.copy_in(container, path, opts.archive, false, &mut io::stdin())
            }
            (CopyEnd::Container { .. }, CopyEnd::Container { .. }) => {
                usage("copying between containers is not supported: copy to the host, then on")
            }
            _ => usage("one of SRC and DEST must be CONTAINER:PATH"),
        }
    }
}

/// What a path in a container is (`docker cp` asks before it copies): the path's own
/// metadata, a symlink not followed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathStat {
    /// The last component (`/` for the root).
    pub name: String,
    pub size: u64,
    /// `st_mode`: the type and permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i128,
    /// Where a symlink points, as written in it; empty for other files.
    pub link_target: String,
}

impl PathStat {
    fn of(path: &str) -> Result<Option<PathStat>, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{path}: {e}")),
        };
        let link_target = if meta.file_type().is_symlink() {
            std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let name = match berth_agent::archive::top_name(path).as_str() {
            "." if path.trim_end_matches('/').is_empty() => "/".to_string(),
            n => n.to_string(),
        };
        Ok(Some(PathStat {
            name,
            size: meta.size(),
            mode: meta.mode(),
            mtime: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            link_target,
        }))
    }
}

impl super::Engine {
    /// The metadata of `path` in container `key` (running or not); `NoSuchPath` when it is
    /// not there.
    pub fn path_stat(&self, key: &str, path: &str) -> Result<PathStat, EngineError> {
        let rec = self.container(key)?;
        self.refuse_vm(&rec)?;
        let (mut rd, wr) = pipe()?;
        let inside = path.to_string();
        let rd_fd = rd.as_raw_fd();
        let helper = self.spawn_inside(&rec.id, move || {
            close_copy(rd_fd);
            let stat = PathStat::of(&inside)?;
            serde_json::to_writer(wr, &stat).map_err(|e| e.to_string())
        })?;
        let mut text = Vec::new();
        let read = io::Read::read_to_end(&mut rd, &mut text);
        helper.wait()?;
        read.map_err(|e| EngineError::Usage(format!("reading the file's metadata: {e}")))?;
        let stat: Option<PathStat> = serde_json::from_slice(&text).map_err(|e| {
            EngineError::Usage(format!(
                "the container's answer about {path} is malformed: {e}"
            ))
        })?;
        stat.ok_or_else(|| EngineError::NoSuchPath {
            container: rec.name.clone(),
            path: path.to_string(),
        })
    }

    /// Writes `path` of container `key` (running or not) as a tar stream to `out`: the top
    /// entry named after its last component (`.` for `DIR/.`), as `berth cp C:PATH -` does.
    pub fn copy_out(
        &self,
        key: &str,
        path: &str,
        follow: bool,
        out: &mut dyn io::Write,
    ) -> Result<(), EngineError> {
        let rec = self.container(key)?;
        if rec.isolation == crate::state::Isolation::Vm {
            let job = Builtin::CopyOut {
                path: path.to_string(),
                follow,
            };
            return self.vm_job(&rec, "berth cp", job, None, out);
        }
        let (mut rd, wr) = pipe()?;
        let inside = path.to_string();
        let helper = self.spawn_inside(&rec.id, move || produce(&inside, follow, wr))?;
        let copied = io::copy(&mut rd, out);
        drop(rd);
        helper.wait()?;
        copied.map_err(|e| EngineError::Usage(format!("writing the archive: {e}")))?;
        Ok(())
    }

    /// Extracts the tar stream `input` into the existing directory `dest` of container `key`
    /// (running or not); with `archive` the entries keep their uid and gid, with
    /// `keep_kinds` none replaces a directory with a non-directory or the other way. Nothing
    /// lands outside the container's root or `dest`: no `..`, no symlinks followed.
    pub fn copy_in(
        &self,
        key: &str,
        dest: &str,
        archive: bool,
        keep_kinds: bool,
        input: &mut (dyn io::Read + Send),
    ) -> Result<(), EngineError> {
        let rec = self.container(key)?;
        if rec.isolation == crate::state::Isolation::Vm {
            let job = Builtin::CopyIn {
                dest: dest.to_string(),
                contents: false,
                stream: true,
                archive,
                keep_kinds,
            };
            return self.vm_job(&rec, "berth cp", job, Some(input), &mut io::sink());
        }
        let (rd, mut wr) = pipe()?;
        let inside = dest.to_string();
        let wr_fd = wr.as_raw_fd();
        let helper = self.spawn_inside(&rec.id, move || {
            close_copy(wr_fd);
            consume(&inside, false, true, archive, keep_kinds, rd)
        })?;
        let copied = io::copy(input, &mut wr);
        drop(wr);
        helper.wait()?;
        copied.map_err(|e| EngineError::Usage(format!("reading the archive: {e}")))?;
        Ok(())
    }

    /// A microVM's files are the guest's: its agent copies whole trees (`copy_out`,
    /// `copy_in`), but answers no single file's metadata.
    fn refuse_vm(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        if rec.isolation == crate::state::Isolation::Vm {
            return Err(EngineError::Usage(format!(
                "{} is a microVM: reading one file's metadata from its guest is not built yet; copy with `berth cp {}:PATH -` instead",
                rec.name, rec.name
            )));
        }
        Ok(())
    }
}

impl super::Engine {
    /// `berth cp` with running microVM `rec` at one end: the agent archives or extracts in the
    /// guest (the same code as a container's helper), this side does the host's half.
    fn copy_vm(
        &self,
        rec: &ContainerRecord,
        src: &CopyEnd,
        dst: &CopyEnd,
        opts: CopyOptions,
    ) -> Result<(), EngineError> {
        const WHAT: &str = "berth cp";
        match (src, dst) {
            (CopyEnd::Container { path, .. }, CopyEnd::Host(dest)) => {
                let (rd, mut wr) = pipe()?;
                let job = Builtin::CopyOut {
                    path: path.clone(),
                    follow: opts.follow_link,
                };
                let dest_s = dest.to_string_lossy().into_owned();
                let contents = src_contents(src);
                std::thread::scope(|scope| {
                    let local = scope
                        .spawn(move || consume(&dest_s, contents, false, opts.archive, false, rd));
                    let remote = self.vm_job(rec, WHAT, job, None, &mut wr);
                    drop(wr);
                    let local = local
                        .join()
                        .unwrap_or_else(|_| Err("the copy failed".into()));
                    match (remote, local) {
                        // This side stopped reading first: its reason is the one to tell.
                        (Err(EngineError::Sandbox(SandboxError::Channel(_))), Err(l)) => {
                            Err(EngineError::Usage(l))
                        }
                        (remote, local) => {
                            remote?;
                            local.map_err(EngineError::Usage)
                        }
                    }
                })
            }
            (CopyEnd::Host(source), CopyEnd::Container { path, .. }) => {
                let (mut rd, wr) = pipe()?;
                let job = Builtin::CopyIn {
                    dest: path.clone(),
                    contents: src_contents(src),
                    stream: false,
                    archive: opts.archive,
                    keep_kinds: false,
                };
                let source = source.to_string_lossy().into_owned();
                // A missing source would reach the guest as an empty stream: say so here.
                std::fs::symlink_metadata(&source)
                    .map_err(|e| EngineError::Usage(format!("{source}: {e}")))?;
                std::thread::scope(|scope| {
                    let local = scope.spawn(move || produce(&source, opts.follow_link, wr));
                    let remote = self.vm_job(rec, WHAT, job, Some(&mut rd), &mut io::sink());
                    drop(rd);
                    let local = local
                        .join()
                        .unwrap_or_else(|_| Err("the copy failed".into()));
                    remote?;
                    local.map_err(EngineError::Usage)
                })
            }
            _ => Err(EngineError::Usage(
                "copying between containers is not supported: copy to the host, then on".into(),
            )),
        }
    }
}

/// Whether the source names a directory's contents (`SRC/.`).
fn src_contents(src: &CopyEnd) -> bool {
    let s = match src {
        CopyEnd::Host(p) => p.to_string_lossy().into_owned(),
        CopyEnd::Container { path, .. } => path.clone(),
        CopyEnd::Stream => return false,
    };
    s.trim_end_matches('/').ends_with("/.") || s == "."
}

/// Closes, in the helper, its copy of the parent's end of the pipe.
fn close_copy(fd: std::os::fd::RawFd) {
    let _ = nix::unistd::close(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_parse_like_docker() {
        assert_eq!(
            CopyEnd::parse("web:/etc/hosts"),
            CopyEnd::Container {
                container: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(CopyEnd::parse("./a:b"), CopyEnd::Host("./a:b".into()));
        assert_eq!(CopyEnd::parse("/x/y"), CopyEnd::Host("/x/y".into()));
        assert_eq!(CopyEnd::parse("-"), CopyEnd::Stream);
    }
}
