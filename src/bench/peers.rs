//! The peers berth is measured against, prepared the way their users would run them at their
//! best here: rootless podman on native overlay storage (a private storage.conf, so the
//! user's own storage is never touched), crun (or runc where crun refuses the host) and
//! bubblewrap on an OCI bundle of the same image, and QEMU's microvm machine booting berth's
//! own guest kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{have, procs, BenchEnv, BenchError};

/// A peer a user may ask for with `--peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Podman,
    Crun,
    Bwrap,
    Qemu,
    /// `unshare -Urmpf true`: namespaces and nothing else, the floor of any container.
    Unshare,
}

impl Peer {
    pub const ALL: [Peer; 5] = [
        Peer::Podman,
        Peer::Crun,
        Peer::Bwrap,
        Peer::Qemu,
        Peer::Unshare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Podman => "podman",
            Peer::Crun => "crun",
            Peer::Bwrap => "bwrap",
            Peer::Qemu => "qemu",
            Peer::Unshare => "unshare",
        }
    }

    /// `podman,crun,...`; `none` for no peer.
    pub fn parse_list(list: &str) -> Result<Vec<Peer>, BenchError> {
        let mut peers = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "none" {
                continue;
            }
            let peer = match name {
                "runc" => Peer::Crun,
                "bubblewrap" => Peer::Bwrap,
                _ => Peer::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| BenchError::Unknown {
                        kind: "peer",
                        name: name.into(),
                        choices: Peer::ALL
                            .iter()
                            .map(|p| p.name())
                            .chain(["none"])
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?,
            };
            if !peers.contains(&peer) {
                peers.push(peer);
            }
        }
        Ok(peers)
    }
}

/// Rootless podman with its own storage (native overlay) and the image loaded from berth.
pub struct Podman {
    /// The bench's podman storage and its configuration (storage.conf, containers.conf).
    dir: PathBuf,
    /// The name podman loaded the image as.
    pub image: String,
    /// runc: crun 1.8 refuses hosts with hybrid cgroups.
    pub runtime: &'static str,
}

impl Podman {
    /// Prepares podman's storage in the scratch directory and loads `image` into it.
    pub fn prepare(env: &BenchEnv, image: &str) -> Result<Podman, String> {
        if have("podman").is_none() {
            return Err("podman not installed (apt-get install podman)".into());
        }
        let runtime = if have("runc").is_some() {
            "runc"
        } else if have("crun").is_some() {
            "crun"
        } else {
            return Err("podman has no OCI runtime (apt-get install runc)".into());
        };
        let dir = env.scratch.join("podman");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let storage_conf = dir.join("storage.conf");
        let containers_conf = dir.join("containers.conf");
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        // Native overlay in the user namespace: podman's fastest storage on this kernel.
        write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )?;
        // cgroupfs, and events to a file: no systemd needed.
        write(
            &containers_conf,
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n".into(),
        )?;
        let archive = dir.join("image.tar");
        let archive_s = archive.display().to_string();
        let out = env
            .berth(&["save", "--format", "oci-archive", "-o", &archive_s, image])
            .output()
            .map_err(|e| format!("berth save: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "berth save {image}: {}",
                super::last_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        let mut podman = Podman {
            dir: dir.clone(),
            image: String::new(),
            runtime,
        };
        let out = podman
            .command(&["load", "-i", &archive_s])
            .output()
            .map_err(|e| format!("podman load: {e}"))?;
        let _ = std::fs::remove_file(&archive);
        if !out.status.success() {
            return Err(format!(
                "podman load: {}",
                super::last_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        podman.image = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("Loaded image:")
                    .or(l.strip_prefix("Loaded image(s):"))
            })
            .map(|s| s.trim().split(',').next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("podman load said no image name: {}", stdout.trim()))?;
        Ok(podman)
    }

    /// `podman ARGS` under the bench's configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        cmd
    }

    /// The PIDs of a running podman container's processes: conmon and all below it.
    pub fn sandbox_pids(&self, name: &str) -> Vec<i32> {
        let out = self
            .command(&["inspect", "--format", "{{.State.ConmonPid}}", name])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<i32>()
                .map(procs::tree)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Remove every container of ours, then the storage (it holds files of subordinate
        // ids, removable only in podman's user namespace), then the pause process our
        // configuration started (it holds that namespace; one the user had before is not ours
        // to stop).
        let _ = self
            .command(&["rm", "-a", "-f", "-t", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let graph = self.dir.join("graph").display().to_string();
        let run = self.dir.join("run").display().to_string();
        let _ = self
            .command(&["unshare", "rm", "-rf", &graph, &run])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let marker = format!(
            "CONTAINERS_STORAGE_CONF={}",
            self.dir.join("storage.conf").display()
        );
        for pid in procs::with_env(&marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// An OCI bundle of the image: the rootfs as berth itself copies it out of a container made
/// from the image (`berth cp C:/.`), and a rootless config.json running `true` in the
/// namespaces berth uses.
pub fn bundle(env: &BenchEnv, image: &str) -> Result<PathBuf, String> {
    let bundle = env.scratch.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let name = env.sandbox_name("bundle", 0);
    let step = |args: &[&str]| -> Result<(), String> {
        let out = env
            .berth(args)
            .output()
            .map_err(|e| format!("berth {}: {e}", args[0]))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "berth {}: {}",
                args[0],
                super::last_line(&String::from_utf8_lossy(&out.stderr))
            ))
        }
    };
    step(&[
        "create",
        "--name",
        &name,
        "--network",
        "none",
        image,
        "true",
    ])?;
    let copied = step(&["cp", &format!("{name}:/."), &rootfs.display().to_string()]);
    let _ = step(&["rm", "-f", &name]);
    copied?;
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let spec = oci_spec::runtime::Spec::rootless(uid, gid);
    let mut spec: Value = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
    spec["root"] = json!({ "path": "rootfs", "readonly": false });
    spec["process"]["args"] = json!(["true"]);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["cwd"] = json!("/");
    spec["linux"]["namespaces"] = json!(["user", "mount", "pid", "uts", "ipc", "network"]
        .iter()
        .map(|t| json!({ "type": t }))
        .collect::<Vec<_>>());
    // A cgroup mount needs a cgroup the user may use; berth mounts none either.
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    }
    let config = bundle.join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(bundle)
}

/// A busybox initramfs whose /init prints `BENCH-MARKER <uptime seconds>` and resets the
/// machine: the same guest work under berth's VMM and under QEMU.
pub fn marker_initramfs(env: &BenchEnv) -> Result<PathBuf, String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or("busybox not installed (apt-get install busybox-static)")?;
    let data = std::fs::read(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    if elf_interpreter(&data) {
        return Err(format!(
            "{} is linked dynamically; the initramfs needs apt-get install busybox-static",
            busybox.display()
        ));
    }
    let init = b"#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
echo \"BENCH-MARKER $(/bin/busybox cut -d' ' -f1 /proc/uptime)\"\n/bin/busybox reboot -f\n";
    let archive = crate::vm::guest::newc_of(&[
        ("bin", crate::vm::guest::DIR, &[]),
        ("bin/busybox", crate::vm::guest::EXEC, &data),
        ("init", crate::vm::guest::EXEC, init),
    ]);
    let path = env.scratch.join("marker-initramfs.cpio");
    std::fs::write(&path, archive).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Whether an ELF file asks for a dynamic loader (a PT_INTERP program header).
fn elf_interpreter(data: &[u8]) -> bool {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum as usize).any(|i| u32_at(phoff as usize + i * phentsize as usize) == Some(3))
}

/// The guest kernel berth's microVMs boot.
pub fn guest_kernel(env: &BenchEnv) -> Result<PathBuf, String> {
    crate::vm::guest::kernel(&env.dirs.data).map_err(|e| e.to_string())
}

/// Why no Linux guest can boot on this host's KVM, if none can.
pub fn kvm_unusable() -> Option<String> {
    crate::vm::sandbox::check_host()
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_aliases_and_none() {
        assert_eq!(
            Peer::parse_list("podman,runc,bubblewrap,none").unwrap(),
            vec![Peer::Podman, Peer::Crun, Peer::Bwrap]
        );
        assert!(Peer::parse_list("none").unwrap().is_empty());
        let e = Peer::parse_list("docker").unwrap_err().to_string();
        assert!(e.contains("podman, crun"), "{e}");
    }

    #[test]
    fn static_and_dynamic_elf_files_are_told_apart() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        // The test binary is linked dynamically (glibc).
        assert!(elf_interpreter(&me));
        assert!(!elf_interpreter(b"#!/bin/sh\n"));
    }
}
