//! What a berth microVM boots: the guest kernel (built by `kernels/build`) and the guest
//! agent (`guest/`, a static binary), found on this machine, and the initramfs that makes the
//! agent the guest's `/init`.
//!
//! Lookup order, for each file: the environment (`BERTH_VM_KERNEL`, `BERTH_VM_AGENT`), then
//! `$XDG_DATA_HOME/berth/guest/`, the directory of the berth executable, `../lib/berth/` next
//! to it, `/usr/local/lib/berth/` and `/usr/lib/berth/`. `scripts/build-guest` builds both
//! and installs them in the first place it can write to.
//!
//! The initramfs is a newc cpio archive written here rather than with a crate: it holds four
//! directories, `/dev/console` (a device node no rootless process could create on disk) and
//! the agent, and the format is a fixed ASCII header per entry.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The kernel's file name in a guest directory.
pub const KERNEL_FILE: &str = "vmlinux";
/// The agent's file name in a guest directory.
pub const AGENT_FILE: &str = "berth-agent";

/// Why the guest's files could not be found or prepared.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("no guest {what} found (looked for {}); build and install it with `scripts/build-guest`, or point {var} at one", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        what: &'static str,
        var: &'static str,
        searched: Vec<PathBuf>,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GuestError {
    let path = path.to_path_buf();
    move |source| GuestError::Io { what, path, source }
}

/// The directories searched for the kernel and the agent, in order.
pub fn search_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![data_dir.join("guest")];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("../lib/berth"));
        dirs.push(exe_dir);
    }
    dirs.push("/usr/local/lib/berth".into());
    dirs.push("/usr/lib/berth".into());
    dirs
}

fn find(
    what: &'static str,
    var: &'static str,
    file: &str,
    data_dir: &Path,
) -> Result<PathBuf, GuestError> {
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(GuestError::NotFound {
                what,
                var,
                searched: vec![p],
            })
        };
    }
    let searched: Vec<PathBuf> = search_dirs(data_dir)
        .into_iter()
        .map(|d| d.join(file))
        .collect();
    searched
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(GuestError::NotFound {
            what,
            var,
            searched,
        })
}

/// The guest kernel berth boots.
pub fn kernel(data_dir: &Path) -> Result<PathBuf, GuestError> {
    find("kernel", "BERTH_VM_KERNEL", KERNEL_FILE, data_dir)
}

/// The guest agent binary.
pub fn agent(data_dir: &Path) -> Result<PathBuf, GuestError> {
    find("agent", "BERTH_VM_AGENT", AGENT_FILE, data_dir)
}

/// The initramfs for `agent`, built once per agent binary into `cache_dir`.
pub fn initramfs(agent: &Path, cache_dir: &Path) -> Result<PathBuf, GuestError> {
    let mut bytes = Vec::new();
    File::open(agent)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err("reading the guest agent", agent))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let path = cache_dir.join(format!("initramfs-{}.cpio", &digest[..16]));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir).map_err(io_err("creating", cache_dir))?;
    let archive = newc_archive(&bytes);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    File::create(&tmp)
        .and_then(|mut f| f.write_all(&archive).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            GuestError::Io {
                what: "writing",
                path: path.clone(),
                source: e,
            }
        })?;
    Ok(path)
}

const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFREG: u32 = 0o100000;

/// A newc cpio archive: the guest's first root, with the agent as `/init`.
pub fn newc_archive(agent: &[u8]) -> Vec<u8> {
    newc_of(&[("init", EXEC, agent)])
}

/// The mode of a directory entry for [`newc_of`].
pub const DIR: u32 = S_IFDIR | 0o755;
/// The mode of an executable file for [`newc_of`].
pub const EXEC: u32 = S_IFREG | 0o755;

/// A newc cpio archive of `entries` (name, mode with its file type, content), after the
/// directories and the `/dev/console` node every first root needs (the kernel opens it for
/// init's stdio; no rootless process could create it in a directory).
pub fn newc_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let size: usize = entries.iter().map(|e| e.2.len() + 128).sum();
    let mut out = Vec::with_capacity(size + 1024);
    let mut ino = 1;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // checksum
        ];
        ino += 1;
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
    };
    for dir in ["dev", "proc", "sys", "run"] {
        entry(&mut out, dir, DIR, (0, 0), &[]);
    }
    entry(&mut out, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    for (name, mode, data) in entries {
        entry(&mut out, name, *mode, (0, 0), data);
    }
    entry(&mut out, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The mount tag of the `index`th shared directory (`-v`, `--mount` with `--vm`).
pub fn share_tag(index: usize) -> String {
    format!("berth{index}")
}

/// The name Linux gives the `index`th virtio disk: vda..vdz, vdaa, vdab, ...
pub fn disk_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index;
    loop {
        suffix.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    suffix.reverse();
    format!("vd{}", String::from_utf8_lossy(&suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_named_as_linux_names_them() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(25), "vdz");
        assert_eq!(disk_name(26), "vdaa");
        assert_eq!(disk_name(27), "vdab");
        assert_eq!(disk_name(701), "vdzz");
        assert_eq!(disk_name(702), "vdaaa");
    }

    #[test]
    fn the_initramfs_is_a_newc_archive_cpio_reads() {
        let archive = newc_archive(b"#!/bin/sh\necho agent\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, &archive).unwrap();
        let Ok(out) = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&path)
            .output()
        else {
            crate::testing::skip("cpio is not installed (apt-get install cpio)");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(listing.contains("dev/console"), "{listing}");
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains(" init"),
            "{listing}"
        );
        assert_eq!(archive.len() % 4, 0);
    }

    #[test]
    fn the_initramfs_is_cached_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"one").unwrap();
        let a = initramfs(&agent, &dir.path().join("cache")).unwrap();
        assert_eq!(a, initramfs(&agent, &dir.path().join("cache")).unwrap());
        std::fs::write(&agent, b"two").unwrap();
        let b = initramfs(&agent, &dir.path().join("cache")).unwrap();
        assert_ne!(a, b);
        assert!(std::fs::read(&b).unwrap().windows(3).any(|w| w == b"two"));
    }
}
