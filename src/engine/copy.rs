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
        if let (CopyEnd::Container { container, .. }, _)
        | (_, CopyEnd::Container { container, .. }) = (src, dst)
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
                let local = consume(&dest_s, contents, false, opts.archive, rd);
                let remote = helper.wait();
                remote?;
                local.map_err(EngineError::Usage)
            }
            (CopyEnd::Container { container, path }, CopyEnd::Stream) => {
                let (mut rd, wr) = pipe()?;
                let (path, follow) = (path.clone(), opts.follow_link);
                let helper = self.spawn_inside(container, move || produce(&path, follow, wr))?;
                let copied = io::copy(&mut rd, &mut io::stdout().lock());
                drop(rd);
                helper.wait()?;
                copied.map_err(|e| EngineError::Usage(format!("writing the archive: {e}")))?;
                Ok(())
            }
            (CopyEnd::Host(source), CopyEnd::Container { container, path }) => {
                let (rd, wr) = pipe()?;
                let (dest, archive) = (path.clone(), opts.archive);
                let contents = src_contents(src);
                let wr_fd = wr.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    // Our copy of the writing end would keep the stream from ending.
                    close_copy(wr_fd);
                    consume(&dest, contents, false, archive, rd)
                })?;
                let local = produce(&source.to_string_lossy(), opts.follow_link, wr);
                let remote = helper.wait();
                local.map_err(EngineError::Usage)?;
                remote?;
                Ok(())
            }
            (CopyEnd::Stream, CopyEnd::Container { container, path }) => {
                let (rd, mut wr) = pipe()?;
                let (dest, archive) = (path.clone(), opts.archive);
                let wr_fd = wr.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    close_copy(wr_fd);
                    consume(&dest, false, true, archive, rd)
                })?;
                let copied = io::copy(&mut io::stdin().lock(), &mut wr);
                drop(wr);
                helper.wait()?;
                copied.map_err(|e| EngineError::Usage(format!("reading the archive: {e}")))?;
                Ok(())
            }
            (CopyEnd::Container { .. }, CopyEnd::Container { .. }) => {
                usage("copying between containers is not supported: copy to the host, then on")
            }
            _ => usage("one of SRC and DEST must be CONTAINER:PATH"),
        }
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
                    let local =
                        scope.spawn(move || consume(&dest_s, contents, false, opts.archive, rd));
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
            (CopyEnd::Container { path, .. }, CopyEnd::Stream) => {
                let job = Builtin::CopyOut {
                    path: path.clone(),
                    follow: opts.follow_link,
                };
                self.vm_job(rec, WHAT, job, None, &mut io::stdout().lock())
            }
            (CopyEnd::Host(source), CopyEnd::Container { path, .. }) => {
                let (mut rd, wr) = pipe()?;
                let job = Builtin::CopyIn {
                    dest: path.clone(),
                    contents: src_contents(src),
                    stream: false,
                    archive: opts.archive,
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
            (CopyEnd::Stream, CopyEnd::Container { path, .. }) => {
                let job = Builtin::CopyIn {
                    dest: path.clone(),
                    contents: false,
                    stream: true,
                    archive: opts.archive,
                };
                self.vm_job(rec, WHAT, job, Some(&mut io::stdin()), &mut io::sink())
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
