//! Image config + run request -> OCI runtime spec: the one backend-neutral description of a
//! process. Both walls (container and microVM) run exactly what this produces.

pub mod caps;
pub mod seccomp;
pub mod ulimit;
pub mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceBuilder, LinuxDeviceType,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::container::idmap::{IdMapping, IdMode};
use crate::container::INIT_ANNOTATION;

/// Errors turning a run request into a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid volume {0:?}: {1}")]
    Volume(String, String),
    #[error("invalid --tmpfs {0:?}: the path must be absolute, e.g. --tmpfs /run")]
    Tmpfs(String),
    #[error("the working directory {0:?} is invalid: it needs to be an absolute path")]
    Workdir(String),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error("{kind} {id} does not exist in this user namespace (it maps {mapped}); {fix}")]
    Unmapped {
        kind: &'static str,
        id: u32,
        mapped: String,
        fix: String,
    },
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error("building the runtime spec: {0}")]
    Build(String),
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A network namespace with only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A network namespace of its own that berth connects (user-mode network or bridge).
    Connected,
}

/// `--security-opt seccomp=...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SeccompMode {
    #[default]
    Default,
    Unconfined,
}

/// One `-v HOST:CTR[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindVolume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

impl FromStr for BindVolume {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let err = |why: &str| SpecError::Volume(s.to_string(), why.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let (host, ctr, mode) = match parts.as_slice() {
            [h, c] => (*h, *c, ""),
            [h, c, m] => (*h, *c, *m),
            _ => return Err(err("expected HOST:CONTAINER[:ro|rw]")),
        };
        if !host.starts_with('/') {
            return Err(err("the host path must be absolute (named volumes are not part of this release: use a host directory)"));
        }
        if !ctr.starts_with('/') {
            return Err(err("the container path must be absolute"));
        }
        let mut read_only = false;
        for m in mode.split(',').filter(|m| !m.is_empty()) {
            match m {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" => {}
                other => return Err(err(&format!("unknown option {other:?}; use ro or rw"))),
            }
        }
        Ok(BindVolume {
            host: host.into(),
            container: ctr.into(),
            read_only,
        })
    }
}

/// Everything `berth run` asks for, after the CLI has parsed and the engine has read files.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub cmd: Vec<String>,
    /// Replaces the image's entrypoint (and drops its Cmd); an empty list clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` pairs, in order; later ones win.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub volumes: Vec<BindVolume>,
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: SeccompMode,
    pub privileged: bool,
    pub network: NetworkMode,
    pub tty: bool,
    /// `--ulimit`: the process's resource limits, in the order given.
    pub ulimits: Vec<ulimit::Ulimit>,
}

/// Host-side files and facts the spec refers to.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    /// The container's id; its first 12 hex digits are the default hostname.
    pub id: &'a str,
    /// The rootfs entry (destination "/") from the rootfs driver, if it mounts one.
    pub root_mount: Option<Mount>,
    /// The rootfs mount point (absolute).
    pub root_path: PathBuf,
    /// Files for /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub etc_dir: PathBuf,
    pub ids: &'a IdMapping,
    /// The image's /etc/passwd and /etc/group, when present.
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// A user namespace to join instead of creating one (a user-defined network's).
    pub join_userns: Option<PathBuf>,
    /// `--userns=keep-id`: the user the process runs as (unless `-u`), added to the
    /// container's /etc/passwd view where the image lacks it.
    pub keep_id: Option<user::KeepIdUser>,
}

/// The working directory of the process: `-w`, else the image's, else `/`.
fn working_dir(req: &RunRequest, image: Option<&oci_spec::image::Config>) -> String {
    req.workdir
        .clone()
        .or_else(|| {
            image
                .and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".into())
}

/// The /etc/passwd and /etc/group of a keep-id container (`etc_dir/passwd` and
/// `etc_dir/group`, bind-mounted over the image's); `None` for other containers. The added
/// user's home is the working directory, as podman makes it.
pub fn keep_id_etc(
    req: &RunRequest,
    config: &ImageConfiguration,
    ctx: &SpecContext,
) -> Option<(String, String)> {
    let user = ctx.keep_id.as_ref()?;
    let home = working_dir(req, config.config().as_ref());
    Some(user::with_user(
        ctx.passwd.as_deref(),
        ctx.group.as_deref(),
        user,
        &home,
    ))
}

/// Docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn opts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts(options))
        .build()
        .map_err(|e| SpecError::Build(e.to_string()))
}

/// Merges `K=V` lists: later keys replace earlier ones, order of first appearance kept.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for kv in base.iter().chain(overrides) {
        let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv).to_string();
        match index.get(&key) {
            Some(&i) => out[i] = kv.clone(),
            None => {
                index.insert(key, out.len());
                out.push(kv.clone());
            }
        }
    }
    out
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key))
}

fn to_oci_caps(names: &[String]) -> oci_spec::runtime::Capabilities {
    names
        .iter()
        .filter_map(|n| Capability::from_str(n.trim_start_matches("CAP_")).ok())
        .collect()
}

/// The process arguments: Docker's Entrypoint/Cmd rules.
pub fn process_args(req: &RunRequest, image: Option<&oci_spec::image::Config>) -> Vec<String> {
    let image_ep = image
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let image_cmd = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
    match &req.entrypoint {
        // --entrypoint replaces the image's Entrypoint and drops its Cmd.
        Some(ep) => {
            let mut args = ep.clone();
            args.extend(req.cmd.iter().cloned());
            args
        }
        None => {
            let mut args = image_ep;
            if req.cmd.is_empty() {
                args.extend(image_cmd);
            } else {
                args.extend(req.cmd.iter().cloned());
            }
            args
        }
    }
}

/// Builds the runtime spec for `req` on an image with `config`.
pub fn build(
    req: &RunRequest,
    config: &ImageConfiguration,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    let image = config.config().as_ref();
    let args = process_args(req, image);

    // keep-id runs as the user's ids unless `-u` says otherwise, over the image's USER.
    let user_spec = req
        .user
        .clone()
        .or_else(|| ctx.keep_id.as_ref().map(|k| format!("{}:{}", k.uid, k.gid)))
        .or_else(|| image.and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let keep_id_etc = keep_id_etc(req, config, ctx);
    let (passwd, group) = match &keep_id_etc {
        Some((p, g)) => (Some(p.as_str()), Some(g.as_str())),
        None => (ctx.passwd.as_deref(), ctx.group.as_deref()),
    };
    let user = user::resolve(&user_spec, passwd, group)?;

    for (kind, id, ok, ranges) in [
        ("user", user.uid, ctx.ids.maps_uid(user.uid), &ctx.ids.uid),
        ("group", user.gid, ctx.ids.maps_gid(user.gid), &ctx.ids.gid),
    ] {
        if !ok {
            let mapped = ranges
                .iter()
                .map(|r| format!("{}-{}", r.container, r.container + r.size - 1))
                .collect::<Vec<_>>()
                .join(", ");
            let fix = if ctx.ids.mode == IdMode::SingleId {
                "only root exists without a subordinate id range: add `USER:100000:65536` to /etc/subuid and /etc/subgid (`berth doctor`)".to_string()
            } else {
                "use an id inside that range".to_string()
            };
            return Err(SpecError::Unmapped {
                kind,
                id,
                mapped: format!("ids {mapped}"),
                fix,
            });
        }
    }

    let cwd = working_dir(req, image);
    if !cwd.starts_with('/') {
        return Err(SpecError::Workdir(cwd));
    }

    let hostname = req.hostname.clone().unwrap_or_else(|| match req.network {
        NetworkMode::Host => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| ctx.id[..12.min(ctx.id.len())].to_string()),
        NetworkMode::None | NetworkMode::Connected => ctx.id[..12.min(ctx.id.len())].to_string(),
    });

    let image_env = image.and_then(|c| c.env().clone()).unwrap_or_default();
    let mut env = merge_env(&image_env, &req.env);
    if !has_env(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let mut extra = vec![format!("HOSTNAME={hostname}")];
    if req.tty {
        extra.push("TERM=xterm".into());
    }
    if !has_env(&env, "HOME") {
        extra.push(format!("HOME={}", user.home));
    }
    // Image and user values win over berth's defaults.
    let env = merge_env(&extra, &env);

    let cap_names = caps::effective_caps(&req.cap_add, &req.cap_drop, req.privileged)?;
    let capabilities = process_capabilities(&cap_names)?;

    let mut process = ProcessBuilder::default()
        .terminal(req.tty)
        .args(args)
        .env(env)
        .cwd(&cwd)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .umask(0o022u32)
                .build()
                .map_err(|e| SpecError::Build(e.to_string()))?,
        )
        .capabilities(capabilities)
        .no_new_privileges(!req.privileged)
        .build()
        .map_err(|e| SpecError::Build(e.to_string()))?;
    if !req.ulimits.is_empty() {
        process.set_rlimits(Some(ulimit::rlimits(&req.ulimits)));
    }

    let mounts = default_mounts(req, ctx)?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if req.network != NetworkMode::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if ctx.ids.uses_userns() && ctx.join_userns.is_none() {
        namespaces.push(LinuxNamespaceType::User);
    }
    let mut namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SpecError::Build(e.to_string()))?;
    if let Some(path) = &ctx.join_userns {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(path)
                .build()
                .map_err(|e| SpecError::Build(e.to_string()))?,
        );
    }

    let devices = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .map(|(p, maj, min)| {
        LinuxDeviceBuilder::default()
            .path(*p)
            .typ(LinuxDeviceType::C)
            .major(*maj as i64)
            .minor(*min as i64)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()
    })
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| SpecError::Build(e.to_string()))?;

    let map = |ranges: &[crate::container::idmap::IdRange]| {
        ranges
            .iter()
            .map(|r| {
                LinuxIdMappingBuilder::default()
                    .container_id(r.container)
                    .host_id(r.host)
                    .size(r.size)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SpecError::Build(e.to_string()))
    };

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(devices);
    if ctx.join_userns.is_none() {
        linux = linux
            .uid_mappings(map(&ctx.ids.uid)?)
            .gid_mappings(map(&ctx.ids.gid)?);
    }
    if req.privileged {
        // Set explicitly: oci-spec's defaults would bring masked paths back.
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(opts(MASKED_PATHS))
            .readonly_paths(opts(READONLY_PATHS));
        if req.seccomp == SeccompMode::Default {
            linux = linux.seccomp(seccomp::default_profile(&cap_names));
        }
    }
    let linux = linux.build().map_err(|e| SpecError::Build(e.to_string()))?;

    let mut annotations = HashMap::new();
    if req.init {
        annotations.insert(INIT_ANNOTATION.to_string(), "true".to_string());
    }

    SpecBuilder::default()
        .version("1.2.0")
        .root(
            RootBuilder::default()
                .path(&ctx.root_path)
                .readonly(req.read_only)
                .build()
                .map_err(|e| SpecError::Build(e.to_string()))?,
        )
        .hostname(hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(|e| SpecError::Build(e.to_string()))
}

fn default_mounts(req: &RunRequest, ctx: &SpecContext) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = Vec::new();
    if let Some(root) = &ctx.root_mount {
        mounts.push(root.clone());
    }
    mounts.push(mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    )?);
    mounts.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    )?);
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if ctx.ids.mode == IdMode::HostRoot || ctx.ids.maps_gid(5) {
        pts.push("gid=5");
    }
    mounts.push(mount("/dev/pts", "devpts", "devpts", &pts)?);
    mounts.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    )?);
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    )?);
    match req.network {
        NetworkMode::None | NetworkMode::Connected => mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?),
        // sysfs can only be mounted with a network namespace of our own.
        NetworkMode::Host => mounts.push(mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?),
    }
    let user_files: &[(&str, &str)] = if ctx.keep_id.is_some() {
        &[("/etc/passwd", "passwd"), ("/etc/group", "group")]
    } else {
        &[]
    };
    for &(dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ]
    .iter()
    .chain(user_files)
    {
        let src = ctx.etc_dir.join(file);
        mounts.push(mount(
            dest,
            "bind",
            &src.to_string_lossy(),
            &["rbind", "rprivate"],
        )?);
    }
    for t in &req.tmpfs {
        let (path, extra) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !path.starts_with('/') {
            return Err(SpecError::Tmpfs(t.clone()));
        }
        let mut o = vec!["nosuid", "nodev", "noexec"];
        o.extend(extra.split(',').filter(|s| !s.is_empty()));
        mounts.push(mount(path, "tmpfs", "tmpfs", &o)?);
    }
    for v in &req.volumes {
        let mut o = vec!["rbind", "rprivate"];
        if v.read_only {
            o.push("ro");
        }
        mounts.push(mount(
            &v.container.to_string_lossy(),
            "bind",
            &v.host.to_string_lossy(),
            &o,
        )?);
    }
    Ok(mounts)
}

/// Makes `spec` join the user namespace at `path` (a user-defined network's) instead of making
/// one, as [`build`] does when given `join_userns`: the joined namespace's owner has mapped
/// the ids, so the spec maps none. A spec that joins one already is pointed at `path`.
pub fn join_user_namespace(spec: &mut Spec, path: &Path) -> Result<(), SpecError> {
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| SpecError::Build("the spec has no linux section".into()))?;
    let mut namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::User)
        .collect();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .path(path)
            .build()
            .map_err(|e| SpecError::Build(e.to_string()))?,
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    Ok(())
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf for the container into `dir`.
pub fn write_etc_files(dir: &Path, hostname: &str, network: NetworkMode) -> std::io::Result<()> {
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    match network {
        NetworkMode::Host => {
            if let Ok(h) = std::fs::read_to_string("/etc/hosts") {
                hosts = h;
            }
        }
        NetworkMode::None | NetworkMode::Connected => {
            hosts.push_str(&format!("127.0.1.1\t{hostname}\n"))
        }
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(dir.join("resolv.conf"), resolv)
}

/// A size with an optional k/m/g suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mul) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mul).filter(|n| *n > 0)
}

/// A process's capabilities: `names` bounding, effective and permitted, none inherited.
pub fn process_capabilities(
    names: &[String],
) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    let cap_set = to_oci_caps(names);
    let empty = oci_spec::runtime::Capabilities::new();
    LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(empty.clone())
        .ambient(empty)
        .build()
        .map_err(|e| SpecError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse() {
        let v: BindVolume = "/a:/b:ro".parse().unwrap();
        assert!(v.read_only);
        assert_eq!(v.container, PathBuf::from("/b"));
        assert!("data:/b".parse::<BindVolume>().is_err());
        assert!("/a:b".parse::<BindVolume>().is_err());
        assert!("/a:/b:bogus".parse::<BindVolume>().is_err());
    }

    #[test]
    fn env_merge_overrides_in_place() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let merged = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    fn cfg(ep: Option<Vec<&str>>, cmd: Option<Vec<&str>>) -> oci_spec::image::Config {
        let mut b = oci_spec::image::ConfigBuilder::default();
        if let Some(ep) = ep {
            b = b.entrypoint(ep.into_iter().map(String::from).collect::<Vec<_>>());
        }
        if let Some(cmd) = cmd {
            b = b.cmd(cmd.into_iter().map(String::from).collect::<Vec<_>>());
        }
        b.build().unwrap()
    }

    #[test]
    fn joining_a_user_namespace_drops_the_spec_s_own_and_its_maps() {
        let ns = |t| LinuxNamespaceBuilder::default().typ(t).build().unwrap();
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(1000u32)
            .size(1u32)
            .build()
            .unwrap();
        let linux = LinuxBuilder::default()
            .namespaces(vec![
                ns(LinuxNamespaceType::Pid),
                ns(LinuxNamespaceType::Network),
                ns(LinuxNamespaceType::User),
            ])
            .uid_mappings(vec![map])
            .gid_mappings(vec![map])
            .build()
            .unwrap();
        let mut spec = SpecBuilder::default().linux(linux).build().unwrap();
        for path in ["/proc/10/ns/user", "/proc/20/ns/user"] {
            join_user_namespace(&mut spec, Path::new(path)).unwrap();
            let linux = spec.linux().as_ref().unwrap();
            let users: Vec<_> = linux
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .filter(|n| n.typ() == LinuxNamespaceType::User)
                .collect();
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].path().as_deref(), Some(Path::new(path)));
            assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
            assert_eq!(linux.namespaces().as_ref().unwrap().len(), 3);
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let c = cfg(Some(vec!["/ep", "-x"]), Some(vec!["default"]));
        let mut req = RunRequest::default();
        assert_eq!(process_args(&req, Some(&c)), vec!["/ep", "-x", "default"]);
        req.cmd = vec!["mine".into()];
        assert_eq!(process_args(&req, Some(&c)), vec!["/ep", "-x", "mine"]);
        req.entrypoint = Some(vec!["/other".into()]);
        assert_eq!(process_args(&req, Some(&c)), vec!["/other", "mine"]);
        req.cmd.clear();
        assert_eq!(
            process_args(&req, Some(&c)),
            vec!["/other"],
            "--entrypoint drops the image Cmd"
        );
    }
}
