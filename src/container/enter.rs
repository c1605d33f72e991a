//! Work inside a container's file system from outside it (`berth cp`): in a running
//! container's user and mount namespaces, or, for a stopped one, in a user namespace of its
//! own with the container's root mounted and chrooted into. Either way "/" is the
//! container's root, so its symlinks cannot lead out of it.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::idmap::IdMapping;
use super::process;
use super::userns::{self, child_exit, Forked};
use super::ContainerError;

/// A helper working inside a container; `wait` collects its verdict.
pub struct Helper {
    pid: Pid,
    err: OwnedFd,
}

impl Helper {
    /// Waits for the helper; its error message when it failed.
    pub fn wait(self) -> Result<(), ContainerError> {
        let mut msg = String::new();
        let _ = std::fs::File::from(self.err).read_to_string(&mut msg);
        match userns::wait_retry(self.pid)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            _ if !msg.is_empty() => Err(ContainerError::Setup(msg)),
            other => Err(ContainerError::Setup(format!(
                "the helper in the container ended unexpectedly: {other:?}"
            ))),
        }
    }
}

fn finish(err: &OwnedFd, result: Result<(), String>) -> ! {
    match result {
        Ok(()) => child_exit(0),
        Err(e) => {
            let _ = nix::unistd::write(err, e.as_bytes());
            child_exit(1)
        }
    }
}

/// Runs `work` in the user and mount namespaces of `init` (a running container's first
/// process), as the container's root. Returns at once; the caller talks to `work` through
/// descriptors it shares, then waits. The caller must be single-threaded.
pub fn spawn_in_running<F>(init: Pid, ids: &IdMapping, work: F) -> Result<Helper, ContainerError>
where
    F: FnOnce() -> Result<(), String>,
{
    use std::os::unix::fs::MetadataExt;
    let mut namespaces = Vec::new();
    for (name, flag) in [("user", libc::CLONE_NEWUSER), ("mnt", libc::CLONE_NEWNS)] {
        let path = format!("/proc/{init}/ns/{name}");
        let f = std::fs::File::open(&path).map_err(|e| {
            ContainerError::Setup(format!(
                "opening {path}: {e}; is the container still running?"
            ))
        })?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .map(|m| m.ino())
            .ok();
        if f.metadata().map(|m| m.ino()).ok() != ours {
            namespaces.push((OwnedFd::from(f), flag));
        }
    }
    let (err_rd, err_wr) = process::pipe()?;
    match userns::clone_fork(CloneFlags::empty())? {
        Forked::Parent(pid) => Ok(Helper { pid, err: err_rd }),
        Forked::Child => {
            drop(err_rd);
            userns::set_parent_death_signal();
            let result = (|| {
                for (fd, flag) in &namespaces {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns on a namespace descriptor we own, single-threaded child.
                    if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
                        return Err(format!(
                            "joining the container: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
                if ids.uses_userns() {
                    nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                        .map_err(|e| format!("setresgid(0): {e}"))?;
                    nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                        .map_err(|e| format!("setresuid(0): {e}"))?;
                }
                nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
                work()
            })();
            finish(&err_wr, result)
        }
    }
}

/// Runs `work` chrooted into the root of the stopped container whose bundle is `bundle`,
/// mounted (as its spec says) in a private mount namespace of a new user namespace with
/// `ids`. Returns at once, like [`spawn_in_running`].
pub fn spawn_in_stopped<F>(
    bundle: &Path,
    ids: &IdMapping,
    work: F,
) -> Result<Helper, ContainerError>
where
    F: FnOnce() -> Result<(), String>,
{
    let spec = process::load_spec(bundle)?;
    let rootfs = process::rootfs_path(bundle, &spec);
    let (sync_rd, sync_wr) = process::pipe()?;
    let (err_rd, err_wr) = process::pipe()?;
    match userns::clone_fork(userns::userns_flag(ids) | CloneFlags::CLONE_NEWNS)? {
        Forked::Parent(pid) => {
            drop(sync_rd);
            drop(err_wr);
            userns::parent_write_maps(pid, ids, sync_wr)?;
            Ok(Helper { pid, err: err_rd })
        }
        Forked::Child => {
            drop(sync_wr);
            drop(err_rd);
            userns::set_parent_death_signal();
            let result = (|| {
                userns::child_wait_for_maps(sync_rd, ids)?;
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(|e| format!("making / private: {e}"))?;
                let mut fuse = process::mount_rootfs(&spec, &rootfs)?;
                let done = (|| {
                    nix::unistd::chroot(&rootfs).map_err(|e| format!("chroot: {e}"))?;
                    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
                    work()
                })();
                process::stop_fuse(Path::new("/"), &mut fuse);
                done
            })();
            finish(&err_wr, result)
        }
    }
}
