//! `berth cp`: files between the host and a container (running or not), as a tar stream
//! between a process on each side, with Docker's rules for what lands where:
//! a file goes into an existing directory or becomes the destination file; a directory
//! becomes the destination (which must not exist) or goes into an existing one; `SRC/.`
//! copies a directory's contents. `-` stands for a tar stream on stdin or stdout.
//! The extracting side never writes outside the destination: no `..`, no symlinks followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use super::EngineError;
use crate::container::enter;
use crate::state::ContainerStore;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEnd {
    Host(PathBuf),
    Container {
        container: String,
        path: String,
    },
    /// `-`: a tar stream on stdin (as source) or stdout (as destination).
    Stream,
}

impl CopyEnd {
    /// Docker's reading: `-`, `CONTAINER:PATH` (a colon before any slash), else a host path.
    pub fn parse(s: &str) -> CopyEnd {
        if s == "-" {
            return CopyEnd::Stream;
        }
        match s.split_once(':') {
            Some((c, p)) if !c.is_empty() && !c.contains('/') => CopyEnd::Container {
                container: c.to_string(),
                path: if p.is_empty() {
                    "/".into()
                } else {
                    p.to_string()
                },
            },
            _ => CopyEnd::Host(PathBuf::from(s)),
        }
    }
}

/// `-a` and `-L`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Keep the files' uid and gid (otherwise the writing side's own).
    pub archive: bool,
    /// Follow a symlink given as the source.
    pub follow_link: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes `src` as a tar stream: its top entry first, named after its last component.
fn produce(src: &str, follow: bool, out: impl Write) -> Result<(), String> {
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
    if meta.is_dir() {
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

/// The name a source is archived under: its last component (`.` for `/` or `SRC/.`).
fn top_name(src: &str) -> String {
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
/// directory `dest` as they are.
fn consume(
    dest: &str,
    contents: bool,
    stream: bool,
    archive: bool,
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

fn pipe() -> Result<(File, File), EngineError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Monitor(format!("creating a pipe: {e}")))?;
    Ok((File::from(r), File::from(w)))
}

impl super::Engine {
    /// Starts `work` inside container `key`'s file system (running or stopped).
    fn spawn_inside<F>(&self, key: &str, work: F) -> Result<enter::Helper, EngineError>
    where
        F: FnOnce() -> Result<(), String>,
    {
        let rec = self.container(key)?;
        if rec.isolation == crate::state::Isolation::Vm {
            return Err(EngineError::NotForVm {
                what: "berth cp",
                why: "the guest's files are in the guest; stream them through exec instead, e.g. `berth exec -i C sh -c 'cat > /path' < FILE` or `berth exec C cat /path > FILE`",
            });
        }
        let helper = match rec.pid {
            Some(pid) if ContainerStore::is_running(&rec) => {
                enter::spawn_in_running(nix::unistd::Pid::from_raw(pid), &self.ids, work)?
            }
            _ => {
                let _lock = self.containers.lock_container(&rec.id)?;
                enter::spawn_in_stopped(&self.containers.dir(&rec.id), &self.ids, work)?
            }
        };
        Ok(helper)
    }

    /// `berth cp SRC DEST`.
    pub fn copy(&self, src: &CopyEnd, dst: &CopyEnd, opts: CopyOptions) -> Result<(), EngineError> {
        let usage = |m: &str| Err(EngineError::Usage(m.to_string()));
        match (src, dst) {
            (CopyEnd::Container { container, path }, CopyEnd::Host(dest)) => {
                let (rd, wr) = pipe()?;
                let (path, follow) = (path.clone(), opts.follow_link);
                let rd_fd = rd.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    close_copy(rd_fd);
                    produce(&path, follow, wr)
                })?;
                let dest_s = dest.to_string_lossy().into_owned();
                let contents = src_contents(src);
                let local = consume(&dest_s, contents, false, opts.archive, rd);
                let remote = helper.wait();
                remote?;
                local.map_err(EngineError::Usage)
            }
            (CopyEnd::Container { container, path }, CopyEnd::Stream) => {
                let (mut rd, wr) = pipe()?;
                let (path, follow) = (path.clone(), opts.follow_link);
                let helper = self.spawn_inside(container, move || produce(&path, follow, wr))?;
                let copied = io::copy(&mut rd, &mut io::stdout().lock());
                drop(rd);
                helper.wait()?;
                copied.map_err(|e| EngineError::Usage(format!("writing the archive: {e}")))?;
                Ok(())
            }
            (CopyEnd::Host(source), CopyEnd::Container { container, path }) => {
                let (rd, wr) = pipe()?;
                let (dest, archive) = (path.clone(), opts.archive);
                let contents = src_contents(src);
                let wr_fd = wr.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    // Our copy of the writing end would keep the stream from ending.
                    close_copy(wr_fd);
                    consume(&dest, contents, false, archive, rd)
                })?;
                let local = produce(&source.to_string_lossy(), opts.follow_link, wr);
                let remote = helper.wait();
                local.map_err(EngineError::Usage)?;
                remote?;
                Ok(())
            }
            (CopyEnd::Stream, CopyEnd::Container { container, path }) => {
                let (rd, mut wr) = pipe()?;
                let (dest, archive) = (path.clone(), opts.archive);
                let wr_fd = wr.as_raw_fd();
                let helper = self.spawn_inside(container, move || {
                    close_copy(wr_fd);
                    consume(&dest, false, true, archive, rd)
                })?;
                let copied = io::copy(&mut io::stdin().lock(), &mut wr);
                drop(wr);
                helper.wait()?;
                copied.map_err(|e| EngineError::Usage(format!("reading the archive: {e}")))?;
                Ok(())
            }
            (CopyEnd::Container { .. }, CopyEnd::Container { .. }) => {
                usage("copying between containers is not supported: copy to the host, then on")
            }
            _ => usage("one of SRC and DEST must be CONTAINER:PATH"),
        }
    }
}

/// Whether the source names a directory's contents (`SRC/.`).
fn src_contents(src: &CopyEnd) -> bool {
    let s = match src {
        CopyEnd::Host(p) => p.to_string_lossy().into_owned(),
        CopyEnd::Container { path, .. } => path.clone(),
        CopyEnd::Stream => return false,
    };
    s.trim_end_matches('/').ends_with("/.") || s == "."
}

/// Closes, in the helper, its copy of the parent's end of the pipe.
fn close_copy(fd: std::os::fd::RawFd) {
    let _ = nix::unistd::close(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_parse_like_docker() {
        assert_eq!(
            CopyEnd::parse("web:/etc/hosts"),
            CopyEnd::Container {
                container: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(CopyEnd::parse("./a:b"), CopyEnd::Host("./a:b".into()));
        assert_eq!(CopyEnd::parse("/x/y"), CopyEnd::Host("/x/y".into()));
        assert_eq!(CopyEnd::parse("-"), CopyEnd::Stream);
        assert_eq!(top_name("/a/b/"), "b");
        assert_eq!(top_name("/a/b/."), ".");
        assert_eq!(top_name("/"), ".");
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
            consume(to, contents, false, false, &buf[..])
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
        assert!(consume(&evil.to_string_lossy(), true, false, false, &buf[..]).is_err());
        assert!(!d.path().join("outside/pwned").exists());
    }
}
