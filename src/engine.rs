//! The engine: the one façade the CLI (and later the REST API) calls. It joins the image
//! store, the layer store, the rootfs drivers, the spec builder and the container records,
//! and hands a bundle to a backend.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::container::{self, IdMapping};
use crate::image::registry::{
    self, Credentials, PullOptions, PulledImage, PushOptions, PushedImage, RegistriesConfig,
    RegistryError,
};
use crate::image::{
    ArchiveFormat, ContainerUse, HistoryEntry, ImageError, ImageInspect, ImageRemoval, ImageStore,
    ImageSummary, LoadedImage, PruneReport, ResolvedImage,
};
use crate::monitor::policy::RestartPolicy;
use crate::net::{self, NetError, NetworkOptions, NetworkStore, PublishedPort};
use crate::paths::Dirs;
use crate::rootfs::{self, Driver, LayerStore, RootfsError};
use crate::spec::{self, RunRequest, SpecContext, SpecError};
use crate::state::volumes::{VolumeError, VolumeStore};
use crate::state::{ContainerRecord, ContainerStore, LogConfig, StateError, Status};
use crate::vm::guest::{self, GuestError};
use crate::vm::sandbox::{self, SandboxError};

mod commit;
mod config;
mod connect;
mod copy;
mod exec;
pub mod filters;
mod inspect;
mod lifecycle;
mod logs;
pub mod usage;
mod vm;
mod volumes;

pub use commit::CommitOptions;
pub use config::{CreateConfig, HostConfig, VM_DEFAULT_CPUS, VM_DEFAULT_MEM_MIB};
pub use copy::{CopyEnd, CopyOptions, PathStat};
pub use exec::{cgroup_note, ContainerProcess, CpuTotals, ExecOptions, Stats};
pub use inspect::{state_of, status_text};
pub use lifecycle::{parse_signal, ExitedArgs, KillNotice, StartedContainer, DEFAULT_STOP_TIMEOUT};
pub use logs::LogsOptions;
pub use volumes::{MountRequest, MountSource, VolumeInspect};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Container(#[from] container::ContainerError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Talking to (or starting) a sandbox's monitor failed.
    #[error("{0}")]
    Monitor(String),
    #[error("container {0} is not running: start it with `berth start {0}`")]
    NotRunning(String),
    /// An image neither stored here nor pulled: the local name it likely misspells, and,
    /// apart, why the pull failed.
    #[error("no such image locally: {image}{}; pulling it failed: {pull}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    NoSuchImage {
        image: String,
        suggestion: Option<String>,
        #[source]
        pull: Box<RegistryError>,
    },
    #[error("{0}")]
    Usage(String),
    #[error("Could not find the file {path} in container {container}: check the path, e.g. with `docker exec {container} ls` on its directory")]
    NoSuchPath { container: String, path: String },
}

impl EngineError {
    /// The exit status `berth run` reports for this error, as Docker does: 125 for berth's own
    /// failures, 126 when the command cannot be invoked, 127 when it is not found.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Container(container::ContainerError::Start { code, .. }) => *code,
            EngineError::Sandbox(SandboxError::Start { code, .. }) => *code,
            _ => 125,
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Io { what, path, source }
}

/// Settings that change how the engine works.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Forces a rootfs driver instead of the detected one.
    pub storage_driver: Option<String>,
}

/// How `run` and `create` treat the container around the process.
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    pub name: Option<String>,
    pub remove: bool,
    /// `-i`: stdin attached (foreground), kept open for `attach` (monitor).
    pub attach_stdin: bool,
    /// Run in a microVM instead of a container.
    pub vm: Option<VmRequest>,
    /// `--network`, `-p`, `-P`, `--network-alias`.
    pub network: NetworkOptions,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--log-opt max-size=...,max-file=...`.
    pub log: LogConfig,
    /// `-v`, `--mount`, `--tmpfs`, in order.
    pub mounts: Vec<MountRequest>,
    /// `--volumes-from CONTAINER[:ro|rw]`.
    pub volumes_from: Vec<String>,
    /// `--stop-timeout`.
    pub stop_timeout: Option<u32>,
    /// `--userns`.
    pub userns: container::UsernsMode,
    /// `--label`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The machine a `run --vm` sandbox gets.
#[derive(Debug, Clone)]
pub struct VmRequest {
    pub cpus: u8,
    pub mem_mib: u64,
    /// The guest's network (published ports come from the run's `-p`/`-P`, aliases from
    /// `--network-alias`).
    pub network: VmNetwork,
}

pub use crate::state::VmNetwork;

/// Where a bundle's root file system is: the rootfs driver's mount, if any, and its path.
struct BundleRoot {
    mount: Option<oci_spec::runtime::Mount>,
    path: PathBuf,
}

/// The command line a spec runs (what `ps` and `inspect` show).
fn spec_command(spec: &oci_spec::runtime::Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
}

/// Writes `spec` as the bundle `dir`'s config.json.
fn save_spec(dir: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), EngineError> {
    let config = dir.join("config.json");
    spec.save(&config).map_err(|e| EngineError::Io {
        what: "writing",
        path: config.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The user a `--userns=keep-id` container runs as: the caller's name, and its ids or those
/// the mode gives.
pub(crate) fn keep_id_user(mode: container::UsernsMode) -> Option<spec::user::KeepIdUser> {
    let container::UsernsMode::KeepId { uid, gid } = mode else {
        return None;
    };
    let me = nix::unistd::geteuid();
    let name = nix::unistd::User::from_uid(me)
        .ok()
        .flatten()
        .map_or_else(|| "user".to_string(), |u| u.name);
    Some(spec::user::KeepIdUser {
        name,
        uid: uid.unwrap_or(me.as_raw()),
        gid: gid.unwrap_or(nix::unistd::getegid().as_raw()),
    })
}

/// The rootfs "driver" recorded for microVM sandboxes.
const VM_DRIVER: &str = "microvm";

pub struct Engine {
    pub dirs: Dirs,
    pub ids: IdMapping,
    images: ImageStore,
    layers: LayerStore,
    containers: ContainerStore,
    volumes: VolumeStore,
    forced_driver: Option<Driver>,
    events: crate::state::events::EventLog,
}

/// Facts for `berth info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub version: &'static str,
    pub rootfs_driver: String,
    pub userns_mode: String,
    pub uid_map: Vec<String>,
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub images: usize,
    pub containers: usize,
    /// The guest kernel and agent `run --vm` boots, if installed.
    pub vm_kernel: Option<PathBuf>,
    pub vm_agent: Option<PathBuf>,
    /// Whether `run --vm` can run here, or why not.
    pub kvm: String,
    /// The default network backend and the tools found.
    pub network: net::NetInfo,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((nanos >> (i % 16 * 8)) as u8)
                ^ (std::process::id() as u8).wrapping_mul(i as u8 + 1);
        }
    }
    hex::encode(buf)
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble",
    "proud", "quiet", "sharp", "tender", "vivid", "witty", "bold", "clever", "daring", "jolly",
];
const NOUNS: &[&str] = &[
    "anchor", "buoy", "cabin", "dock", "ferry", "galley", "harbor", "jetty", "keel", "lantern",
    "mast", "oar", "pier", "quay", "rudder", "sail", "tide", "wharf", "yacht", "compass",
];

fn generated_name(id: &str) -> String {
    let b = hex::decode(&id[..4]).unwrap_or_else(|_| vec![0, 0]);
    format!(
        "{}_{}_{}",
        ADJECTIVES[b[0] as usize % ADJECTIVES.len()],
        NOUNS[b[1] as usize % NOUNS.len()],
        &id[4..8]
    )
}

impl Engine {
    pub fn open(opts: EngineOptions) -> Result<Engine, EngineError> {
        let dirs = Dirs::from_env();
        for d in [&dirs.data, &dirs.runtime] {
            std::fs::create_dir_all(d).map_err(io("creating", d))?;
        }
        let forced_driver = opts
            .storage_driver
            .or_else(|| {
                std::env::var("BERTH_STORAGE_DRIVER")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .map(|s| s.parse())
            .transpose()?;
        Ok(Engine {
            images: ImageStore::open(&dirs.data)?,
            layers: LayerStore::new(dirs.data.join("layers")),
            volumes: VolumeStore::new(dirs.data.join("volumes")),
            containers: ContainerStore::new(
                dirs.data.join("containers"),
                dirs.runtime.join("containers"),
            ),
            ids: IdMapping::for_current_user(),
            events: crate::state::events::EventLog::new(&dirs.runtime),
            dirs,
            forced_driver,
        })
    }

    /// The id map of a container with `--userns=MODE`; an error says why the mode cannot be
    /// honoured here.
    pub(crate) fn ids_for(&self, mode: container::UsernsMode) -> Result<IdMapping, EngineError> {
        match mode {
            container::UsernsMode::Default => Ok(self.ids.clone()),
            mode => IdMapping::for_userns(mode).map_err(|e| EngineError::Usage(e.to_string())),
        }
    }

    /// Where the layers of a container with `--userns=MODE` are unpacked: under another map
    /// the image's files need other owners on the host (podman copies the image's layers
    /// with shifted owners for keep-id, too), so each map keeps its own copy.
    pub(crate) fn layers_for(&self, mode: container::UsernsMode) -> LayerStore {
        match mode {
            container::UsernsMode::KeepId { .. } => {
                let ids = IdMapping::for_userns(mode).ok();
                let key = ids.map_or_else(String::new, |m| {
                    let inner = |r: &[container::idmap::IdRange]| {
                        r.iter()
                            .find(|r| r.size == 1 && r.container != 0)
                            .map_or(0, |r| r.container)
                    };
                    format!("{}-{}", inner(&m.uid), inner(&m.gid))
                });
                self.layers.variant(&format!("keep-id-{key}"))
            }
            _ => self.layers.clone(),
        }
    }

    /// The rootfs driver in use (forced, or the fastest that works here).
    pub fn driver(&self) -> Driver {
        self.forced_driver.unwrap_or_else(|| {
            let scratch = self.dirs.data.join("tmp");
            let _ = std::fs::create_dir_all(&scratch);
            rootfs::detect(&self.dirs.data.join("driver-probe"), &scratch, &self.ids)
        })
    }

    pub fn load(&self, archive: &Path) -> Result<Vec<LoadedImage>, EngineError> {
        Ok(self.images.load_archive(archive)?)
    }

    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        Ok(self.images.list()?)
    }

    /// `berth tag SOURCE TARGET`.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<(), EngineError> {
        Ok(self.images.tag(source, target)?)
    }

    /// `berth rmi [-f] REF`: untags or deletes one image, refusing an image a
    /// container uses unless `force` (always when the container runs), then
    /// deletes the unpacked layers no remaining image uses.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<ImageRemoval, EngineError> {
        let users = self.container_uses();
        let removal = self.images.remove(reference, force, &users)?;
        self.remove_unused_layers(&removal.unused_layers)?;
        Ok(removal)
    }

    /// Which containers use which image, for rmi and prune.
    fn container_uses(&self) -> Vec<ContainerUse> {
        self.containers()
            .iter()
            .map(|c| ContainerUse {
                id: c.id.clone(),
                image_id: c.image_id.clone(),
                running: ContainerStore::is_running(c),
            })
            .collect()
    }

    /// Removes the unpacked layers no image uses any more.
    fn remove_unused_layers(&self, unused: &[String]) -> Result<(), EngineError> {
        if unused.is_empty() {
            return Ok(());
        }
        // An image loaded meanwhile may use a layer again: check once more.
        let in_use = self.images.diff_ids_in_use()?;
        let dirs: Vec<PathBuf> = unused
            .iter()
            .filter(|d| !in_use.contains(*d))
            .map(|d| self.layers.path(d))
            .collect();
        // Copies under other id maps (keep-id) go with the layer; their owners are ids of the
        // same ranges, so berth's own map removes them.
        let mut dirs = dirs;
        for variant in self.layers.variants() {
            let copies: Vec<PathBuf> = unused
                .iter()
                .filter(|d| !in_use.contains(*d))
                .map(|d| variant.path(d))
                .collect();
            dirs.extend(copies);
        }
        for d in &dirs {
            let _ = std::fs::remove_file(d.with_extension("lock"));
        }
        rootfs::remove_owned_tree(dirs, &self.ids)?;
        Ok(())
    }

    /// `berth image inspect REF`.
    pub fn inspect_image(&self, reference: &str) -> Result<ImageInspect, EngineError> {
        Ok(self.images.inspect(reference)?)
    }

    /// `berth history REF`: newest step first.
    pub fn image_history(&self, reference: &str) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.images.history(reference)?)
    }

    /// `berth save`: the images `refs` name as one archive, to `output` (written
    /// to a temporary file and renamed) or, without one, to `out`.
    pub fn save_images(
        &self,
        refs: &[String],
        format: ArchiveFormat,
        output: Option<&Path>,
        out: &mut dyn std::io::Write,
    ) -> Result<(), EngineError> {
        match output {
            Some(path) => self.images.save_to_file(refs, format, path)?,
            None => self.images.save_to_writer(refs, format, out)?,
        }
        Ok(())
    }

    /// `berth pull`: fetches an image (short names go to the default search registry).
    pub fn pull(&self, reference: &str, opts: &PullOptions) -> Result<PulledImage, EngineError> {
        let config = RegistriesConfig::load()?;
        let r = config.qualify(reference).map_err(RegistryError::from)?;
        Ok(registry::pull(&self.images, &config, &r, opts)?)
    }

    /// `berth push SOURCE [DESTINATION]`.
    pub fn push(
        &self,
        source: &str,
        destination: Option<&str>,
        opts: &PushOptions,
    ) -> Result<PushedImage, EngineError> {
        let config = RegistriesConfig::load()?;
        Ok(registry::push(
            &self.images,
            &config,
            source,
            destination,
            opts,
        )?)
    }

    /// `berth login`: checks the credentials with the registry, then saves them;
    /// returns the registry host and the auth file.
    pub fn login(
        &self,
        host: &str,
        creds: &Credentials,
        tls_verify: bool,
    ) -> Result<(String, PathBuf), EngineError> {
        let config = RegistriesConfig::load()?;
        let host = registry::normalize_host(host)?;
        let file = registry::login(&config, &host, creds, tls_verify)?;
        Ok((host, file))
    }

    /// The API's `/auth`: checks the credentials with the registry, keeping nothing (the
    /// client keeps them); returns the registry host.
    pub fn check_login(
        &self,
        host: &str,
        creds: &Credentials,
        tls_verify: bool,
    ) -> Result<String, EngineError> {
        let config = RegistriesConfig::load()?;
        let host = registry::normalize_host(host)?;
        registry::check_login(&config, &host, creds, tls_verify)?;
        Ok(host)
    }

    /// `berth logout`: forgets the credentials for a registry; returns its host.
    pub fn logout(&self, host: &str) -> Result<String, EngineError> {
        let host = registry::normalize_host(host)?;
        registry::logout(&host)?;
        Ok(host)
    }

    /// `berth image prune [-a]`: deletes images without a name (all with
    /// `all`) that no container uses and that pass `filters` (`label`, `label!`,
    /// `until`), and the unpacked layers they free.
    pub fn prune_images(
        &self,
        all: bool,
        filters: &[(String, String)],
    ) -> Result<PruneReport, EngineError> {
        let users = self.container_uses();
        let only = self.prune_candidates(filters)?;
        let report = self.images.prune(all, &users, only.as_ref())?;
        self.remove_unused_layers(&report.unused_layers)?;
        Ok(report)
    }

    /// The stored image `image` names; a name the store lacks is pulled
    /// first, as `docker run` does. The pull's threads are gone when this
    /// returns, so the caller may fork.
    fn resolve_or_pull(&self, image: &str) -> Result<ResolvedImage, EngineError> {
        match self.images.resolve(image) {
            Err(ImageError::NotFound(_)) if !image.starts_with("sha256:") => {}
            other => return Ok(other?),
        }
        let config = RegistriesConfig::load()?;
        let Ok(r) = config.qualify(image) else {
            return Ok(self.images.resolve(image)?);
        };
        let canonical = r.to_string();
        match self.images.resolve(&canonical) {
            Err(ImageError::NotFound(_)) => {}
            other => return Ok(other?),
        }
        eprintln!("Unable to find image '{}' locally", r.familiar());
        if let Err(pull) = registry::pull(&self.images, &config, &r, &PullOptions::default()) {
            let local: Vec<String> = self
                .images
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| i.repository != "<none>" && i.tag != "<none>")
                .map(|i| format!("{}:{}", i.repository, i.tag))
                .collect();
            let suggestion =
                crate::image::reference::closest(image, local.iter().map(String::as_str))
                    .map(str::to_string);
            return Err(EngineError::NoSuchImage {
                image: image.to_string(),
                suggestion,
                pull: Box::new(pull),
            });
        }
        Ok(self.images.resolve(&canonical)?)
    }

    pub fn info(&self) -> Info {
        let fmt =
            |r: &crate::container::idmap::IdRange| format!("{} {} {}", r.container, r.host, r.size);
        Info {
            version: env!("CARGO_PKG_VERSION"),
            rootfs_driver: self.driver().to_string(),
            userns_mode: format!("{:?}", self.ids.mode),
            uid_map: self.ids.uid.iter().map(fmt).collect(),
            data_dir: self.dirs.data.clone(),
            runtime_dir: self.dirs.runtime.clone(),
            images: self.images.list().map(|l| l.len()).unwrap_or(0),
            containers: self.containers.list().len(),
            vm_kernel: guest::kernel(&self.dirs.data).ok(),
            vm_agent: guest::agent(&self.dirs.data).ok(),
            kvm: match sandbox::check_host() {
                Ok(()) => "usable".to_string(),
                Err(e) => format!("not usable: {e}"),
            },
            network: net::info(),
        }
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.clean_stale();
        self.containers.list()
    }

    /// Tidies after a supervisor that was killed: `--rm` containers go away; a detached
    /// container whose monitor died is marked dead (it died with it), a foreground run whose
    /// `berth run` was killed is marked exited.
    fn clean_stale(&self) {
        for rec in self.containers.stale() {
            let Ok(_lock) = self.containers.lock_container(&rec.id) else {
                continue;
            };
            // Seen again under the lock: a restart may have brought it back meanwhile.
            let Ok(mut rec) = self.containers.load(&rec.id) else {
                continue;
            };
            if !matches!(rec.status, Status::Running | Status::Restarting)
                || ContainerStore::monitor_alive(&rec)
            {
                continue;
            }
            if rec.auto_remove {
                self.remove_dir(&rec.id);
                self.containers.remove_runtime(&rec.id);
                self.remove_anonymous_volumes(&rec);
                continue;
            }
            if rec.socket.is_some() {
                rec.status = Status::Dead;
                rec.error = format!(
                    "its monitor (pid {}) ended unexpectedly, and the container with it",
                    rec.monitor_pid.unwrap_or(0)
                );
                let _ = std::fs::remove_file(self.containers.socket_path(&rec.id));
            } else {
                rec.status = Status::Exited;
            }
            rec.monitor_pid = None;
            rec.monitor_start = None;
            rec.pid = None;
            let _ = self.containers.save(&rec);
        }
    }

    /// Runs `image` in the foreground and returns the container's exit status.
    pub fn run(&self, image: &str, req: RunRequest, flags: RunFlags) -> Result<i32, EngineError> {
        self.check_userns(&flags)?;
        if flags.vm.is_some() {
            // Before pulling or preparing anything: a host that cannot run the guest says so.
            sandbox::check_host()?;
        }
        let id = self.create(image, req, &flags)?;
        let result = match flags.vm {
            Some(_) => self.run_vm_created(&id, &flags),
            None => self.run_created(&id, &flags),
        };
        if flags.remove || result.is_err() {
            let rec = self.containers.load(&id).ok();
            if let (Some(rec), true) = (&rec, flags.remove) {
                self.remove_anonymous_volumes(rec);
            }
            self.remove_dir(&id);
            self.containers.remove_runtime(&id);
            if let Some(rec) = &rec {
                self.container_event(rec, "destroy", &[]);
            }
        }
        result
    }

    /// Writes the bundle of container `id`: the OCI runtime spec (config.json) from the image
    /// config and the run request, and the /etc files it refers to. Both walls run this spec.
    #[allow(clippy::too_many_arguments)]
    fn write_bundle(
        &self,
        id: &str,
        resolved: &crate::image::ResolvedImage,
        lowers: &[PathBuf],
        req: &RunRequest,
        root: BundleRoot,
        join_userns: Option<PathBuf>,
        view: Option<&net::hosts::EtcView>,
    ) -> Result<oci_spec::runtime::Spec, EngineError> {
        let dir = self.containers.dir(id);
        let etc_dir = dir.join("etc");
        std::fs::create_dir_all(&etc_dir).map_err(io("creating", &etc_dir))?;
        let userns = self.containers.load(id)?.userns;
        let ids = self.ids_for(userns)?;
        let ctx = SpecContext {
            id,
            root_mount: root.mount,
            root_path: root.path,
            etc_dir: etc_dir.clone(),
            ids: &ids,
            passwd: rootfs::read_merged(lowers, "etc/passwd"),
            group: rootfs::read_merged(lowers, "etc/group"),
            join_userns,
            keep_id: keep_id_user(userns),
        };
        let spec = spec::build(req, &resolved.config, &ctx)?;
        if let Some((passwd, group)) = spec::keep_id_etc(req, &resolved.config, &ctx) {
            for (file, text) in [("passwd", passwd), ("group", group)] {
                let path = etc_dir.join(file);
                std::fs::write(&path, text).map_err(io("writing", &path))?;
            }
        }
        let hostname = spec.hostname().clone().unwrap_or_default();
        match view {
            Some(view) => net::hosts::write(&etc_dir, &hostname, view),
            None => spec::write_etc_files(&etc_dir, &hostname, req.network),
        }
        .map_err(io("writing /etc files in", &etc_dir))?;
        save_spec(&dir, &spec)?;
        Ok(spec)
    }

    /// `berth port CONTAINER`: the container's published ports.
    pub fn ports(&self, key: &str) -> Result<Vec<PublishedPort>, EngineError> {
        Ok(self.containers.find(key)?.ports)
    }

    /// `berth network create NAME [--subnet CIDR] [--label K=V]`.
    pub fn network_create(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<net::NetworkConfig, EngineError> {
        let subnet = subnet.map(net::store::parse_subnet).transpose()?;
        Ok(NetworkStore::new(&self.dirs).create(name, subnet, labels)?)
    }

    /// `berth network ls`.
    pub fn networks(&self) -> Vec<net::NetworkConfig> {
        NetworkStore::new(&self.dirs).list()
    }

    /// Running containers on the network `name` (started on it, or connected to it since).
    pub fn network_users(&self, name: &str) -> Vec<ContainerRecord> {
        self.containers()
            .into_iter()
            .filter(|c| {
                ContainerStore::is_running(c)
                    && (c.network == name
                        || net::Connected::of_run(c).any(|(joined, _)| joined.network == name))
            })
            .collect()
    }

    /// `berth network inspect NAME`: the definition and the running containers on it.
    pub fn network_inspect(
        &self,
        name: &str,
    ) -> Result<(net::NetworkConfig, Vec<ContainerRecord>), EngineError> {
        let config = NetworkStore::new(&self.dirs).get(name)?;
        let users = self.network_users(&config.name);
        Ok((config, users))
    }

    /// `berth network rm [-f] NAME`, as Docker means it: a network that running containers
    /// use is never removed (they are neither stopped nor removed: their data stays); `force`
    /// only makes a network that does not exist no error (`Ok(None)`).
    pub fn network_remove(&self, name: &str, force: bool) -> Result<Option<String>, EngineError> {
        let store = NetworkStore::new(&self.dirs);
        let config = match store.get(name) {
            Ok(c) => c,
            Err(_) if force => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let users = self.network_users(&config.name);
        if !users.is_empty() {
            let names: Vec<&str> = users.iter().map(|c| c.name.as_str()).collect();
            return Err(NetError::InUse {
                network: config.name,
                users: names.join(" "),
            }
            .into());
        }
        store.remove(&config.name)?;
        Ok(Some(config.name))
    }

    /// `berth network prune`: removes the networks no running container uses (of those
    /// `chosen` picks: a front end's filters).
    pub fn network_prune(
        &self,
        chosen: impl Fn(&net::NetworkConfig) -> bool,
    ) -> Result<Vec<String>, EngineError> {
        let store = NetworkStore::new(&self.dirs);
        let mut removed = vec![];
        for n in store.list() {
            if chosen(&n) && self.network_users(&n.name).is_empty() {
                store.remove(&n.name)?;
                removed.push(n.name);
            }
        }
        Ok(removed)
    }

    fn remove_dir(&self, id: &str) {
        let dir = self.containers.dir(id);
        // Try as ourselves first: an empty mount point or a writable layer already removed
        // by the container's stage 1 needs no user namespace.
        let owned: Vec<PathBuf> = ["upper", "work", "rootfs"]
            .iter()
            .map(|d| dir.join(d))
            .filter(|p| p.exists() && std::fs::remove_dir_all(p).is_err())
            .collect();
        let _ = rootfs::remove_owned_tree(owned, &self.ids);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl Engine {
    /// The event journal (`GET /events`).
    pub fn events(&self) -> &crate::state::events::EventLog {
        &self.events
    }

    /// Records a container event: its name, image and labels as the actor's attributes (as
    /// Docker has them), and `extra`.
    pub(crate) fn container_event(
        &self,
        rec: &ContainerRecord,
        action: &str,
        extra: &[(&str, String)],
    ) {
        let mut attrs: std::collections::BTreeMap<String, String> = rec.labels.clone();
        attrs.insert("name".into(), rec.name.clone());
        attrs.insert("image".into(), rec.image.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.events.record(&crate::state::events::Event::new(
            "container",
            action,
            &rec.id,
            attrs,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_like() {
        let n = generated_name("0a1b2c3d4e");
        assert!(crate::state::valid_name(&n), "{n}");
        assert_eq!(n.matches('_').count(), 2);
    }
}
