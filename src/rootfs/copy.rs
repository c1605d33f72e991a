//! The copy driver: stacks layers into one plain directory, applying whiteouts and opaque
//! directories. Slow and disk-hungry; used only where neither overlay works.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::image::{is_whiteout, OPAQUE_XATTR};

/// Copies `lowers` (bottom first) into `target`. Runs inside the user namespace.
pub fn stack_layers(lowers: &[std::path::PathBuf], target: &Path) -> std::io::Result<()> {
    for layer in lowers {
        copy_dir(layer, target)?;
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> bool {
    xattr_get(dir, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: lgetxattr writes at most buf.len() bytes into buf; strings are NUL-terminated.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    }
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            match std::fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() => {
                    if is_opaque(&from) {
                        remove_any(&to)?;
                        std::fs::create_dir(&to)?;
                    }
                }
                Ok(_) => {
                    remove_any(&to)?;
                    std::fs::create_dir(&to)?;
                }
                Err(_) => std::fs::create_dir(&to)?,
            }
            copy_dir(&from, &to)?;
        } else {
            remove_any(&to)?;
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else if ft.is_file() {
                std::fs::copy(&from, &to)?;
            } else {
                // fifos and device nodes: recreate; skip what cannot be made rootless.
                let kind = meta.mode() & libc::S_IFMT;
                let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
                let sflag = nix::sys::stat::SFlag::from_bits_truncate(kind);
                if nix::sys::stat::mknod(&to, sflag, mode, meta.rdev()).is_err() {
                    continue;
                }
            }
        }
        let _ = nix::unistd::fchownat(
            None,
            &to,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if !ft.is_symlink() {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Copies what the image (`lowers`, bottom first) has at `rel` into the existing directory
/// `target`, with whiteouts and opaque directories applied, and gives `target` the owner and
/// mode of the image's directory there. `rel` comes from [`super::merged::resolve`]: inside
/// each layer nothing on the way is followed, so a layer's symlink never leads to the host.
/// Runs inside the user namespace.
pub fn stack_path(lowers: &[std::path::PathBuf], rel: &Path, target: &Path) -> std::io::Result<()> {
    use super::merged::{in_layer, is_opaque, LayerHit};
    use std::os::fd::AsFd;
    let mut top: Option<std::fs::Metadata> = None;
    for layer in lowers {
        match in_layer(layer, rel)? {
            LayerHit::Entry {
                fd,
                meta,
                opaque_above,
            } if meta.is_dir() => {
                if opaque_above || is_opaque(&fd) {
                    clear_dir(target)?;
                }
                // The directory the descriptor holds, whatever the names on the way are now.
                copy_dir(&crate::inroot::fd_path(fd.as_fd()), target)?;
                top = Some(meta);
            }
            // A whiteout, or a file where the volume goes, or a non-directory on the way:
            // what was below is gone.
            LayerHit::Entry { .. } | LayerHit::Hidden | LayerHit::Absent { opaque_above: true } => {
                clear_dir(target)?;
                top = None;
            }
            LayerHit::Absent {
                opaque_above: false,
            } => {}
        }
    }
    if let Some(m) = top {
        let _ = nix::unistd::chown(
            target,
            Some(nix::unistd::Uid::from_raw(m.uid())),
            Some(nix::unistd::Gid::from_raw(m.gid())),
        );
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    Ok(())
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}
