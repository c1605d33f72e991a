//! Mount set-up inside the container's mount namespace: the rootfs, the spec's mounts,
//! device nodes, pivot_root, masked and read-only paths. Every path from the image is
//! resolved inside the rootfs (a hostile symlink cannot point a mount at the host).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, Mount};

use crate::inroot::{self, fd_path};

/// A failed mount step, with the path involved; the message goes to the user as is.
pub type MountResult<T> = Result<T, String>;

/// Resolves `path` (absolute inside the container) under `root`, following symlinks as if
/// `root` were `/` ([`inroot::resolve_in_root`]), so the result never leaves `root` at the
/// time of the call. A path, not a descriptor: a symlink made after the call is followed by
/// whoever uses it, so on the host open paths through [`crate::inroot`] instead (mounts here
/// do). Where the path cannot be resolved (a symlink loop), its lexical form under `root`.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let resolved = inroot::open_root(root).and_then(|fd| inroot::resolve_in_root(fd.as_fd(), path));
    match resolved {
        Ok(rel) => root.join(rel),
        Err(_) => {
            let mut rel = PathBuf::new();
            for c in path.components() {
                match c {
                    Component::Normal(n) => rel.push(n),
                    Component::ParentDir => {
                        rel.pop();
                    }
                    _ => {}
                }
            }
            root.join(rel)
        }
    }
}

/// OCI mount options split into mount flags, propagation flags and filesystem data.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for o in options {
        let (set, clear, prop) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (
                MsFlags::MS_BIND | MsFlags::MS_REC,
                MsFlags::empty(),
                MsFlags::empty(),
            ),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
            ),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
            other => {
                p.data.push(other.to_string());
                continue;
            }
        };
        p.flags |= set;
        p.flags &= !clear;
        p.propagation |= prop;
    }
    p
}

/// Flags a bind remount must keep: in a user namespace the kernel refuses to clear
/// nosuid/nodev/noexec/ro/atime flags that the host mount has (they are "locked").
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Remounts an existing bind mount at `path` with `flags` added to its locked flags.
pub fn remount_bind(path: &Path, flags: MsFlags) -> MountResult<()> {
    let all = flags | locked_flags(path) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount(None::<&str>, path, None::<&str>, all, None::<&str>)
        .map_err(|e| format!("remounting {} read-only: {e}", path.display()))
}

/// The mount point for `dest` (absolute in the container) inside `rootfs`, created where
/// missing (a directory, or an empty file for a file bind) and resolved inside the rootfs by
/// [`crate::inroot`]; the descriptor is `O_PATH`, mounted on through [`fd_path`].
fn mount_point(root: BorrowedFd, dest: &Path, dir: bool) -> MountResult<OwnedFd> {
    let made = if dir {
        inroot::create_dirs_in_root(root, dest, 0o755)
    } else {
        inroot::create_file_in_root(root, dest, 0o644)
    };
    made.map_err(|e| format!("creating mount point {}: {e}", dest.display()))
}

/// `dest` inside `rootfs` again, after a mount: the descriptor now reaches the new mount.
fn mounted(root: BorrowedFd, dest: &Path) -> MountResult<OwnedFd> {
    inroot::open_in_root(root, dest, OFlag::O_PATH)
        .map_err(|e| format!("opening the new mount at {}: {e}", dest.display()))
}

fn open_rootfs(rootfs: &Path) -> MountResult<OwnedFd> {
    inroot::open_root(rootfs).map_err(|e| format!("opening the rootfs {}: {e}", rootfs.display()))
}

/// Applies one OCI mount below `rootfs`.
pub fn mount_entry(rootfs: &Path, m: &Mount) -> MountResult<()> {
    let root = open_rootfs(rootfs)?;
    let typ = m.typ().as_deref().unwrap_or("bind");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let meta = std::fs::metadata(&source)
            .map_err(|e| format!("bind source {}: {e}", source.display()))?;
        let point = mount_point(root.as_fd(), m.destination(), meta.is_dir())?;
        let dest = fd_path(point.as_fd());
        let rec = opts.flags & MsFlags::MS_REC;
        mount(
            Some(&source),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "bind-mounting {} on {}: {e}",
                source.display(),
                m.destination().display()
            )
        })?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let now = mounted(root.as_fd(), m.destination())?;
            remount_bind(&fd_path(now.as_fd()), extra)?;
        }
    } else {
        let point = mount_point(root.as_fd(), m.destination(), true)?;
        let dest = fd_path(point.as_fd());
        let data = opts.data.join(",");
        let res = mount(
            Some(&source),
            &dest,
            Some(typ),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match res {
            Ok(()) => {}
            // sysfs needs a network namespace of our own; without one, bind the host's read-only.
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| format!("binding /sys: {e}"))?;
                let now = mounted(root.as_fd(), m.destination())?;
                remount_bind(
                    &fd_path(now.as_fd()),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                )?;
            }
            Err(e) => {
                return Err(format!(
                    "mounting {typ} on {}: {e}",
                    m.destination().display()
                ))
            }
        }
    }
    if !opts.propagation.is_empty() {
        let now = mounted(root.as_fd(), m.destination())?;
        mount(
            None::<&str>,
            &fd_path(now.as_fd()),
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .map_err(|e| format!("setting propagation of {}: {e}", m.destination().display()))?;
    }
    Ok(())
}

/// Device nodes: rootless containers cannot mknod, so each node is bind-mounted from the host.
pub fn bind_devices(rootfs: &Path, devices: &[LinuxDevice]) -> MountResult<()> {
    let root = open_rootfs(rootfs)?;
    for d in devices {
        let host = d.path();
        match std::fs::metadata(host) {
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => {}
            _ => continue,
        }
        let point = mount_point(root.as_fd(), d.path(), false)?;
        mount(
            Some(host),
            &fd_path(point.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("binding device {}: {e}", host.display()))?;
    }
    Ok(())
}

/// The links every /dev has, made in the rootfs's /dev (resolved inside the rootfs: an image
/// whose /dev is a symlink gets them where the link points in its own tree).
pub fn dev_symlinks(rootfs: &Path) -> MountResult<()> {
    let root = open_rootfs(rootfs)?;
    let Ok(dev) = inroot::open_in_root(
        root.as_fd(),
        Path::new("/dev"),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
    ) else {
        return Ok(());
    };
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/ptmx", "pts/ptmx"),
        ("dev/core", "/proc/kcore"),
    ] {
        let name = link.trim_start_matches("dev/");
        let exists =
            nix::sys::stat::fstatat(Some(dev.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok();
        if !exists {
            nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name)
                .map_err(|e| format!("creating /{link}: {e}"))?;
        }
    }
    Ok(())
}

/// Makes `rootfs` the root: pivot_root to itself, then detach the old root.
pub fn pivot_into(rootfs: &Path) -> MountResult<()> {
    nix::unistd::chdir(rootfs).map_err(|e| format!("chdir {}: {e}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Hides paths (after pivot_root): directories get an empty read-only tmpfs, files /dev/null.
pub fn mask_paths(paths: &[String]) -> MountResult<()> {
    for p in paths {
        let path = Path::new(p);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let res = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0,mode=0555"),
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        res.map_err(|e| format!("masking {p}: {e}"))?;
    }
    Ok(())
}

/// Makes paths read-only (after pivot_root).
pub fn readonly_paths(paths: &[String]) -> MountResult<()> {
    for p in paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("binding {p} read-only: {e}"))?;
        remount_bind(
            path,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// Whether `p` is the root of a mount (its device differs from its parent's, or it is `/`).
pub fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (std::fs::metadata(p), std::fs::metadata(p.join(".."))) else {
        return false;
    };
    a.dev() != b.dev() || a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "mode=755".into(),
            "rslave".into(),
            "size=65536k".into(),
        ]);
        assert!(p.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(p.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(p.data, vec!["mode=755", "size=65536k"]);
        let rw = parse_options(&["ro".into(), "rw".into()]);
        assert!(!rw.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn secure_join_never_leaves_root() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../../../etc", root.join("usr/up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/escape/etc/passwd")),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/usr/up/shadow")),
            root.join("etc/shadow")
        );
        assert_eq!(
            secure_join(root, Path::new("/lib/x")),
            root.join("usr/lib/x")
        );
        assert_eq!(secure_join(root, Path::new("/../../x")), root.join("x"));
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop")).starts_with(root));
    }
}
