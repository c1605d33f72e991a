//! The `berth-vmm` program's jail, as Firecracker's jailer builds one but without root: a new
//! user, mount, PID, network, IPC and UTS namespace, an empty read-only root (a tmpfs, made
//! root by pivot_root) that holds only the shared directories bound in from the descriptors
//! berth handed over (and, when there are shares, a proc of the VMM's own PID namespace, which
//! the 9P server reopens files through), no capabilities, no_new_privs, and no descriptor but
//! those of its [`Launch`].
//!
//! A process enters a new PID namespace only through a child: [`enter`] forks after unsharing,
//! and the first process stays outside as the waiter, which only reaps the VMM and exits as it
//! did. Both die with their parent (`PR_SET_PDEATHSIG`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::launch::{share_path, Launch};

/// Where the new root is built before it becomes `/`: a directory every Linux host has, in
/// the VMM's own mount namespace (the host's view of it is untouched).
const STAGING: &str = "/tmp";

/// Which side of the fork the caller is on.
pub enum Role {
    /// The first process: wait for the VMM, `pid`, and exit as it did.
    Waiter { pid: libc::pid_t },
    /// The VMM, jailed.
    Vmm,
}

/// What failed while building the jail.
#[derive(Debug, thiserror::Error)]
#[error("building the VMM's jail: {what}")]
pub struct Error {
    what: String,
    #[source]
    source: io::Error,
}

fn fail(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error { what, source }
}

/// -1 from a libc call as the error it set.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Closes every descriptor but stdio and `keep`.
pub fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for fd in keep.into_iter().map(|fd| fd as u32).chain([u32::MAX]) {
        if fd > from {
            // SAFETY: close_range takes integers; it closes descriptors this process owns and
            // no Rust object of which is in use (only the launch's are).
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = fd.saturating_add(1);
    }
}

/// Dies with the parent, at once if it is already gone.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl and getppid take and return integers.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        if libc::getppid() != parent {
            libc::_exit(137);
        }
    }
    Ok(())
}

/// Enters the jail (see the module's doc). Single-threaded callers only (unshare of a user
/// namespace and fork require it).
pub fn enter(launch: &Launch) -> Result<Role, Error> {
    // SAFETY: getuid/getgid/getpid/getppid return integers.
    let (uid, gid, parent) = unsafe { (libc::getuid(), libc::getgid(), libc::getppid()) };
    die_with_parent(parent).map_err(fail("PR_SET_PDEATHSIG"))?;
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes flags; the process is single-threaded.
    check(unsafe { libc::unshare(flags) }).map_err(fail(
        "unshare of the user, mount, PID, network, IPC and UTS namespaces (does this kernel allow unprivileged user namespaces? see docs/security.md)",
    ))?;
    // The user keeps their ids inside: files the guest creates on a share are theirs.
    std::fs::write("/proc/self/setgroups", "deny").map_err(fail("writing setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
        .map_err(fail("writing uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
        .map_err(fail("writing gid_map"))?;

    // The VMM cannot ask whether the waiter still lives by getppid (its parent is outside its
    // PID namespace: 0): the waiter holds a pipe's write end, which closes when it dies.
    let mut alive = [0; 2];
    // SAFETY: pipe2 fills a local array.
    check(unsafe { libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(fail("creating a pipe"))?;
    // SAFETY: fork in a single-threaded process.
    match check(unsafe { libc::fork() }).map_err(fail("fork into the PID namespace"))? {
        0 => {}
        pid => {
            // The waiter holds nothing of the VM's: the report pipe closes when the VMM ends.
            close_other_fds(&[alive[1]]);
            return Ok(Role::Waiter { pid });
        }
    }
    // SAFETY: prctl, close and poll on integers and a local struct.
    unsafe {
        libc::close(alive[1]);
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))
        .map_err(fail("PR_SET_PDEATHSIG"))?;
        let mut pfd = libc::pollfd {
            fd: alive[0],
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            libc::_exit(137);
        }
        libc::close(alive[0]);
    }
    build_root(launch)?;
    drop_privileges()?;
    Ok(Role::Vmm)
}

/// The empty root: a tmpfs with the shares bound in, made `/` by pivot_root, read-only.
fn build_root(launch: &Launch) -> Result<(), Error> {
    let none = c"none";
    let staging = cstr(Path::new(STAGING)).map_err(fail(STAGING))?;
    // The shares, reopened in this namespace before the tmpfs covers the staging directory
    // (which may hold them).
    let mut shares = Vec::with_capacity(launch.shares.len());
    for share in &launch.shares {
        shares.push(reopen_here(share.fd).map_err(fail(format!("opening share {}", share.tag)))?);
    }
    // SAFETY: mount, chdir, mkdir, pivot_root and umount2 with NUL-terminated strings that
    // outlive the calls; they change this process's own (new) mount namespace only.
    unsafe {
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))
        .map_err(fail("making the mounts private"))?;
        check(libc::mount(
            none.as_ptr(),
            staging.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=16k,nr_inodes=512,mode=0755".as_ptr().cast(),
        ))
        .map_err(fail(format!("mounting a tmpfs on {STAGING}")))?;
        check(libc::chdir(staging.as_ptr())).map_err(fail("entering the new root"))?;
    }
    if !launch.shares.is_empty() {
        std::fs::create_dir("shares").map_err(fail("making /shares"))?;
        std::fs::create_dir("proc").map_err(fail("making /proc"))?;
    }
    for (i, (share, dir)) in launch.shares.iter().zip(&shares).enumerate() {
        let target = Path::new(".").join(share_path(i).strip_prefix("/").unwrap_or(Path::new("")));
        std::fs::create_dir(&target).map_err(fail(format!("making {}", target.display())))?;
        bind_share(dir.as_raw_fd(), &target, share.read_only)
            .map_err(fail(format!("binding share {} into the jail", share.tag)))?;
    }
    if !launch.shares.is_empty() {
        mount_proc().map_err(fail(
            "mounting a proc of the VMM's PID namespace (the 9P server of -v needs one)",
        ))?;
    }
    // SAFETY: as above.
    unsafe {
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)
            .map_err(fail("pivot_root"))?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))
            .map_err(fail("detaching the host's root"))?;
        check(libc::chdir(c"/".as_ptr())).map_err(fail("chdir /"))?;
        check(libc::mount(
            none.as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
        .map_err(fail("making the root read-only"))?;
    }
    Ok(())
}

/// The directory open as `fd` (berth's, whose mount is the host namespace's, which a bind in
/// this one refuses with EINVAL) opened again by its path in this namespace; it must be the
/// very directory berth opened (device and inode), not one swapped in since.
fn reopen_here(fd: RawFd) -> io::Result<OwnedFd> {
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&path)?;
    let mut opened: libc::stat = unsafe_zeroed_stat();
    // SAFETY: fstat writes a local struct.
    check(unsafe { libc::fstat(fd, &mut opened) })?;
    let here = dir.metadata()?;
    if here.dev() != opened.st_dev || here.ino() != opened.st_ino {
        return Err(io::Error::other(format!(
            "{} changed while the VM started: run it again",
            path.display()
        )));
    }
    Ok(OwnedFd::from(dir))
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: libc::stat is plain data, valid all-zero.
    unsafe { std::mem::zeroed() }
}

/// Binds the directory open as `fd` (in this namespace) on `target`, read-only when
/// `read_only`; never with set-user-id programs or devices.
fn bind_share(fd: RawFd, target: &Path, read_only: bool) -> io::Result<()> {
    let source = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let target = cstr(target)?;
    // SAFETY: mount and statvfs with NUL-terminated strings and a local struct.
    unsafe {
        check(libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // A remount keeps the flags a user namespace may not clear (those the host's mount
        // has), and adds ours.
        let mut st: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(target.as_ptr(), &mut st))?;
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
        for (st_flag, ms_flag) in [
            (libc::ST_RDONLY, libc::MS_RDONLY),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                flags |= ms_flag;
            }
        }
        if read_only {
            flags |= libc::MS_RDONLY;
        }
        check(libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

/// A proc of the VMM's PID namespace (itself alone) at `proc` in the new root, process
/// directories only where the kernel can (Linux 5.8's `subset=pid`).
fn mount_proc() -> io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for data in [c"subset=pid".as_ptr(), std::ptr::null()] {
        // SAFETY: mount with NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"proc".as_ptr(),
                c"proc".as_ptr(),
                flags,
                data.cast(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || data.is_null() {
            return Err(e);
        }
    }
    Ok(())
}

/// No capabilities left in any set, and no_new_privs.
fn drop_privileges() -> Result<(), Error> {
    // SAFETY: prctl and capset with integers and local structs.
    unsafe {
        // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int)
            .map_err(fail("dropping capabilities"))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            .map_err(fail("setting no_new_privs"))?;
    }
    Ok(())
}

/// The waiter's part: reaps the VMM and returns the exit status to leave with (128+N for a
/// signal, as a shell reports it).
pub fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes a local integer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}
