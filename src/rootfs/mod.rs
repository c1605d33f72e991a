//! Root filesystems: the store of unpacked layers (each layer unpacked once, shared by every
//! container) and the drivers that stack them with a writable layer:
//! kernel overlayfs mounted inside the user namespace (`userxattr`, Linux 5.11+),
//! fuse-overlayfs where the kernel refuses, and a plain copy as the last resort.

mod copy;
pub mod diff;
pub mod erofs;
mod layers;
pub mod merged;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{Mount, MountBuilder};

use crate::container::idmap::IdMapping;
use crate::container::userns::{run_in_userns, UsernsError};

pub use layers::LayerStore;

/// Errors preparing a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("unknown storage driver {0:?}: choose overlay, fuse-overlayfs or copy")]
    UnknownDriver(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unpacking layer {diff_id}: {message}")]
    Unpack { diff_id: String, message: String },
    #[error(
        "the overlay layer list is too long for one mount ({len} bytes); use --storage-driver copy"
    )]
    TooManyLayers { len: usize },
    #[error(transparent)]
    Userns(#[from] UsernsError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

/// Takes an exclusive flock on `path` (created if missing), held until the file is dropped:
/// concurrent berth processes then build a layer or a layer disk only once.
pub(crate) fn lock_exclusive(path: &Path) -> Result<std::fs::File, RootfsError> {
    use std::os::fd::AsRawFd;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("opening", path))?;
    // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(RootfsError::Io {
            what: "locking",
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(lock)
}

/// How a container's rootfs is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    FuseOverlayfs,
    Copy,
}

impl FromStr for Driver {
    type Err = RootfsError;
    fn from_str(s: &str) -> Result<Driver, RootfsError> {
        match s {
            "overlay" | "overlayfs" | "overlay2" => Ok(Driver::Overlay),
            "fuse-overlayfs" | "fuse" => Ok(Driver::FuseOverlayfs),
            "copy" | "vfs" => Ok(Driver::Copy),
            other => Err(RootfsError::UnknownDriver(other.to_string())),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Driver::Overlay => "overlay",
            Driver::FuseOverlayfs => "fuse-overlayfs",
            Driver::Copy => "copy",
        })
    }
}

/// What a container's spec needs to know about its rootfs.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    /// The spec's "/" entry (None when `root_path` is already a complete tree).
    pub root_mount: Option<Mount>,
    /// Where the rootfs appears (the spec's root.path).
    pub root_path: PathBuf,
    /// Directories holding the container's writable files (owned by mapped ids).
    pub writable: Vec<PathBuf>,
}

/// Whether fuse-overlayfs is installed and /dev/fuse can be opened.
pub fn fuse_available() -> bool {
    which("fuse-overlayfs").is_some()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok()
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Tries a kernel overlay mount in a user namespace with `ids` (what `run` will do).
pub fn probe_kernel_overlay(scratch: &Path, ids: &IdMapping) -> Result<(), String> {
    let base = scratch.join(format!("probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
    }
    let b = base.clone();
    let res = run_in_userns(ids, move || {
        let data = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            b.join("lower").display(),
            b.join("upper").display(),
            b.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &b.join("merged"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| format!("kernel overlay in a user namespace: {e}"))?;
        let _ = nix::mount::umount2(&b.join("merged"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&b);
        Ok(())
    })
    .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&base);
    res
}

/// Picks the fastest driver that works here; the answer is cached per kernel in `cache_file`.
pub fn detect(cache_file: &Path, scratch: &Path, ids: &IdMapping) -> Driver {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = format!("{kernel} {:?}", ids.mode);
    if let Ok(text) = std::fs::read_to_string(cache_file) {
        if let Some((k, d)) = text.trim().rsplit_once('=') {
            if k == key {
                if let Ok(d) = d.parse() {
                    return d;
                }
            }
        }
    }
    let driver = if probe_kernel_overlay(scratch, ids).is_ok() {
        Driver::Overlay
    } else if fuse_available() {
        Driver::FuseOverlayfs
    } else {
        Driver::Copy
    };
    let _ = std::fs::write(cache_file, format!("{key}={driver}\n"));
    driver
}

/// Prepares the rootfs of a new container in `dir` from `lowers` (bottom layer first).
pub fn prepare(
    driver: Driver,
    lowers: &[PathBuf],
    dir: &Path,
    ids: &IdMapping,
) -> Result<RootfsPlan, RootfsError> {
    let root_path = dir.join("rootfs");
    std::fs::create_dir_all(&root_path).map_err(io("creating", &root_path))?;
    match driver {
        Driver::Overlay | Driver::FuseOverlayfs => {
            let upper = dir.join("upper");
            let work = dir.join("work");
            for d in [&upper, &work] {
                std::fs::create_dir_all(d).map_err(io("creating", d))?;
            }
            // overlayfs wants the top layer first.
            let lower: Vec<String> = lowers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            let mut options = vec![
                format!("lowerdir={}", lower.join(":")),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ];
            let typ = if driver == Driver::Overlay {
                options.push("userxattr".into());
                "overlay"
            } else {
                "fuse-overlayfs"
            };
            let len: usize = options.iter().map(|o| o.len() + 1).sum();
            if len >= 4000 {
                return Err(RootfsError::TooManyLayers { len });
            }
            let m = MountBuilder::default()
                .destination("/")
                .typ(typ)
                .source(typ)
                .options(options)
                .build()
                .map_err(|e| RootfsError::Io {
                    what: "building the root mount for",
                    path: dir.into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            Ok(RootfsPlan {
                root_mount: Some(m),
                root_path,
                writable: vec![upper, work],
            })
        }
        Driver::Copy => {
            let target = root_path.clone();
            let lowers = lowers.to_vec();
            run_in_userns(ids, move || {
                copy::stack_layers(&lowers, &target).map_err(|e| e.to_string())
            })?;
            Ok(RootfsPlan {
                root_mount: None,
                root_path: root_path.clone(),
                writable: vec![root_path],
            })
        }
    }
}

/// Reads a file from the merged view of `lowers` (bottom first) without mounting it: the
/// topmost layer that has it wins, a whiteout hides it, and symlinks on the way (`/etc ->
/// ...`) resolve inside the image, never on the host. At most 4 MiB: /etc/passwd, /etc/group.
pub fn read_merged(lowers: &[PathBuf], rel: &str) -> Option<String> {
    let bytes = merged::read(lowers, Path::new(rel), 4 << 20).ok()??;
    String::from_utf8(bytes).ok()
}

/// Removes a tree whose files belong to mapped ids (a container's writable layer).
pub fn remove_owned_tree(paths: Vec<PathBuf>, ids: &IdMapping) -> Result<(), RootfsError> {
    let existing: Vec<PathBuf> = paths.into_iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        return Ok(());
    }
    run_in_userns(ids, move || {
        for p in &existing {
            std::fs::remove_dir_all(p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Fills the new volume directory `target` with what the image (`lowers`) has at `rel`, as
/// Docker does on a volume's first use; owners stay the image's (mapped) ids.
pub fn fill_from_layers(
    lowers: &[PathBuf],
    rel: &Path,
    target: &Path,
    ids: &IdMapping,
) -> Result<(), RootfsError> {
    // Where the container will see the volume: the image's symlinks on the way followed
    // inside the image, as the mount itself is. Answered here when the user can read the
    // layers on the way (no user namespace to start when the image has nothing there); an
    // image directory only its root may enter is read inside the user namespace.
    if let Ok(rel) = merged::resolve(lowers, rel) {
        let present = lowers.iter().any(|l| {
            matches!(
                merged::in_layer(l, &rel),
                Ok(merged::LayerHit::Entry { .. })
            )
        });
        if !present {
            return Ok(());
        }
    }
    let (lowers, rel, target) = (lowers.to_vec(), rel.to_path_buf(), target.to_path_buf());
    run_in_userns(ids, move || {
        let inside = merged::resolve(&lowers, &rel)
            .map_err(|e| format!("resolving {} in the image: {e}", rel.display()))?;
        copy::stack_path(&lowers, &inside, &target)
            .map_err(|e| format!("copying the image's {} into the volume: {e}", rel.display()))
    })?;
    Ok(())
}

/// Writes a container's changes as an uncompressed layer tar to `out` (created by the user):
/// from the overlay upper directory (`writable[0]` of the overlay drivers) or, for the copy
/// driver, the difference between its tree and `lowers`. Reads inside the user namespace.
pub fn write_diff(
    driver: &str,
    writable: &[PathBuf],
    lowers: &[PathBuf],
    out: &Path,
    ids: &IdMapping,
) -> Result<(), RootfsError> {
    let driver: Driver = driver.parse()?;
    let source = writable.first().cloned().ok_or_else(|| RootfsError::Io {
        what: "finding the writable layer of",
        path: out.to_path_buf(),
        source: std::io::Error::other("the container has none recorded"),
    })?;
    let file = std::fs::File::create(out).map_err(io("creating", out))?;
    let lowers = lowers.to_vec();
    run_in_userns(ids, move || {
        let w = std::io::BufWriter::with_capacity(1 << 20, file);
        match driver {
            Driver::Overlay | Driver::FuseOverlayfs => diff::upper_layer(&source, &[], w),
            Driver::Copy => diff::full_layer(&source, &lowers, w),
        }
        .map_err(|e| {
            format!(
                "reading the container's changes in {}: {e}",
                source.display()
            )
        })
    })?;
    Ok(())
}
