//! The create configuration: what a container is made from, in Docker's shape (its
//! `ContainerConfig` and `HostConfig`) and berth's types. Every front end fills one — the CLI
//! from its flags, the API server from a `POST /containers/create` body — and the engine alone
//! decides what is valid: flag combinations, what a microVM cannot honour, sizes.
//!
//! Reading text a user typed (`-p 8080:80`, `--mount type=bind,...`, `-e K` from the caller's
//! own environment) stays with the front end, which knows the text's form; the values here are
//! typed, and their combinations are checked by [`CreateConfig::resolve`].

use std::collections::BTreeMap;

use crate::engine::{EngineError, MountRequest, RunFlags, VmNetwork, VmRequest};
use crate::monitor::policy::RestartPolicy;
use crate::net::{NetworkOptions, NetworkRequest, PortSpec};
use crate::spec::ulimit::Ulimit;
use crate::spec::{NetworkMode, RunRequest, SeccompMode};
use crate::state::{Isolation, LogConfig};

/// A container to create: Docker's `ContainerConfig` fields, then its `HostConfig`.
#[derive(Debug, Clone, Default)]
pub struct CreateConfig {
    pub image: String,
    /// `--name`; a generated one otherwise.
    pub name: Option<String>,
    /// The command (`Cmd`); empty keeps the image's, unless an entrypoint is given.
    pub cmd: Vec<String>,
    /// `Entrypoint`: replaces the image's and drops its `Cmd`; an empty list clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` pairs, in order; later ones win.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    /// `-i` / `OpenStdin`: stdin is kept for whoever attaches.
    pub open_stdin: bool,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: Option<u32>,
    pub host: HostConfig,
}

/// Docker's `HostConfig`: how the sandbox around the process is made.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// `-v` and `--mount` (`Binds` and `Mounts`), in order; not tmpfs.
    pub mounts: Vec<MountRequest>,
    /// `--tmpfs PATH[:OPTIONS]` (`Tmpfs`).
    pub tmpfs: Vec<String>,
    pub volumes_from: Vec<String>,
    /// `--network` (`NetworkMode`); `None` is the default network.
    pub network: Option<String>,
    /// `-p` (`PortBindings`).
    pub publish: Vec<PortSpec>,
    /// `-P` (`PublishAllPorts`).
    pub publish_all: bool,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    pub restart: RestartPolicy,
    /// `--rm` (`AutoRemove`).
    pub auto_remove: bool,
    pub read_only: bool,
    pub init: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// `--userns` as written ("" is berth's map).
    pub userns: Option<String>,
    /// The wall: a container, or berth's microVM (`--vm`, `--runtime vm`, `Isolation: vm`).
    pub isolation: Isolation,
    /// CPUs (`--cpus`, `NanoCpus`): a microVM's vCPUs.
    pub cpus: Option<f64>,
    /// Memory in bytes (`--memory`, `Memory`): a microVM's RAM.
    pub memory: Option<u64>,
    pub ulimits: Vec<Ulimit>,
    /// `--log-opt K=V` (`LogConfig.Config`).
    pub log_opts: Vec<(String, String)>,
}

/// The default microVM: one vCPU, 512 MiB (mapped lazily: only what the guest touches costs
/// host memory).
pub const VM_DEFAULT_CPUS: u8 = 1;
pub const VM_DEFAULT_MEM_MIB: u64 = 512;

fn usage(msg: impl Into<String>) -> EngineError {
    EngineError::Usage(msg.into())
}

impl CreateConfig {
    fn vm(&self) -> bool {
        self.host.isolation == Isolation::Vm
    }

    /// Checks the configuration as a whole and splits it into what the spec builder takes and
    /// how the engine treats the container around it. Errors are usage errors: they name the
    /// flag (or field) and what to do instead.
    pub fn resolve(self) -> Result<(String, RunRequest, RunFlags), EngineError> {
        let vm = self.vm_request()?;
        let req = self.request()?;
        let flags = self.flags(vm)?;
        Ok((self.image, req, flags))
    }

    fn request(&self) -> Result<RunRequest, EngineError> {
        let h = &self.host;
        let mut seccomp = SeccompMode::Default;
        let mut no_new_privs_off = false;
        for opt in &h.security_opt {
            match opt.as_str() {
                "seccomp=unconfined" | "seccomp:unconfined" => seccomp = SeccompMode::Unconfined,
                "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {}
                "no-new-privileges=false" | "no-new-privileges:false" => no_new_privs_off = true,
                other => return Err(usage(format!("unsupported --security-opt {other:?}: berth accepts seccomp=unconfined and no-new-privileges[=true|false]"))),
            }
        }
        if no_new_privs_off && !h.privileged {
            return Err(usage("no-new-privileges=false needs --privileged: berth always sets no_new_privs with its seccomp filter"));
        }
        // The engine settles the container's network; the spec only needs to know about host.
        let network = match h.network.as_deref() {
            Some("host") => NetworkMode::Host,
            Some("none") => NetworkMode::None,
            _ if self.vm() => NetworkMode::None,
            _ => NetworkMode::Connected,
        };
        Ok(RunRequest {
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            workdir: self.working_dir.clone().filter(|w| !w.is_empty()),
            user: self.user.clone().filter(|u| !u.is_empty()),
            hostname: self.hostname.clone().filter(|h| !h.is_empty()),
            // Container mounts go through the engine (`RunFlags::mounts`), which resolves
            // volumes; a microVM takes --tmpfs as it is.
            volumes: vec![],
            tmpfs: if self.vm() { h.tmpfs.clone() } else { vec![] },
            read_only: h.read_only,
            init: h.init,
            cap_add: h.cap_add.clone(),
            cap_drop: h.cap_drop.clone(),
            seccomp,
            privileged: h.privileged,
            network,
            tty: self.tty,
            ulimits: h.ulimits.clone(),
        })
    }

    /// The microVM asked for, after refusing what a microVM cannot honour.
    fn vm_request(&self) -> Result<Option<VmRequest>, EngineError> {
        let h = &self.host;
        if !self.vm() {
            if h.cpus.is_some() || h.memory.is_some() {
                return Err(usage("--cpus and --memory size a microVM (--vm); berth does not limit containers through cgroups yet"));
            }
            return Ok(None);
        }
        let refuse = |flag: &str, why: &str| -> Result<(), EngineError> {
            Err(usage(format!("{flag} is not available with --vm: {why}")))
        };
        if !h.cap_add.is_empty() || !h.cap_drop.is_empty() || h.privileged {
            refuse("--cap-add/--cap-drop/--privileged", "the process in a microVM runs with the guest's own privileges; the VM itself is the wall")?;
        }
        if !h.security_opt.is_empty() {
            refuse(
                "--security-opt",
                "the guest agent applies no seccomp profile; the VM itself is the wall",
            )?;
        }
        let network = match h.network.as_deref() {
            None | Some("passt") | Some("default") | Some("bridge") => VmNetwork::Passt,
            Some("none") => VmNetwork::None,
            Some(other) => match other.parse::<NetworkRequest>() {
                Ok(NetworkRequest::Named(name)) => VmNetwork::Named(name),
                _ => {
                    refuse(
                        &format!("--network {other}"),
                        "a microVM's network is user-mode (passt, the default), none, or a network made with `berth network create`",
                    )?;
                    VmNetwork::None
                }
            },
        };
        if network == VmNetwork::None && (!h.publish.is_empty() || h.publish_all) {
            refuse(
                "-p/-P with --network none",
                "published ports reach a microVM through its user-mode network (passt, the default)",
            )?;
        }
        if !h.aliases.is_empty() && !matches!(network, VmNetwork::Named(_)) {
            refuse(
                "--network-alias",
                "aliases name a microVM on a user-defined network (--network NAME); its own user-mode network has no peers",
            )?;
        }
        let cpus = match h.cpus {
            None => VM_DEFAULT_CPUS,
            Some(c) if c.fract() == 0.0 && (1.0..=8.0).contains(&c) => c as u8,
            Some(c) => {
                return Err(usage(format!(
                    "invalid --cpus {c}: a microVM gets a whole number of vCPUs from 1 to 8"
                )))
            }
        };
        let mem_mib = match h.memory {
            None => VM_DEFAULT_MEM_MIB,
            Some(b) if b % (1 << 20) == 0 => b >> 20,
            Some(b) => {
                return Err(usage(format!(
                    "--memory {b} bytes is not a whole number of MiB: a microVM's memory is sized in MiB, e.g. 512M"
                )))
            }
        };
        Ok(Some(VmRequest {
            cpus,
            mem_mib,
            network,
        }))
    }

    fn log_config(&self) -> Result<LogConfig, EngineError> {
        let mut log = LogConfig::default();
        for (k, v) in &self.host.log_opts {
            match k.as_str() {
                "max-size" => {
                    log.max_size = crate::spec::parse_size(v).ok_or_else(|| {
                        usage(format!("invalid --log-opt {k}={v}: give a size like 10m"))
                    })?
                }
                "max-file" => {
                    log.max_files = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        usage(format!(
                            "invalid --log-opt {k}={v}: give a count of at least 1"
                        ))
                    })?
                }
                _ => {
                    return Err(usage(format!(
                    "unsupported --log-opt {k}={v}: berth's log takes max-size=SIZE and max-file=N"
                )))
                }
            }
        }
        Ok(log)
    }

    /// The engine's flags (everything but the spec's own fields).
    fn flags(&self, vm: Option<VmRequest>) -> Result<RunFlags, EngineError> {
        let h = &self.host;
        let mut mounts = h.mounts.clone();
        if vm.is_none() {
            for t in &h.tmpfs {
                mounts.push(MountRequest::parse_tmpfs(t)?);
            }
        }
        if h.auto_remove && h.restart != RestartPolicy::No {
            return Err(usage(format!("--rm and --restart {} conflict: a container removed when it exits cannot restart; drop one of them", h.restart)));
        }
        // A microVM's network was chosen by vm_request (which refuses -p/-P with --network
        // none); only the ports to publish and the aliases come from here.
        let request = match (&vm, h.network.as_deref()) {
            (Some(_), _) => NetworkRequest::None,
            (None, None) => NetworkRequest::Default,
            (None, Some(n)) => n.parse()?,
        };
        let network = NetworkOptions {
            request,
            publish: h.publish.clone(),
            publish_all: h.publish_all,
            aliases: h.aliases.clone(),
        };
        Ok(RunFlags {
            name: self.name.clone().filter(|n| !n.is_empty()),
            remove: h.auto_remove,
            attach_stdin: self.open_stdin,
            vm,
            network,
            restart: h.restart,
            log: self.log_config()?,
            mounts,
            volumes_from: h.volumes_from.clone(),
            stop_timeout: self.stop_timeout,
            userns: h
                .userns
                .as_deref()
                .unwrap_or("")
                .parse()
                .map_err(|e: crate::container::idmap::UsernsModeError| usage(e.to_string()))?,
            labels: self.labels.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> CreateConfig {
        CreateConfig {
            image: "img".into(),
            host: HostConfig {
                isolation: Isolation::Vm,
                ..HostConfig::default()
            },
            ..CreateConfig::default()
        }
    }

    fn usage_of(c: CreateConfig) -> String {
        match c.resolve() {
            Err(EngineError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn a_microvm_refuses_what_it_cannot_honour() {
        let mut c = vm();
        c.host.cap_add = vec!["NET_ADMIN".into()];
        assert!(usage_of(c).contains("not available with --vm"));
        let mut c = vm();
        c.host.network = Some("none".into());
        c.host.publish = vec!["80".parse().unwrap()];
        assert!(usage_of(c).contains("-p/-P with --network none"));
        let mut c = vm();
        c.host.cpus = Some(1.5);
        assert!(usage_of(c).contains("whole number of vCPUs"));
        let mut c = vm();
        c.host.memory = Some(1000);
        assert!(usage_of(c).contains("whole number of MiB"));
    }

    #[test]
    fn a_microvm_is_sized_by_cpus_and_memory() {
        let mut c = vm();
        c.host.cpus = Some(2.0);
        c.host.memory = Some(256 << 20);
        let (_, req, flags) = c.resolve().unwrap();
        let m = flags.vm.unwrap();
        assert_eq!((m.cpus, m.mem_mib), (2, 256));
        assert_eq!(m.network, VmNetwork::Passt);
        assert_eq!(req.network, NetworkMode::None);
    }

    #[test]
    fn a_container_cannot_be_sized_yet_and_rm_conflicts_with_restart() {
        let mut c = CreateConfig::default();
        c.host.memory = Some(64 << 20);
        assert!(usage_of(c).contains("--vm"));
        let mut c = CreateConfig::default();
        c.host.auto_remove = true;
        c.host.restart = "always".parse().unwrap();
        assert!(usage_of(c).contains("conflict"));
    }

    #[test]
    fn security_options_and_log_options_are_checked() {
        let mut c = CreateConfig::default();
        c.host.security_opt = vec!["apparmor=x".into()];
        assert!(usage_of(c).contains("--security-opt"));
        let mut c = CreateConfig::default();
        c.host.log_opts = vec![("max-file".into(), "0".into())];
        assert!(usage_of(c).contains("max-file"));
        let mut c = CreateConfig::default();
        c.host.log_opts = vec![("max-size".into(), "1m".into())];
        let (_, _, flags) = c.resolve().unwrap();
        assert_eq!(flags.log.max_size, 1 << 20);
    }

    #[test]
    fn docker_s_default_network_names_are_the_default_network() {
        for n in ["default", "bridge"] {
            let c = CreateConfig {
                host: HostConfig {
                    network: Some(n.into()),
                    ..HostConfig::default()
                },
                ..CreateConfig::default()
            };
            let (_, _, flags) = c.resolve().unwrap();
            assert_eq!(flags.network.request, NetworkRequest::Default);
        }
    }
}
