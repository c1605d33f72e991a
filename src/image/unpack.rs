//! Applies one image layer (a tar stream) to an empty directory, safely.
//!
//! Runs inside the container's user namespace as (mapped) root. The layer is
//! hostile: every path is resolved inside `dest` the way
//! `filepath-securejoin` does (symlinks in parent components are followed
//! with `dest` as the root, so nothing lands outside), links are created but
//! never followed, and the uncompressed stream must hash to the layer's
//! diff_id. OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0:0
//! character device, `.wh..wh..opq` the `user.overlay.opaque` xattr.
//!
//! `tar::Archive::unpack` is not used on purpose: it follows symlinks on the host.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use thiserror::Error;

use super::compression::Compression;
use super::store::{HashingReader, LayerRef};

/// The xattr that marks a directory opaque for overlayfs mounted with `userxattr`.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The same mark for overlayfs mounted by real root; set when permitted.
const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

/// What applying a layer could not do.
#[derive(Debug, Error)]
pub enum UnpackError {
    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What berth was doing.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The layer is not a readable (compressed) tar stream.
    #[error("layer {} is not a readable tar stream: the blob is corrupt, load the image again", path.display())]
    Read {
        /// The layer blob.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry tries to escape the root or is otherwise unsafe.
    #[error("refusing layer entry \"{entry}\": {reason}; the layer is damaged or hostile, do not use this image")]
    Hostile {
        /// The entry's path in the layer.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The uncompressed stream does not hash to the layer's diff_id.
    #[error("layer {} should have diff_id {expected} but its content hashes to {actual}: the layer is corrupt, load the image again", path.display())]
    DiffIdMismatch {
        /// The layer blob.
        path: PathBuf,
        /// The diff_id from the image config.
        expected: String,
        /// The hash of the content.
        actual: String,
    },
    /// The kernel refused an overlay whiteout device.
    #[error("could not create the overlay whiteout {}: berth needs Linux 5.8 or newer to create whiteouts without privileges, or use the fuse-overlayfs driver", path.display())]
    Whiteout {
        /// The whiteout's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The disk (or the user's quota) holding the layer store is full.
    #[error("no space left on the file system holding {}: free space there, or move berth's store to a larger disk (set BERTH_ROOT or XDG_DATA_HOME)", dir.display())]
    NoSpace {
        /// Where the layer was being unpacked.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file system refused the opaque-directory xattr.
    #[error("could not mark {} opaque: its file system does not support `user.` extended attributes; put berth's data directory on ext4, xfs, btrfs or tmpfs (Linux 6.6+)", path.display())]
    Opaque {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |source| UnpackError::Io {
        action,
        path,
        source,
    }
}

/// What an applied layer contained and what could not be reproduced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
    /// Warnings: device nodes not creatable rootless, ownership not kept, ...
    pub skipped: Vec<String>,
}

/// True for an overlayfs whiteout: a character device with device number 0:0.
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Applies `layer` to `dest` (an existing, empty directory) and checks its diff_id.
/// On error the content of `dest` is undefined and must be discarded; nothing
/// outside `dest` is ever written.
pub fn unpack_layer(layer: &LayerRef, dest: &Path) -> Result<UnpackReport, UnpackError> {
    unpack_into(layer, dest).map_err(|e| e.or_no_space(dest))
}

impl UnpackError {
    /// A full disk is reported as one, whichever step met it (a write fails with ENOSPC, but a
    /// decompressing copy would otherwise call it an unreadable blob).
    fn or_no_space(self, dest: &Path) -> UnpackError {
        let full = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        match self {
            UnpackError::Io { source, .. }
            | UnpackError::Read { source, .. }
            | UnpackError::Whiteout { source, .. }
            | UnpackError::Opaque { source, .. }
                if full(&source) =>
            {
                UnpackError::NoSpace {
                    dir: dest.to_path_buf(),
                    source,
                }
            }
            other => other,
        }
    }
}

fn unpack_into(layer: &LayerRef, dest: &Path) -> Result<UnpackReport, UnpackError> {
    let blob = &layer.blob_path;
    let read_err = |source| UnpackError::Read {
        path: blob.clone(),
        source,
    };
    let file = File::open(blob).map_err(io_err("open layer", blob))?;
    let mut buffered = BufReader::with_capacity(256 << 10, file);
    let compression = Compression::sniff(&mut buffered).map_err(read_err)?;
    let decoder = compression.decoder(buffered).map_err(read_err)?;
    let mut archive = tar::Archive::new(HashingReader::new(decoder));
    let mut unpacker = Unpacker {
        root: crate::inroot::open_root(dest).map_err(io_err("open", dest))?,
        dest: dest.to_path_buf(),
        report: UnpackReport::default(),
        dirs: BTreeMap::new(),
        ownership_warned: false,
    };
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        unpacker.apply(entry)?;
        unpacker.report.entries += 1;
    }
    // The hash covers the whole stream, end-of-archive padding included.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    let actual = rest.digest();
    if actual != layer.diff_id {
        return Err(UnpackError::DiffIdMismatch {
            path: blob.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    unpacker.finish_dirs()?;
    Ok(unpacker.report)
}

/// Ownership, permissions, times and xattrs of one entry.
struct EntryMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    fn read<R: Read>(entry: &mut tar::Entry<R>, shown: &str) -> Result<EntryMeta, UnpackError> {
        let bad = |what: &str| UnpackError::Hostile {
            entry: shown.to_string(),
            reason: format!("its header has an invalid {what}"),
        };
        let header = entry.header();
        let mut meta = EntryMeta {
            mode: header.mode().map_err(|_| bad("mode"))? & 0o7777,
            uid: header.uid().map_err(|_| bad("uid"))?,
            gid: header.gid().map_err(|_| bad("gid"))?,
            mtime: TimeSpec::new(
                i64::try_from(header.mtime().map_err(|_| bad("mtime"))?).unwrap_or(i64::MAX),
                0,
            ),
            xattrs: Vec::new(),
        };
        let Some(pax) = entry.pax_extensions().map_err(|_| bad("PAX header"))? else {
            return Ok(meta);
        };
        for ext in pax {
            let ext = ext.map_err(|_| bad("PAX header"))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).ok();
            match key {
                "uid" => {
                    meta.uid = text
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("PAX uid"))?
                }
                "gid" => {
                    meta.gid = text
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("PAX gid"))?
                }
                "mtime" => {
                    meta.mtime = text
                        .and_then(parse_pax_time)
                        .ok_or_else(|| bad("PAX mtime"))?
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs.push((name.to_string(), value.to_vec()));
                    }
                }
            }
        }
        Ok(meta)
    }
}

/// `123`, `123.456`, `-1.5` -> seconds and nanoseconds.
fn parse_pax_time(s: &str) -> Option<TimeSpec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    Some(if secs < 0 && nanos > 0 {
        TimeSpec::new(secs - 1, 1_000_000_000 - nanos)
    } else {
        TimeSpec::new(secs, nanos)
    })
}

struct Unpacker {
    /// `dest`, opened: entry paths resolve inside it through [`crate::inroot`].
    root: std::os::fd::OwnedFd,
    dest: PathBuf,
    report: UnpackReport,
    /// Directories whose mode and times are applied last, children first.
    dirs: BTreeMap<PathBuf, (u32, TimeSpec)>,
    ownership_warned: bool,
}

impl Unpacker {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let hostile = |reason: &str| UnpackError::Hostile {
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let Some(rel) = normalize(Path::new(OsStr::from_bytes(&raw))) else {
            return Err(hostile("its path climbs above the root"));
        };
        let kind = entry.header().entry_type();
        let meta = EntryMeta::read(&mut entry, &shown)?;

        let (Some(name), parent_rel) = (rel.file_name(), rel.parent().unwrap_or(Path::new("")))
        else {
            // The root itself (`./`): only its metadata applies.
            if kind == tar::EntryType::Directory {
                let dest = self.dest.clone();
                self.set_owner(&dest, &meta)?;
                self.dirs.insert(dest, (meta.mode, meta.mtime));
            }
            return Ok(());
        };
        let name = name.to_os_string();
        let parent = self.secure_join(parent_rel, &shown)?;
        self.create_parents(&parent, &shown)?;

        if name.as_bytes() == OPAQUE_WHITEOUT {
            lset_xattr(&parent, OPAQUE_XATTR, b"y").map_err(|source| UnpackError::Opaque {
                path: parent.clone(),
                source,
            })?;
            let _ = lset_xattr(&parent, TRUSTED_OPAQUE_XATTR, b"y");
            return Ok(());
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(hostile("it whites out an invalid name"));
            }
            let path = parent.join(OsStr::from_bytes(hidden));
            self.remove_existing(&path)?;
            mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|errno| {
                UnpackError::Whiteout {
                    path: path.clone(),
                    source: errno.into(),
                }
            })?;
            return Ok(());
        }

        let path = parent.join(&name);
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        self.remove_existing(&path)?;
                        fs::create_dir(&path).map_err(io_err("create directory", &path))?;
                    }
                }
                self.set_owner(&path, &meta)?;
                self.set_xattrs(&path, &meta, &shown);
                self.dirs.insert(path, (meta.mode, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove_existing(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_err("create file", &path))?;
                io::copy(&mut entry, &mut file).map_err(|source| UnpackError::Read {
                    path: path.clone(),
                    source,
                })?;
                drop(file);
                self.finish_node(&path, &meta, &shown)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("the symlink has no target"))?
                    .into_owned();
                self.remove_existing(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err("create symlink", &path))?;
                self.set_owner(&path, &meta)?;
                self.set_xattrs(&path, &meta, &shown);
                set_mtime(&path, meta.mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("the hard link has no target"))?
                    .into_owned();
                let Some(target_rel) = normalize(Path::new(OsStr::from_bytes(&target))) else {
                    return Err(hostile("its hard link target climbs above the root"));
                };
                let (Some(target_name), target_parent) = (
                    target_rel.file_name(),
                    target_rel.parent().unwrap_or(Path::new("")),
                ) else {
                    return Err(hostile("its hard link target is the root"));
                };
                let target_path = self.secure_join(target_parent, &shown)?.join(target_name);
                match fs::symlink_metadata(&target_path) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(hostile("its hard link target is not a file in this layer")),
                }
                if target_path != path {
                    self.remove_existing(&path)?;
                    fs::hard_link(&target_path, &path)
                        .map_err(io_err("create hard link", &path))?;
                }
            }
            tar::EntryType::Fifo => {
                self.remove_existing(&path)?;
                nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err("create fifo", &path)(e.into()))?;
                self.finish_node(&path, &meta, &shown)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let sflag = if kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                self.remove_existing(&path)?;
                match mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                ) {
                    Ok(()) => self.finish_node(&path, &meta, &shown)?,
                    Err(Errno::EPERM) => self.report.skipped.push(format!(
                        "{shown}: device {major}:{minor} cannot be created without privileges"
                    )),
                    Err(e) => return Err(io_err("create device node", &path)(e.into())),
                }
            }
            other => self.report.skipped.push(format!(
                "{shown}: tar entry type {other:?} is not supported"
            )),
        }
        Ok(())
    }

    /// Owner, mode (after chown, which clears set-id bits), xattrs, then times.
    fn finish_node(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        self.set_owner(path, meta)?;
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
            .map_err(io_err("set mode of", path))?;
        self.set_xattrs(path, meta, shown);
        set_mtime(path, meta.mtime)
    }

    fn set_owner(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), UnpackError> {
        let ids = (u32::try_from(meta.uid), u32::try_from(meta.gid));
        let result = match ids {
            (Ok(uid), Ok(gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {
                if !self.ownership_warned {
                    self.ownership_warned = true;
                    self.report.skipped.push(format!(
                        "file owners not kept (first: {} owned by {}:{}): the user namespace maps too few ids; add a range to /etc/subuid and /etc/subgid",
                        path.strip_prefix(&self.dest).unwrap_or(path).display(),
                        meta.uid,
                        meta.gid
                    ));
                }
                Ok(())
            }
            Err(e) => Err(io_err("change owner of", path)(e)),
        }
    }

    fn set_xattrs(&mut self, path: &Path, meta: &EntryMeta, shown: &str) {
        for (name, value) in &meta.xattrs {
            // Overlay metadata is berth's to write; a layer must not forge it.
            if name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.") {
                self.report
                    .skipped
                    .push(format!("{shown}: overlay xattr {name} ignored"));
                continue;
            }
            let wanted = name.starts_with("user.") || name == "security.capability";
            match lset_xattr(path, name, value) {
                Ok(()) => {}
                Err(e)
                    if !wanted
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EPERM | libc::ENOTSUP | libc::EACCES)
                        ) => {}
                Err(e) => self
                    .report
                    .skipped
                    .push(format!("{shown}: xattr {name} not set ({e})")),
            }
        }
    }

    /// Resolves `rel` inside `dest` as if `dest` were `/` (the project's one resolver,
    /// [`crate::inroot::resolve_in_root`]): symlinks in it are followed, absolute ones from
    /// `dest`, and `..` never climbs above `dest`.
    fn secure_join(&self, rel: &Path, shown: &str) -> Result<PathBuf, UnpackError> {
        let hostile = |reason: &str| UnpackError::Hostile {
            entry: shown.to_string(),
            reason: reason.into(),
        };
        match crate::inroot::resolve_in_root(self.root.as_fd(), rel) {
            Ok(resolved) => Ok(self.dest.join(resolved)),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                Err(hostile("its path passes through too many symlinks"))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                Err(hostile("a parent of it is not a directory"))
            }
            Err(e) => Err(io_err("inspect", &self.dest.join(rel))(e)),
        }
    }

    /// Creates the missing directories of `dir` (already resolved, so free of symlinks).
    fn create_parents(&self, dir: &Path, shown: &str) -> Result<(), UnpackError> {
        let rel = dir.strip_prefix(&self.dest).unwrap_or(Path::new(""));
        let mut current = self.dest.clone();
        for c in rel.components() {
            current.push(c);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::Hostile {
                        entry: shown.to_string(),
                        reason: format!(
                            "its parent {} is not a directory",
                            c.as_os_str().to_string_lossy()
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(io_err("create directory", &current))?;
                    fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("set mode of", &current))?;
                }
                Err(e) => return Err(io_err("inspect", &current)(e)),
            }
        }
        Ok(())
    }

    /// Removes whatever is at `path` (never following a symlink).
    fn remove_existing(&mut self, path: &Path) -> Result<(), UnpackError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                self.dirs.retain(|d, _| !d.starts_with(path));
                fs::remove_dir_all(path).map_err(io_err("remove", path))
            }
            Ok(_) => fs::remove_file(path).map_err(io_err("remove", path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("inspect", path)(e)),
        }
    }

    /// Directory modes and times, children before parents so that a
    /// read-only directory still received its children and times stay put.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        for (path, (mode, mtime)) in self.dirs.iter().rev() {
            match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(io_err("set mode of", path))?;
            set_mtime(path, *mtime)?;
        }
        Ok(())
    }
}

/// Lexical normalisation of an archive entry path: a leading `/` is
/// dropped, `.` ignored; `None` when `..` would climb above the root.
pub(crate) fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            // Popping nothing means climbing above the root.
            Component::ParentDir => out.pop().then_some(())?,
            _ => {}
        }
    }
    Some(out)
}

fn set_mtime(path: &Path, mtime: TimeSpec) -> Result<(), UnpackError> {
    utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_err("set times of", path)(e.into()))
}

/// `lsetxattr(2)`: never follows a symlink.
fn lset_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `value`
    // points to `value.len()` readable bytes; the kernel copies them.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
