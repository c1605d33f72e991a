//! Resolving a path taken from an image, a guest or a client inside its root, never on the
//! host: the one helper every such lookup goes through (`openat2` with `RESOLVE_IN_ROOT`, so an
//! absolute symlink means the root and `..` stops at it, and no magic link is followed), plus
//! the strict form for a tree that must hold no symlink at all on the way (`RESOLVE_BENEATH`
//! with `RESOLVE_NO_SYMLINKS`: one layer of an image, walked as part of a merged view).
//!
//! The kernel resolves the whole path in one call, so nothing can swap a component between a
//! check and a use. The result is a descriptor; [`fd_path`] names it for APIs that take a path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// How a path is resolved below its starting directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Symlinks are followed as if the directory were `/` (an absolute link means the
    /// directory, `..` stops at it); magic links (`/proc/self/fd/N`) are refused.
    InRoot,
    /// No symlink anywhere on the way, the last component included (opened with `O_PATH |
    /// O_NOFOLLOW`, a trailing symlink is returned as itself), nothing outside the directory.
    NoSymlinks,
}

impl Resolve {
    fn flags(self) -> ResolveFlag {
        match self {
            Resolve::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            Resolve::NoSymlinks => {
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
            }
        }
    }
}

/// Opens a directory to resolve paths in (`O_PATH`, so it works on any directory we can reach).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path relative to its root: leading `/` and `.` dropped (`..` is kept for the kernel to
/// stop at the root); `.` for the root itself.
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Opens `path` (absolute or relative, either way inside `dir`) with `flags` and `mode`,
/// resolved as `how` says. `O_CLOEXEC` is always added.
pub fn open_at(
    dir: BorrowedFd,
    path: &Path,
    how: Resolve,
    flags: OFlag,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let open_how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(how.flags());
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir.as_raw_fd(), &rel, open_how) {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            // The kernel asks for a retry when a rename raced a `..` in the resolution; a
            // tree renamed without end does not keep us here.
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) if tries < RETRIES => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Resolutions retried after the kernel saw a concurrent rename.
const RETRIES: u32 = 64;

/// Opens `path` inside `root` (symlinks resolved as if `root` were `/`) with `flags`.
pub fn open_in_root(root: BorrowedFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    open_at(root, path, Resolve::InRoot, flags, Mode::empty())
}

/// The path naming an open descriptor, for APIs that take paths (`mount`, `getxattr`,
/// re-opening an `O_PATH` descriptor to read it).
pub fn fd_path(fd: BorrowedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates the directory `path` inside `root` and every missing parent, one component at a
/// time from a held directory descriptor, never following a symlink on the host: a symlink on
/// the way (dangling or not) is read and its target walked inside `root`, as `mkdir -p` in a
/// chroot would. Returns the directory opened `O_PATH`.
pub fn create_dirs_in_root(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    walk_creating(root, path, mode).map(|(fd, _)| fd)
}

/// [`create_dirs_in_root`], also returning the directory's symlink-free path inside `root`.
fn walk_creating(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<(OwnedFd, PathBuf)> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, &relative(path));
    let mut resolved = PathBuf::new();
    let mut dir = open_in_root(root, Path::new("."), dir_flags)?;
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            dir = open_in_root(root, &resolved, dir_flags)?;
            continue;
        }
        let step = open_at(
            dir.as_fd(),
            Path::new(&name),
            Resolve::NoSymlinks,
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        );
        match step {
            Ok(fd) => {
                let kind = std::fs::File::from(fd.try_clone()?).metadata()?.file_type();
                if kind.is_dir() {
                    dir = fd;
                    resolved.push(&name);
                } else if kind.is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), Path::new(&name))?;
                    if Path::new(&target).is_absolute() {
                        resolved.clear();
                        dir = open_in_root(root, Path::new("."), dir_flags)?;
                    }
                    push_components(&mut pending, Path::new(&target));
                } else {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    Some(dir.as_raw_fd()),
                    Path::new(&name),
                    Mode::from_bits_truncate(mode),
                ) {
                    // Made here, or by someone else meanwhile: look again.
                    Ok(()) | Err(nix::Error::EEXIST) => pending.push(name),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((dir, resolved))
}

/// Resolves `path` inside `root` as the kernel would with `root` as `/`, without opening or
/// creating anything at the end: the answer is relative, symlink-free and without `..`; names
/// that do not exist (yet) are taken as written. Each step looks at one name below the
/// symlink-free part resolved so far, following nothing on the host.
pub fn resolve_in_root(root: BorrowedFd, path: &Path) -> io::Result<PathBuf> {
    resolve_with(&relative(path), |candidate| {
        let nofollow = OFlag::O_PATH | OFlag::O_NOFOLLOW;
        match open_at(
            root,
            candidate,
            Resolve::NoSymlinks,
            nofollow,
            Mode::empty(),
        ) {
            Ok(fd) => {
                if !std::fs::File::from(fd.try_clone()?)
                    .metadata()?
                    .is_symlink()
                {
                    return Ok(None);
                }
                // readlinkat with an empty name reads the link the O_PATH descriptor holds.
                Ok(Some(nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "")?))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// The walk of [`resolve_in_root`] and of the layers' merged view (`rootfs::merged`): names of
/// `path` one at a time, `..` stopping at the root, and for each symlink-free candidate so far
/// `link_of` says whether it is a symlink (its target) or not (or absent); an absolute target
/// starts again at the root. At most [`MAX_LINKS`] links.
pub(crate) fn resolve_with(
    path: &Path,
    mut link_of: impl FnMut(&Path) -> io::Result<Option<std::ffi::OsString>>,
) -> io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let Some(target) = link_of(&candidate)? else {
            resolved = candidate;
            continue;
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        if Path::new(&target).is_absolute() {
            resolved.clear();
        }
        push_components(&mut pending, Path::new(&target));
    }
    Ok(resolved)
}

/// Pushes `path`'s names (and `..`) so that popping yields them in order.
pub(crate) fn push_components(pending: &mut Vec<std::ffi::OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push("..".into()),
            _ => {}
        }
    }
}

/// Opens the file at `path` inside `root`, creating an empty one (and its parents) where there
/// is none; returns it opened `O_PATH`. A symlink there, dangling or not, is resolved inside
/// `root` (the file is made where the link points in the root, never on the host).
pub fn create_file_in_root(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let mut rel = relative(path);
    for _ in 0..MAX_LINKS {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?
            .to_os_string();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let (dir, resolved) = walk_creating(root, &parent, 0o755)?;
        let name = Path::new(&name);
        let nofollow = OFlag::O_PATH | OFlag::O_NOFOLLOW;
        match open_at(
            dir.as_fd(),
            name,
            Resolve::NoSymlinks,
            nofollow,
            Mode::empty(),
        ) {
            Ok(fd) => {
                if !std::fs::File::from(fd.try_clone()?)
                    .metadata()?
                    .is_symlink()
                {
                    return Ok(fd);
                }
                let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)?;
                let target = Path::new(&target);
                rel = if target.is_absolute() {
                    relative(target)
                } else {
                    relative(&resolved.join(target))
                };
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // O_EXCL with O_NOFOLLOW: a name that appeared meanwhile is never followed.
                let created = open_at(
                    dir.as_fd(),
                    name,
                    Resolve::NoSymlinks,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY,
                    Mode::from_bits_truncate(mode),
                );
                match created {
                    Ok(_) => {
                        return open_at(
                            dir.as_fd(),
                            name,
                            Resolve::NoSymlinks,
                            nofollow,
                            Mode::empty(),
                        )
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// Symlinks followed in one resolution before giving up, as the kernel's limit.
pub const MAX_LINKS: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// Reads the regular file at `path` inside `root`, at most `limit` bytes.
    fn read_in_root(root: &Path, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let dir = open_root(root)?;
        let fd = open_in_root(dir.as_fd(), path, OFlag::O_RDONLY | OFlag::O_NOCTTY)?;
        let file = std::fs::File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let mut out = Vec::new();
        file.take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    fn tree() -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!(
            "berth-inroot-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        std::fs::write(root.join("etc/secret"), "image").unwrap();
        (base, root)
    }

    #[test]
    fn absolute_and_climbing_symlinks_stay_in_the_root() {
        let (base, root) = tree();
        symlink(base.join("outside"), root.join("abs")).unwrap();
        symlink("../../../../../../../..", root.join("up")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        // From the host these lead out; inside the root they mean the root.
        assert!(read_in_root(&root, Path::new("/abs/secret"), 64).is_err());
        let outside_rel = base.join("outside/secret");
        let via_up = Path::new("/up").join(outside_rel.strip_prefix("/").unwrap());
        assert!(read_in_root(&root, &via_up, 64).is_err());
        assert_eq!(
            read_in_root(&root, Path::new("/etc-link/secret"), 64).unwrap(),
            b"image"
        );
        assert_eq!(
            read_in_root(&root, Path::new("/up/etc/secret"), 64).unwrap(),
            b"image"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn magic_links_and_non_files_are_refused() {
        let (base, root) = tree();
        symlink("/proc/self/root/etc/hostname", root.join("magic")).unwrap();
        assert!(read_in_root(&root, Path::new("/magic"), 64).is_err());
        assert!(read_in_root(&root, Path::new("/etc"), 64).is_err());
        assert_eq!(
            read_in_root(&root, Path::new("etc/secret"), 2).unwrap(),
            b"im"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn no_symlinks_refuses_any_link_on_the_way_but_opens_a_trailing_one_as_itself() {
        let (base, root) = tree();
        symlink("etc", root.join("rel")).unwrap();
        let dir = open_root(&root).unwrap();
        let err = open_at(
            dir.as_fd(),
            Path::new("rel/secret"),
            Resolve::NoSymlinks,
            OFlag::O_PATH,
            Mode::empty(),
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let link = open_at(
            dir.as_fd(),
            Path::new("rel"),
            Resolve::NoSymlinks,
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
        let meta = std::fs::File::from(link).metadata().unwrap();
        assert!(meta.file_type().is_symlink());
        assert!(open_at(
            dir.as_fd(),
            Path::new("../outside/secret"),
            Resolve::NoSymlinks,
            OFlag::O_PATH,
            Mode::empty()
        )
        .is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn resolving_names_the_path_inside_the_root_without_making_it() {
        let (base, root) = tree();
        symlink(base.join("outside"), root.join("abs")).unwrap();
        symlink("../../../..", root.join("etc/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let dir = open_root(&root).unwrap();
        let host = base.join("outside/x");
        assert_eq!(
            resolve_in_root(dir.as_fd(), Path::new("/abs/x")).unwrap(),
            host.strip_prefix("/").unwrap()
        );
        assert_eq!(
            resolve_in_root(dir.as_fd(), Path::new("etc/up/etc/missing/../secret")).unwrap(),
            Path::new("etc/secret")
        );
        assert_eq!(
            resolve_in_root(dir.as_fd(), Path::new("/loop"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ELOOP)
        );
        assert_eq!(
            resolve_in_root(dir.as_fd(), Path::new("etc/secret/x"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert!(!base.join("outside/x").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn creating_follows_links_inside_the_root_only() {
        let (base, root) = tree();
        symlink(base.join("outside"), root.join("abs")).unwrap();
        let dir = open_root(&root).unwrap();
        create_dirs_in_root(dir.as_fd(), Path::new("/abs/made/deep"), 0o755).unwrap();
        assert!(root.join("abs").is_symlink(), "the link is left as it is");
        assert!(
            base.join("root")
                .join(base.join("outside/made/deep").strip_prefix("/").unwrap())
                .is_dir(),
            "created under the root, where the link points inside it"
        );
        assert!(
            !base.join("outside/made").exists(),
            "nothing made on the host"
        );
        create_file_in_root(dir.as_fd(), Path::new("/abs/file"), 0o644).unwrap();
        assert!(!base.join("outside/file").exists());
        // A dangling link to a host path is made inside the root, never on the host.
        symlink(base.join("outside/new"), root.join("dangling")).unwrap();
        create_file_in_root(dir.as_fd(), Path::new("/dangling"), 0o644).unwrap();
        assert!(!base.join("outside/new").exists());
        let inside = root.join(base.join("outside/new").strip_prefix("/").unwrap());
        assert!(inside.is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
