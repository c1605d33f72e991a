//! Read-only layer disks for microVMs: each unpacked layer becomes an erofs image, made by
//! `mkfs.erofs` inside the user namespace so every file keeps its container owner, its
//! mode, berth's whiteouts (char 0:0) and `user.overlay.opaque`. The guest agent stacks the
//! disks with overlayfs (`userxattr`). Images are cached per layer diff id.
//!
//! A microVM sandbox that outlives its run (any but `--rm`) also gets a writable disk of its
//! own for the overlay's upper directory ([`writable_disk`]), so what it writes is still there
//! after `stop` and `start`, as a container's writable layer is.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::container::idmap::IdMapping;
use crate::container::userns::run_in_userns;

use super::RootfsError;

/// Makes sure every layer in `layer_dirs` (bottom first, named by diff id) has an erofs
/// image in `cache`; returns the image paths in the same order.
pub fn layer_disks(
    layer_dirs: &[PathBuf],
    cache: &Path,
    ids: &IdMapping,
) -> Result<Vec<PathBuf>, RootfsError> {
    std::fs::create_dir_all(cache).map_err(super::io("creating", cache))?;
    let mut out = Vec::with_capacity(layer_dirs.len());
    for dir in layer_dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "layer".into());
        let image = cache.join(format!("{name}.erofs"));
        if !image.exists() {
            build_locked(dir, &image, ids)?;
        }
        out.push(image);
    }
    Ok(out)
}

fn build_locked(dir: &Path, image: &Path, ids: &IdMapping) -> Result<(), RootfsError> {
    let _lock = super::lock_exclusive(&image.with_extension("lock"))?;
    if image.exists() {
        return Ok(());
    }
    let tmp = image.with_extension(format!("tmp{}", std::process::id()));
    let (src, dst) = (dir.to_path_buf(), tmp.clone());
    let made = run_in_userns(ids, move || {
        // -T0: reproducible images; -x1: keep xattrs, tolerate unreadable ones.
        let out = Command::new("mkfs.erofs")
            .args(["--quiet", "-T0", "-x1"])
            .arg(&dst)
            .arg(&src)
            .output()
            .map_err(|e| {
                format!("running mkfs.erofs: {e}; install it with `apt-get install erofs-utils`")
            })?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.erofs failed for {}: {}",
                src.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(RootfsError::Unpack {
            diff_id: dir.display().to_string(),
            message: e.to_string(),
        });
    }
    std::fs::rename(&tmp, image).map_err(super::io("moving into place", image))
}

/// The size a microVM's writable disk offers the guest. The file is sparse: it holds what
/// the guest writes (and ~4 MiB of ext4 metadata), not this.
pub const WRITABLE_DISK_BYTES: u64 = 16 << 30;

/// Makes `path` an empty ext4 file system of [`WRITABLE_DISK_BYTES`] for a microVM's writable
/// layer. Lazy initialisation and no discard: the new sparse file reads as zeros, so there
/// is nothing to write but the metadata (~10 ms).
pub fn writable_disk(path: &Path) -> Result<(), RootfsError> {
    let tmp = path.with_extension("tmp");
    let made = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        f.set_len(WRITABLE_DISK_BYTES).map_err(|e| e.to_string())?;
        drop(f);
        let out = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                format!("running mkfs.ext4: {e}; install it with `apt-get install e2fsprogs`")
            })?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(RootfsError::Io {
            what: "making the microVM's writable disk",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        });
    }
    std::fs::rename(&tmp, path).map_err(super::io("moving into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn layer_disk_keeps_owners_whiteouts_and_opaque_dirs() {
        if nix::unistd::geteuid().as_raw() != 0 || crate::rootfs::which("mkfs.erofs").is_none() {
            crate::testing::skip("needs root (to create a whiteout and chown) and mkfs.erofs");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer0");
        std::fs::create_dir_all(layer.join("dir")).unwrap();
        std::fs::write(layer.join("owned"), b"x").unwrap();
        nix::unistd::chown(&layer.join("owned"), Some(1000.into()), Some(50.into())).unwrap();
        nix::sys::stat::mknod(
            &layer.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let c = std::ffi::CString::new(layer.join("dir").to_str().unwrap()).unwrap();
        // SAFETY: setxattr reads the NUL-terminated strings and one value byte we pass.
        let rc = unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0);
        let ids = IdMapping::for_current_user();
        let cache = tmp.path().join("cache");
        let disks = layer_disks(std::slice::from_ref(&layer), &cache, &ids).unwrap();
        assert_eq!(disks, vec![cache.join("layer0.erofs")]);
        let first = std::fs::metadata(&disks[0]).unwrap().mtime_nsec();
        // Cached: a second call reuses the image.
        layer_disks(std::slice::from_ref(&layer), &cache, &ids).unwrap();
        assert_eq!(std::fs::metadata(&disks[0]).unwrap().mtime_nsec(), first);

        let out = tmp.path().join("extracted");
        let st = Command::new("fsck.erofs")
            .arg(format!("--extract={}", out.display()))
            .arg(&disks[0])
            .status()
            .unwrap();
        assert!(st.success());
        let owned = std::fs::metadata(out.join("owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1000, 50));
        let gone = std::fs::symlink_metadata(out.join("gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        // The opaque marker survives: mount the image (erofs is in this kernel) and read it.
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(&disks[0])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting the erofs image");
        let dir = std::ffi::CString::new(mnt.join("dir").to_str().unwrap()).unwrap();
        let mut val = [0u8; 4];
        // SAFETY: getxattr writes at most val.len() bytes into val.
        let n = unsafe {
            libc::getxattr(
                dir.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        let _ = Command::new("umount").arg(&mnt).status();
        assert_eq!((n, val[0]), (1, b'y'), "user.overlay.opaque kept on /dir");
    }
}
