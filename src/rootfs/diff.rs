//! A container's changes as an OCI layer tar (`berth commit`). From an overlay upper
//! directory: its files as they are, its whiteouts (0/0 character devices, or `.wh.` files
//! from fuse-overlayfs) and opaque directories as OCI `.wh.` markers. From the copy
//! driver's full tree: what differs from the image's layers, and a whiteout for what is gone.
//! Runs inside the user namespace, so owners are the container's ids.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use berth_agent::archive::upper_layer;
use berth_agent::archive::{sorted_entries, whiteout_name, Layer};

use super::merged::LayerHit;
use crate::inroot::fd_path;

/// What the image (`lowers`, bottom first) has at `rel`: the topmost layer's entry (opened
/// `O_PATH`, found without following any symlink of a layer), unless a whiteout, an opaque
/// directory or a non-directory above hides it.
fn image_entry(lowers: &[PathBuf], rel: &Path) -> Option<(OwnedFd, Metadata)> {
    super::merged::lookup(lowers, rel).ok().flatten()
}

fn same_file(a: &Path, am: &Metadata, b: &OwnedFd, bm: &Metadata) -> bool {
    if am.file_type() != bm.file_type()
        || am.mode() != bm.mode()
        || am.uid() != bm.uid()
        || am.gid() != bm.gid()
    {
        return false;
    }
    if am.file_type().is_symlink() {
        // readlinkat with an empty name reads the link the O_PATH descriptor holds.
        let theirs = nix::fcntl::readlinkat(Some(b.as_raw_fd()), "").ok();
        return fs::read_link(a).ok().map(|p| p.into_os_string()) == theirs;
    }
    if am.is_dir() {
        return true;
    }
    if am.len() != bm.len() {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(fd_path(b.as_fd()))) else {
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
        let Ok(LayerHit::Entry { fd, meta, .. }) = super::merged::in_layer(l, rel) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let Ok(rd) = fs::read_dir(fd_path(fd.as_fd())) else {
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
}
