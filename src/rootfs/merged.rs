//! The merged view of an image's unpacked layers (bottom first), read without mounting it:
//! a path is resolved one component at a time through the stack — the topmost layer that has a
//! name wins, whiteouts and opaque directories hide what is below — and a symlink met on the
//! way is read and followed *inside the image* (an absolute target means the image's root),
//! never on the host. Inside one layer nothing is followed at all ([`Resolve::NoSymlinks`]).

use std::fs::Metadata;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::image::{is_whiteout, OPAQUE_XATTR};
use crate::inroot::{fd_path, open_at, open_root, Resolve};

/// What one layer has at a path.
pub(crate) enum LayerHit {
    /// The layer has an entry there (a whiteout included), opened `O_PATH | O_NOFOLLOW`;
    /// `opaque_above` as for [`LayerHit::Absent`].
    Entry {
        fd: OwnedFd,
        meta: Metadata,
        opaque_above: bool,
    },
    /// Nothing there; `opaque_above` when an opaque directory of this layer on the way hides
    /// what lower layers have.
    Absent { opaque_above: bool },
    /// A non-directory (file, symlink, whiteout) of this layer on the way replaces the lower
    /// layers' directories: nothing below shows through.
    Hidden,
}

/// Looks at `rel` (symlink-free in the merged view) in one layer, following nothing.
pub(crate) fn in_layer(layer: &Path, rel: &Path) -> io::Result<LayerHit> {
    let mut dir = open_root(layer)?;
    let mut opaque_above = false;
    let mut names = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .peekable();
    while let Some(name) = names.next() {
        let last = names.peek().is_none();
        let fd = match open_at(
            dir.as_fd(),
            Path::new(name),
            Resolve::NoSymlinks,
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(LayerHit::Absent { opaque_above })
            }
            Err(e) => return Err(e),
        };
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        if last {
            return Ok(LayerHit::Entry {
                fd,
                meta,
                opaque_above,
            });
        }
        if !meta.is_dir() {
            return Ok(LayerHit::Hidden);
        }
        opaque_above |= is_opaque(&fd);
        dir = fd;
    }
    // The root of the layer itself.
    let meta = std::fs::File::from(dir.try_clone()?).metadata()?;
    Ok(LayerHit::Entry {
        fd: dir,
        meta,
        opaque_above: false,
    })
}

/// Whether the directory open at `fd` is marked opaque.
pub(crate) fn is_opaque(fd: &OwnedFd) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(fd_path(fd.as_fd()).as_os_str().as_bytes()) else {
        return false;
    };
    let name = std::ffi::CString::new(OPAQUE_XATTR).expect("constant has no NUL");
    let mut buf = [0u8; 4];
    // SAFETY: getxattr writes at most buf.len() bytes into buf; both strings are NUL-terminated.
    // It follows /proc/self/fd/N to the directory that descriptor holds, nothing else.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// The topmost entry at `rel` (symlink-free) in the merged view, or None where the merged view has nothing (a whiteout or an opaque directory hides it).
pub(crate) fn lookup(lowers: &[PathBuf], rel: &Path) -> io::Result<Option<(OwnedFd, Metadata)>> {
    for layer in lowers.iter().rev() {
        match in_layer(layer, rel)? {
            LayerHit::Entry { meta, .. } if is_whiteout(&meta) => return Ok(None),
            LayerHit::Entry { fd, meta, .. } => return Ok(Some((fd, meta))),
            LayerHit::Absent { opaque_above: true } | LayerHit::Hidden => return Ok(None),
            LayerHit::Absent {
                opaque_above: false,
            } => {}
        }
    }
    Ok(None)
}

/// Resolves `path` (inside the image) through the merged view of `lowers`: symlinks are
/// followed as the container would see them, inside the image's root. The answer has no
/// symlink and no `..`; its tail may not exist.
pub fn resolve(lowers: &[PathBuf], path: &Path) -> io::Result<PathBuf> {
    crate::inroot::resolve_with(path, |candidate| match lookup(lowers, candidate)? {
        // readlinkat with an empty name reads the link the O_PATH descriptor holds.
        Some((fd, m)) if m.is_symlink() => Ok(Some(nix::fcntl::readlinkat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&fd)),
            "",
        )?)),
        _ => Ok(None),
    })
}

/// Reads the regular file at `path` in the merged view (at most `limit` bytes); None where the
/// image has none there.
pub fn read(lowers: &[PathBuf], path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let rel = resolve(lowers, path)?;
    let Some((fd, meta)) = lookup(lowers, &rel)? else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    // Re-opening the O_PATH descriptor reads exactly the file found, whatever its name now.
    let file = std::fs::File::open(fd_path(fd.as_fd()))?;
    let mut out = Vec::new();
    file.take(limit).read_to_end(&mut out)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree(PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn layers(name: &str) -> (Tree, PathBuf, Vec<PathBuf>) {
        let base = std::env::temp_dir().join(format!("berth-merged-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let lowers: Vec<PathBuf> = (0..2).map(|i| base.join(format!("l{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir_all(l).unwrap();
        }
        let host = base.join("host");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::write(host.join("etc/passwd"), "host").unwrap();
        (Tree(base), host, lowers)
    }

    #[test]
    fn symlinks_resolve_inside_the_image_across_layers() {
        let (_t, host, l) = layers("links");
        // Layer 0: /etc -> the host's directory by its host path; /real/etc/passwd.
        symlink(host.join("etc"), l[0].join("etc")).unwrap();
        let inside = l[0].join(host.join("etc").strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("passwd"), "image").unwrap();
        assert_eq!(
            read(&l, Path::new("/etc/passwd"), 64).unwrap().unwrap(),
            b"image"
        );
        // Layer 1: /up -> ../../../../.. climbs no higher than the image's root.
        symlink("../../../../../../../..", l[1].join("up")).unwrap();
        let via = Path::new("/up").join(host.join("etc/passwd").strip_prefix("/").unwrap());
        assert_eq!(read(&l, &via, 64).unwrap().unwrap(), b"image");
        assert_eq!(
            resolve(&l, Path::new("/up/x/../y")).unwrap(),
            Path::new("y")
        );
    }

    #[test]
    fn files_and_directories_above_hide_lower_layers() {
        let (_t, _host, l) = layers("hide");
        std::fs::create_dir_all(l[0].join("a")).unwrap();
        std::fs::write(l[0].join("a/f"), "low").unwrap();
        std::fs::write(l[0].join("b"), "low").unwrap();
        assert_eq!(read(&l, Path::new("a/f"), 64).unwrap().unwrap(), b"low");
        // A symlink in a lower layer shadowed by a directory above is not followed.
        symlink("/a", l[0].join("c")).unwrap();
        std::fs::create_dir_all(l[1].join("c")).unwrap();
        assert_eq!(resolve(&l, Path::new("c/f")).unwrap(), Path::new("c/f"));
        assert_eq!(read(&l, Path::new("c/f"), 64).unwrap(), None);
        // A file above a lower directory hides it.
        std::fs::write(l[1].join("a"), "file").unwrap();
        assert_eq!(read(&l, Path::new("a/f"), 64).unwrap(), None);
        assert_eq!(read(&l, Path::new("a"), 64).unwrap().unwrap(), b"file");
    }
}
