//! A container's changes as an OCI layer tar (`berth commit`). From an overlay upper
//! directory: its files as they are, its whiteouts (0/0 character devices, or `.wh.` files
//! from fuse-overlayfs) and opaque directories as OCI `.wh.` markers. From the copy
//! driver's full tree: what differs from the image's layers, and a whiteout for what is gone.
//! Runs inside the user namespace, so owners are the container's ids.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::image::{is_whiteout, OPAQUE_XATTR};

/// The opaque-directory markers of the overlay implementations berth uses.
const OPAQUE_MARKERS: &[&str] = &[
    "user.overlay.opaque",
    "trusted.overlay.opaque",
    "user.fuseoverlayfs.opaque",
    OPAQUE_XATTR,
];

fn xattr_is_y(path: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: lgetxattr writes at most buf.len() bytes; both strings are NUL-terminated.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    len == 1 && buf[0] == b'y'
}

fn opaque(dir: &Path) -> bool {
    OPAQUE_MARKERS.iter().any(|m| xattr_is_y(dir, m))
}

struct Layer<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> Layer<W> {
    fn header(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        h
    }

    /// Adds `path` (on disk) as `name` in the layer; devices, fifos and sockets are skipped.
    fn add(&mut self, path: &Path, name: &Path, meta: &Metadata) -> io::Result<()> {
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = Self::header(meta, tar::EntryType::Directory);
            self.tar.append_data(&mut h, name, io::empty())
        } else if ft.is_symlink() {
            let mut h = Self::header(meta, tar::EntryType::Symlink);
            self.tar.append_link(&mut h, name, fs::read_link(path)?)
        } else if ft.is_file() {
            let mut h = Self::header(meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            self.tar.append_data(&mut h, name, fs::File::open(path)?)
        } else {
            Ok(())
        }
    }

    /// An empty marker file (`.wh.NAME` or `.wh..wh..opq`).
    fn marker(&mut self, name: &Path) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        self.tar.append_data(&mut h, name, io::empty())
    }
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn whiteout_name(rel: &Path) -> PathBuf {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    rel.with_file_name(format!(".wh.{name}"))
}

fn walk_upper<W: Write>(layer: &mut Layer<W>, dir: &Path, rel: &Path) -> io::Result<()> {
    for e in sorted_entries(dir)? {
        let path = e.path();
        let name = rel.join(e.file_name());
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            layer.marker(&whiteout_name(&name))?;
        } else if meta.is_dir() {
            layer.add(&path, &name, &meta)?;
            if opaque(&path) {
                layer.marker(&name.join(".wh..wh..opq"))?;
            }
            walk_upper(layer, &path, &name)?;
        } else {
            layer.add(&path, &name, &meta)?;
        }
    }
    Ok(())
}

/// Writes the overlay upper directory `upper` as a layer tar to `out`.
pub fn upper_layer(upper: &Path, out: impl Write) -> io::Result<()> {
    let mut layer = Layer {
        tar: tar::Builder::new(out),
    };
    walk_upper(&mut layer, upper, Path::new(""))?;
    layer.tar.into_inner()?.flush()
}

/// What the image (`lowers`, bottom first) has at `rel`: the topmost layer's entry, unless a
/// whiteout or an opaque directory above hides it.
fn image_entry(lowers: &[PathBuf], rel: &Path) -> Option<(PathBuf, Metadata)> {
    for layer in lowers.iter().rev() {
        let p = layer.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if is_whiteout(&m) => return None,
            Ok(m) => return Some((p, m)),
            Err(_) => {
                // An opaque parent in this layer hides the layers below.
                let parent_opaque = rel
                    .parent()
                    .filter(|q| !q.as_os_str().is_empty())
                    .is_some_and(|q| opaque(&layer.join(q)));
                if parent_opaque {
                    return None;
                }
            }
        }
    }
    None
}

fn same_file(a: &Path, am: &Metadata, b: &Path, bm: &Metadata) -> bool {
    if am.file_type() != bm.file_type()
        || am.mode() != bm.mode()
        || am.uid() != bm.uid()
        || am.gid() != bm.gid()
    {
        return false;
    }
    if am.file_type().is_symlink() {
        return fs::read_link(a).ok() == fs::read_link(b).ok();
    }
    if am.is_dir() {
        return true;
    }
    if am.len() != bm.len() {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let (Ok(na), Ok(nb)) = (fa.read(&mut ba), fb.read(&mut bb)) else {
            return false;
        };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn walk_full<W: Write>(
    layer: &mut Layer<W>,
    root: &Path,
    lowers: &[PathBuf],
    rel: &Path,
) -> io::Result<()> {
    let dir = root.join(rel);
    for e in sorted_entries(&dir)? {
        let name = rel.join(e.file_name());
        let path = e.path();
        let meta = fs::symlink_metadata(&path)?;
        let before = image_entry(lowers, &name);
        let unchanged = before
            .as_ref()
            .is_some_and(|(p, m)| same_file(&path, &meta, p, m));
        if !unchanged {
            if let Some((_, m)) = &before {
                // A directory replaced by a file (or the reverse) hides what was there.
                if m.is_dir() != meta.is_dir() {
                    layer.marker(&whiteout_name(&name))?;
                }
            }
            layer.add(&path, &name, &meta)?;
        }
        if meta.is_dir() {
            walk_full(layer, root, lowers, &name)?;
        }
    }
    // What the image had here and the container removed.
    let mut gone = BTreeSet::new();
    for l in lowers {
        let Ok(rd) = fs::read_dir(l.join(rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = rel.join(e.file_name());
            if fs::symlink_metadata(dir.join(e.file_name())).is_err()
                && image_entry(lowers, &name).is_some()
            {
                gone.insert(name);
            }
        }
    }
    for name in gone {
        layer.marker(&whiteout_name(&name))?;
    }
    Ok(())
}

/// Writes the difference between the copy driver's `rootfs` and the image's `lowers` as a
/// layer tar to `out`.
pub fn full_layer(rootfs: &Path, lowers: &[PathBuf], out: impl Write) -> io::Result<()> {
    let mut layer = Layer {
        tar: tar::Builder::new(out),
    };
    walk_full(&mut layer, rootfs, lowers, Path::new(""))?;
    layer.tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_full_tree_diff_has_changes_and_whiteouts_only() {
        let d = tempfile::tempdir().unwrap();
        let lower = d.path().join("lower");
        let root = d.path().join("root");
        for p in [&lower, &root] {
            fs::create_dir_all(p.join("etc")).unwrap();
            fs::write(p.join("etc/same"), "same").unwrap();
        }
        fs::write(lower.join("etc/changed"), "old").unwrap();
        fs::write(root.join("etc/changed"), "new").unwrap();
        fs::write(lower.join("etc/removed"), "x").unwrap();
        fs::write(root.join("added"), "a").unwrap();
        let mut out = Vec::new();
        full_layer(&root, std::slice::from_ref(&lower), &mut out).unwrap();
        let mut got = names(&out);
        got.sort();
        assert_eq!(got, vec!["added", "etc/.wh.removed", "etc/changed"]);
    }

    #[test]
    fn an_upper_directory_keeps_its_files_and_opaque_markers() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        fs::create_dir_all(upper.join("dir")).unwrap();
        fs::write(upper.join("dir/file"), "x").unwrap();
        // fuse-overlayfs writes whiteouts as .wh. files when it cannot make devices.
        fs::write(upper.join(".wh.gone"), "").unwrap();
        let mut out = Vec::new();
        upper_layer(&upper, &mut out).unwrap();
        assert_eq!(names(&out), vec![".wh.gone", "dir", "dir/file"]);
    }
}
