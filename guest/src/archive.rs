//! Tar streams of files, the same on both walls: `berth cp` (a source archived under its
//! last component, extracted by Docker's rules without ever writing outside the destination)
//! and `berth commit` (an overlay upper directory as an OCI layer). berth runs them inside a
//! container's mount namespace; the agent runs them inside a microVM, so one implementation
//! serves both.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes `src` as a tar stream: its top entry first, named after its last component.
pub fn produce(src: &str, follow: bool, out: impl Write) -> Result<(), String> {
    let path = Path::new(src);
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| format!("{src}: {e}"))?;
    let name = top_name(src);
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    if meta.is_dir() && name == "." {
        // `DIR/.`: Docker's clients rebase such an archive on its leading `./`, which tar's
        // own path setter drops; the names are written as they are.
        append_contents(&mut tar, path, b"./", &meta).map_err(|e| format!("reading {src}: {e}"))?;
    } else if meta.is_dir() {
        tar.append_dir_all(&name, path)
            .map_err(|e| format!("reading {src}: {e}"))?;
    } else if follow {
        let mut f = File::open(path).map_err(|e| format!("{src}: {e}"))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        tar.append_data(&mut header, &name, &mut f)
            .map_err(|e| format!("reading {src}: {e}"))?;
    } else {
        tar.append_path_with_name(path, &name)
            .map_err(|e| format!("reading {src}: {e}"))?;
    }
    tar.into_inner().map_err(err)?.flush().map_err(err)?;
    Ok(())
}

/// Appends `path` as entry `name` (kept as written, `./` and all) and, for a directory,
/// everything below it.
fn append_contents<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &[u8],
    meta: &Metadata,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut h = tar::Header::new_gnu();
    h.set_metadata(meta);
    let ft = meta.file_type();
    if ft.is_symlink() {
        h.set_link_name(fs::read_link(path)?)?;
    }
    if !ft.is_file() {
        h.set_size(0);
    }
    let bytes = name;
    if bytes.len() >= 100 {
        // GNU's long name: an entry of its own carrying the name, before the header.
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        long.set_size(bytes.len() as u64 + 1);
        long.set_cksum();
        let mut data = bytes.to_vec();
        data.push(0);
        tar.append(&long, &data[..])?;
    }
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    let n = bytes.len().min(field.len() - 1);
    field[..n].copy_from_slice(&bytes[..n]);
    h.set_cksum();
    if ft.is_file() {
        tar.append(&h, File::open(path)?)?;
    } else {
        tar.append(&h, io::empty())?;
    }
    if ft.is_dir() {
        for e in sorted_entries(path)? {
            let child = e.path();
            let meta = fs::symlink_metadata(&child)?;
            let mut child_name = [name, e.file_name().as_bytes()].concat();
            if meta.is_dir() {
                child_name.push(b'/');
            }
            append_contents(tar, &child, &child_name, &meta)?;
        }
    }
    Ok(())
}

/// The name a source is archived under: its last component (`.` for `/` or `SRC/.`).
pub fn top_name(src: &str) -> String {
    let trimmed = src.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.ends_with("/.") || trimmed == "." {
        return ".".into();
    }
    Path::new(trimmed)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

/// Where an entry of the archive lands under `root`, refusing anything that would leave it.
fn land(root: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut at = root.to_path_buf();
    let parts: Vec<Component> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::Normal(p) => {
                at.push(p);
                let last = i + 1 == parts.len();
                if !last {
                    if let Ok(m) = std::fs::symlink_metadata(&at) {
                        if m.file_type().is_symlink() {
                            return Err(format!(
                                "refusing to write through the symlink {}",
                                at.display()
                            ));
                        }
                    }
                }
            }
            Component::CurDir => {}
            _ => return Err(format!("refusing the archive entry {}", rel.display())),
        }
    }
    Ok(at)
}

/// Extracts a stream written by [`produce`] at `dest` by Docker's rules; `contents` is
/// true for a `SRC/.` source. With `stream`, the archive's entries go under the existing
/// directory `dest` as they are. With `keep_kinds` an entry replaces no directory with a
/// non-directory and no non-directory with a directory (Docker's `noOverwriteDirNonDir`).
pub fn consume(
    dest: &str,
    contents: bool,
    stream: bool,
    archive: bool,
    keep_kinds: bool,
    input: impl Read,
) -> Result<(), String> {
    let mut tar = tar::Archive::new(input);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let dest_path = Path::new(dest);
    let dest_meta = std::fs::metadata(dest_path).ok();
    let mut root: Option<(PathBuf, PathBuf)> = None;
    if stream {
        match &dest_meta {
            Some(m) if m.is_dir() => root = Some((PathBuf::new(), dest_path.to_path_buf())),
            _ => {
                return Err(format!(
                    "{dest}: an archive is extracted into an existing directory"
                ))
            }
        }
    }
    for entry in tar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let path = entry.path().map_err(err)?.into_owned();
        let kind = entry.header().entry_type();
        if root.is_none() {
            // The top entry decides where everything lands.
            let top = path.clone();
            let is_dir = kind.is_dir();
            let target = match (&dest_meta, is_dir) {
                (Some(m), true) if m.is_dir() && contents => dest_path.to_path_buf(),
                (Some(m), _) if m.is_dir() => dest_path.join(top_name(&top.to_string_lossy())),
                (Some(_), true) => {
                    return Err(format!("cannot copy a directory to the file {dest}"))
                }
                (Some(_), false) => dest_path.to_path_buf(),
                (None, false) if dest.ends_with('/') => {
                    return Err(format!(
                        "the destination directory {dest} does not exist: create it first"
                    ))
                }
                (None, _) => {
                    let parent = dest_path.parent().filter(|p| !p.as_os_str().is_empty());
                    if parent.is_some_and(|p| !p.is_dir()) {
                        return Err(format!(
                            "the parent directory of {dest} does not exist: create it first"
                        ));
                    }
                    dest_path.to_path_buf()
                }
            };
            root = Some((top, target));
        }
        let (top, target) = root.as_ref().expect("set above");
        let rel = path.strip_prefix(top).unwrap_or(&path);
        let to = if rel.as_os_str().is_empty() {
            target.clone()
        } else {
            land(target, rel)?
        };
        if let Ok(m) = std::fs::symlink_metadata(&to) {
            if keep_kinds && m.is_dir() != kind.is_dir() {
                let (was, now) = if m.is_dir() {
                    ("directory", "non-directory")
                } else {
                    ("non-directory", "directory")
                };
                return Err(format!(
                    "cannot overwrite {was} {:?} with {now} {:?}: remove it first, or copy to another path",
                    to.display().to_string(),
                    path.display().to_string()
                ));
            }
            if !(m.is_dir() && kind.is_dir()) {
                let removed = if m.is_dir() {
                    std::fs::remove_dir_all(&to)
                } else {
                    std::fs::remove_file(&to)
                };
                removed.map_err(|e| format!("replacing {}: {e}", to.display()))?;
            }
        }
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            continue;
        }
        entry
            .unpack(&to)
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        if archive {
            let (uid, gid) = (entry.header().uid(), entry.header().gid());
            if let (Ok(u), Ok(g)) = (uid, gid) {
                let _ = nix::unistd::fchownat(
                    None,
                    &to,
                    Some(nix::unistd::Uid::from_raw(u as u32)),
                    Some(nix::unistd::Gid::from_raw(g as u32)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                );
            }
        }
    }
    if root.is_none() {
        return Err("the source was empty".into());
    }
    Ok(())
}

/// The opaque-directory markers of the overlay implementations berth uses (the rootless one,
/// `user.overlay.opaque`, is also how berth unpacks image layers).
const OPAQUE_MARKERS: &[&str] = &[
    "user.overlay.opaque",
    "trusted.overlay.opaque",
    "user.fuseoverlayfs.opaque",
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

pub fn opaque(dir: &Path) -> bool {
    OPAQUE_MARKERS.iter().any(|m| xattr_is_y(dir, m))
}

/// A layer tar being written: entries taken from files on disk, and whiteout markers.
pub struct Layer<W: Write> {
    pub tar: tar::Builder<W>,
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
    pub fn add(&mut self, path: &Path, name: &Path, meta: &Metadata) -> io::Result<()> {
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
    pub fn marker(&mut self, name: &Path) -> io::Result<()> {
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

pub fn sorted_entries(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// The whiteout marker that hides `rel` in the layers below.
pub fn whiteout_name(rel: &Path) -> PathBuf {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    rel.with_file_name(format!(".wh.{name}"))
}

fn walk_upper<W: Write>(
    layer: &mut Layer<W>,
    dir: &Path,
    rel: &Path,
    skip: &[&str],
) -> io::Result<()> {
    for e in sorted_entries(dir)? {
        let path = e.path();
        let name = rel.join(e.file_name());
        if skip.iter().any(|s| Path::new(s) == name) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            layer.marker(&whiteout_name(&name))?;
        } else if meta.is_dir() {
            layer.add(&path, &name, &meta)?;
            if opaque(&path) {
                layer.marker(&name.join(".wh..wh..opq"))?;
            }
            walk_upper(layer, &path, &name, skip)?;
        } else {
            layer.add(&path, &name, &meta)?;
        }
    }
    Ok(())
}

/// Writes the overlay upper directory `upper` as a layer tar to `out`, leaving out the paths
/// in `skip` (relative to the root: files the runtime wrote, such as a microVM's /etc/hosts).
pub fn upper_layer(upper: &Path, skip: &[&str], out: impl Write) -> io::Result<()> {
    let mut layer = Layer {
        tar: tar::Builder::new(out),
    };
    walk_upper(&mut layer, upper, Path::new(""), skip)?;
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
    fn a_directorys_contents_are_archived_under_dot_slash_long_names_too() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let long = "n".repeat(150);
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub").join(&long), "long").unwrap();
        std::os::unix::fs::symlink("sub", src.join("link")).unwrap();
        let mut buf = Vec::new();
        produce(&format!("{}/.", src.display()), false, &mut buf).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&buf[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["./", "./link", "./sub/", &format!("./sub/{long}")],
            "Docker's clients rebase on the leading ./"
        );
        let dest = d.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        consume(&dest.to_string_lossy(), true, false, false, false, &buf[..]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("sub").join(&long)).unwrap(),
            "long"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("sub")
        );
    }

    #[test]
    fn copies_follow_dockers_rules_and_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "f").unwrap();
        std::fs::write(src.join("top"), "t").unwrap();
        let roundtrip = |from: &str, to: &str, contents: bool| {
            let mut buf = Vec::new();
            produce(from, false, &mut buf).unwrap();
            consume(to, contents, false, false, false, &buf[..])
        };
        let s = src.to_string_lossy().to_string();
        // A directory to a new path becomes that path.
        let new = d.path().join("new").to_string_lossy().to_string();
        roundtrip(&s, &new, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("new/sub/f")).unwrap(),
            "f"
        );
        // Into an existing directory: under its name; with /. its contents.
        roundtrip(&s, &new, false).unwrap();
        assert!(d.path().join("new/src/top").is_file());
        let dot = d.path().join("dot");
        std::fs::create_dir(&dot).unwrap();
        roundtrip(&format!("{s}/."), &dot.to_string_lossy(), true).unwrap();
        assert!(dot.join("top").is_file() && dot.join("sub/f").is_file());
        // A file to a missing name in an existing directory: that file.
        roundtrip(
            &format!("{s}/top"),
            &d.path().join("t2").to_string_lossy(),
            false,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("t2")).unwrap(), "t");
        // Errors Docker gives.
        assert!(roundtrip(&s, &d.path().join("t2").to_string_lossy(), false).is_err());
        assert!(roundtrip(
            &format!("{s}/top"),
            &format!("{}/nodir/", d.path().display()),
            false
        )
        .is_err());
        // A hostile archive cannot write through a symlink.
        let evil = d.path().join("evil");
        std::fs::create_dir(&evil).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), evil.join("link")).unwrap();
        std::fs::create_dir(d.path().join("outside")).unwrap();
        let mut buf = Vec::new();
        {
            let mut t = tar::Builder::new(&mut buf);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            t.append_data(&mut h, "x", io::empty()).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            t.append_data(&mut h, "x/link/pwned", &b"!"[..]).unwrap();
            t.finish().unwrap();
        }
        assert!(consume(&evil.to_string_lossy(), true, false, false, false, &buf[..]).is_err());
        assert!(!d.path().join("outside/pwned").exists());
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
        upper_layer(&upper, &[], &mut out).unwrap();
        assert_eq!(names(&out), vec![".wh.gone", "dir", "dir/file"]);
    }

    #[test]
    fn an_upper_directory_leaves_out_what_it_is_told_to() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        for f in ["etc/hosts", "etc/motd", "hosts"] {
            fs::write(upper.join(f), "x").unwrap();
        }
        let mut out = Vec::new();
        upper_layer(&upper, &["etc/hosts"], &mut out).unwrap();
        assert_eq!(names(&out), vec!["etc", "etc/motd", "hosts"]);
    }
}
