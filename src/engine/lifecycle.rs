//! A container's life past `berth run` in the foreground: create, start under a monitor,
//! stop, kill, wait, restart, rename and remove, and the monitor's own two halves that run
//! berth code (the set-up before `berth-monitor`, and `__exited` after it).

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{io, random_hex, EngineError, RunFlags, VM_DRIVER};
use crate::clock;
use crate::container::{self, RunOptions};
use crate::monitor::{self, policy, proto, proto::Request};
use crate::net::{self, NetworkOptions, NetworkRequest};
use crate::rootfs;
use crate::spec::{self, RunRequest};
use crate::state::{
    process_start_time, ContainerLock, ContainerRecord, ContainerStore, Isolation, StateError,
    Status,
};

/// What `berth stop` waits before SIGKILL, as Docker.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;

/// The answer of a started container's set-up to the command that started it.
pub(super) const REPORT_OK: &str = "ok";

/// A container started by [`super::Engine::start`].
pub struct StartedContainer {
    pub id: String,
    /// The client connected before the container started (`start -a`), when asked for.
    pub client: Option<UnixStream>,
}

/// The arguments of `berth __exited` (written by `berth-monitor`).
#[derive(Debug)]
pub struct ExitedArgs {
    pub id: String,
    pub code: i32,
    pub stopped: bool,
    pub listener: RawFd,
    pub clients: Vec<RawFd>,
}

pub(super) fn now() -> String {
    clock::rfc3339(clock::now_nanos())
}

/// Sends `line` and waits for the frame that ends the request: the exit status for `wait`
/// and `stop`, OK for `kill`. `None` when the monitor went away without an answer.
/// `berth stop` ran out of patience: the stop signal did not end container `name` within
/// `secs` seconds, and SIGKILL follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillNotice {
    pub name: String,
    /// The stop signal sent first (`SIGTERM`, or the image's StopSignal).
    pub signal: &'static str,
    pub secs: u32,
}

/// The monitor's answer to a request; `killing` runs when it says its stop timer ran out.
fn await_answer(
    stream: &mut UnixStream,
    killing: &mut dyn FnMut(),
) -> Result<Option<i32>, EngineError> {
    loop {
        match proto::read_frame(stream) {
            Ok(Some((proto::KILLING, _))) => killing(),
            Ok(Some((proto::EXIT, p))) => return Ok(proto::parse_exit(&p)),
            Ok(Some((proto::OK, _))) => return Ok(Some(0)),
            Ok(Some((proto::ERROR, p))) => {
                return Err(EngineError::Monitor(
                    String::from_utf8_lossy(&p).into_owned(),
                ))
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}

impl super::Engine {
    /// Creates a container from `image` without starting it: its rootfs, volumes, bundle and
    /// record. Returns the id.
    pub fn create(
        &self,
        image: &str,
        req: RunRequest,
        flags: &RunFlags,
    ) -> Result<String, EngineError> {
        // The id map first: a mode this host cannot honour fails before anything is fetched.
        let ids = self.check_userns(flags)?;
        let resolved = self.resolve_or_pull(image)?;
        if let Some(w) = self.ids.warning() {
            eprintln!("{w}");
        }
        // A microVM's guest sees the image's own owners, whatever --userns says: its layers
        // are the default map's.
        let lowers = if flags.vm.is_some() {
            self.layers.ensure(&resolved.layers, &self.ids)?
        } else {
            self.layers_for(flags.userns)
                .ensure(&resolved.layers, &ids)?
        };
        // The guest stacks a microVM's layers itself; no host rootfs driver is involved.
        let driver = flags.vm.is_none().then(|| self.driver());

        let id = random_hex(32);
        let dir = self.containers.dir(&id);
        self.clean_stale();
        let image_config = resolved.config.config().as_ref();
        let stop_signal = image_config
            .and_then(|c| c.stop_signal().as_deref())
            .and_then(parse_signal);
        // The network is set up at each start; what can be checked now is checked now. `-P`
        // becomes the image's exposed ports, so the record says all there is to publish.
        let mut network = flags.network.clone();
        if network.publish_all {
            let exposed = image_config
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default();
            network.publish.extend(net::ports::exposed(&exposed)?);
            network.publish_all = false;
        }
        let mut req = req;
        if flags.vm.is_none() {
            // A microVM's network was checked with its flags (`VmRequest::network`).
            net::validate(&network, &self.dirs)?;
            req.network = network.request.spec_mode();
        }
        {
            let _lock = self.containers.lock()?;
            let name = flags
                .name
                .clone()
                .unwrap_or_else(|| super::generated_name(&id));
            self.containers.check_name(&name)?;
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let rec = ContainerRecord {
                id: id.clone(),
                name,
                image: image.to_string(),
                image_id: resolved.id.clone(),
                command: req.cmd.clone(),
                created: clock::now_nanos() as u64 / 1_000_000_000,
                status: Status::Created,
                driver: driver.map_or_else(|| VM_DRIVER.to_string(), |d| d.to_string()),
                auto_remove: flags.remove,
                tty: req.tty,
                open_stdin: flags.attach_stdin,
                restart_policy: flags.restart,
                log: Some(flags.log),
                isolation: match flags.vm {
                    Some(_) => Isolation::Vm,
                    None => Isolation::Container,
                },
                stop_timeout: flags.stop_timeout,
                stop_signal,
                network: network.request.display_name(),
                network_options: Some(network),
                userns: flags.userns,
                // The image's labels, then the container's own over them (as Docker has it).
                labels: image_config
                    .and_then(|c| c.labels().clone())
                    .unwrap_or_default()
                    .into_iter()
                    .chain(flags.labels.clone())
                    .collect(),
                ..ContainerRecord::default()
            };
            self.containers.save(&rec)?;
        }
        let prepared = match (driver, &flags.vm) {
            (Some(driver), _) => {
                self.prepare_container(&id, &resolved, &lowers, driver, req, flags)
            }
            (None, Some(machine)) => self.prepare_vm(&id, &resolved, &lowers, req, flags, machine),
            (None, None) => unreachable!("a driver is chosen for every container"),
        };
        match prepared {
            Ok(()) => {
                if let Ok(rec) = self.containers.load(&id) {
                    self.container_event(&rec, "create", &[]);
                }
                Ok(id)
            }
            Err(e) => {
                self.remove_dir(&id);
                Err(e)
            }
        }
    }

    /// The id map `--userns` asks for, refused where it cannot be honoured.
    pub(super) fn check_userns(
        &self,
        flags: &RunFlags,
    ) -> Result<container::IdMapping, EngineError> {
        if flags.userns != container::UsernsMode::Default {
            if flags.vm.is_some() {
                // keep-id in a microVM: its process runs as the user's ids, and its shares
                // show the user's files as theirs (no user namespace in the guest).
                if !matches!(flags.userns, container::UsernsMode::KeepId { .. }) {
                    return Err(EngineError::Usage(format!(
                        "--userns={} is not available with --vm: the microVM has its own kernel and users; drop --userns, or use --userns=keep-id to run as your own ids there",
                        flags.userns
                    )));
                }
            } else if matches!(flags.network.request, NetworkRequest::Named(_)) {
                return Err(EngineError::Usage(format!(
                    "--userns={} cannot join a user-defined network: its containers share the network's user namespace, which has berth's default map; use the default network, or drop --userns",
                    flags.userns
                )));
            }
        }
        self.ids_for(flags.userns)
    }

    /// The rootfs, volumes and bundle of the new container `id`, recorded.
    fn prepare_container(
        &self,
        id: &str,
        resolved: &crate::image::ResolvedImage,
        lowers: &[PathBuf],
        driver: rootfs::Driver,
        mut req: RunRequest,
        flags: &RunFlags,
    ) -> Result<(), EngineError> {
        let dir = self.containers.dir(id);
        let mounts = self.resolve_mounts(&flags.mounts, &flags.volumes_from, lowers)?;
        let ids = self.ids_for(flags.userns)?;
        let plan = rootfs::prepare(driver, lowers, &dir, &ids)?;
        for m in &mounts.records {
            if m.kind == crate::state::MountKind::Bind && !m.source.exists() {
                std::fs::create_dir_all(&m.source)
                    .map_err(io("creating the volume source", &m.source))?;
            }
        }
        req.volumes.extend(mounts.binds);
        req.tmpfs.extend(mounts.tmpfs);
        // A user-defined network's user namespace, and the /etc view of a connected network,
        // are known at each start ([`Self::prepare_network`]).
        let spec = self.write_bundle(
            id,
            resolved,
            lowers,
            &req,
            super::BundleRoot {
                mount: plan.root_mount.clone(),
                path: plan.root_path.clone(),
            },
            None,
            None,
        )?;
        let mut rec = self.containers.load(id)?;
        rec.writable = plan.writable.clone();
        rec.mounts = mounts.records;
        rec.command = super::spec_command(&spec);
        self.containers.save(&rec)?;
        Ok(())
    }

    /// The network of container `rec` for one run: host ports bound (one in use fails here,
    /// before anything starts), tools found, a user-defined network's daemon joined; the
    /// bundle's spec and /etc files made to match (a user-defined network's user namespace is
    /// its daemon's, whose pid may differ from one start to the next). The caller connects it
    /// through `container::run` or `container::start`, and keeps it as long as the container.
    pub(super) fn prepare_network(
        &self,
        rec: &ContainerRecord,
    ) -> Result<net::Prepared, EngineError> {
        let dir = self.containers.dir(&rec.id);
        let etc_dir = dir.join("etc");
        std::fs::create_dir_all(&etc_dir).map_err(io("creating", &etc_dir))?;
        let opts = rec.network_options.clone().unwrap_or(NetworkOptions {
            request: NetworkRequest::None,
            ..NetworkOptions::default()
        });
        let mut spec = container::process::load_spec(&dir)?;
        let hostname = spec
            .hostname()
            .clone()
            .unwrap_or_else(|| rec.id[..12.min(rec.id.len())].to_string());
        let who = net::Identity {
            id: &rec.id,
            name: &rec.name,
            hostname: &hostname,
            hosts_file: etc_dir.join("hosts"),
        };
        // `-P` was expanded into `publish` when the container was created.
        let network = net::prepare(&opts, &[], &who, &self.dirs, &self.ids)?;
        if let Some(view) = &network.view {
            net::hosts::write(&etc_dir, &hostname, view)
                .map_err(io("writing /etc files in", &etc_dir))?;
        }
        if let Some(userns) = network.join_userns() {
            spec::join_user_namespace(&mut spec, &userns)?;
            super::save_spec(&dir, &spec)?;
        }
        Ok(network)
    }

    /// Where a detached container's monitor records the network helpers it keeps.
    fn helpers_path(&self, id: &str) -> PathBuf {
        self.containers.runtime_dir(id).join("network.json")
    }

    /// Ends the network helpers this process (the container's monitor, as `__exited`) keeps
    /// for container `id`: slirp4netns or pasta, the port forwarder, a user-defined network's
    /// membership. Their host ports are free on return.
    fn stop_network_helpers(&self, id: &str) {
        let path = self.helpers_path(id);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(helpers) = serde_json::from_str::<net::Helpers>(&text) {
                helpers.stop();
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Runs the created container `id` in the foreground, supervised by this process, and
    /// returns its exit status.
    pub(super) fn run_created(&self, id: &str, flags: &RunFlags) -> Result<i32, EngineError> {
        let dir = self.containers.dir(id);
        let mut rec = self.containers.load(id)?;
        // The network first: a published port in use fails the run before anything starts.
        let mut network = self.prepare_network(&rec)?;
        rec.ports = network.published.clone();
        rec.network = network.name.clone();
        rec.endpoint = None;
        let endpoint = network.endpoint_slot();
        let me = std::process::id() as i32;
        rec.status = Status::Running;
        rec.monitor_pid = Some(me);
        rec.monitor_start = process_start_time(me);
        rec.started_at = Some(now());
        // The output goes straight to this terminal; no log is kept.
        rec.log = None;
        self.containers.save(&rec)?;
        self.container_event(&rec, "start", &[]);
        let opts = RunOptions {
            attach_stdin: flags.attach_stdin,
            remove_after: if flags.remove {
                rec.writable.clone()
            } else {
                vec![]
            },
            seccomp_cache: Some(self.dirs.cache.join("seccomp")),
            hand_over: false,
        };
        let ids = self.ids_for(rec.userns)?;
        let code = container::run(
            &dir,
            &ids,
            &opts,
            Some(&mut network.attachment),
            |started| {
                rec.pid = Some(started.init.as_raw());
                rec.endpoint = endpoint.lock().ok().and_then(|e| e.clone());
                self.rejoin_networks(&mut rec);
                let _ = self.containers.save(&rec);
            },
        )?;
        // slirp4netns, pasta, the forwarder and the network membership end here.
        drop(network);
        self.container_event(&rec, "die", &[("exitCode", code.to_string())]);
        if !flags.remove {
            rec.status = Status::Exited;
            rec.exit_code = Some(code);
            rec.monitor_pid = None;
            rec.monitor_start = None;
            rec.pid = None;
            rec.finished_at = Some(now());
            self.containers.save(&rec)?;
        }
        Ok(code)
    }

    /// The container's record, refreshed: a supervisor that died is noticed here.
    pub fn container(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        self.clean_stale();
        Ok(self.containers.find(key)?)
    }

    /// Starts container `key` under a new monitor and returns once its command runs. With
    /// `attach`, a client is connected before the container starts, so it misses nothing.
    /// Starting a running container changes nothing (as Docker).
    pub fn start(
        &self,
        key: &str,
        attach: Option<Request>,
    ) -> Result<StartedContainer, EngineError> {
        let rec = self.container(key)?;
        self.start_created(&rec.id, attach)
    }

    /// [`Self::start`] for the container `id` that [`Self::create`] just returned (`run -d`):
    /// its id is exact and `create` swept the stale records, so neither the lookup by name
    /// nor the sweep, which read every container's record, is done again.
    pub fn start_created(
        &self,
        id: &str,
        attach: Option<Request>,
    ) -> Result<StartedContainer, EngineError> {
        self.start_inner(id, attach.map(|req| (req, None)))
    }

    /// Starts the created container `id` with the monitor's end of an attach connection the
    /// caller made (`theirs`), for a front end that runs the start in a helper process and
    /// keeps the other end. A container that runs already is left as it is, and `theirs`
    /// closed.
    pub fn start_handing(
        &self,
        id: &str,
        req: Request,
        theirs: OwnedFd,
    ) -> Result<(), EngineError> {
        self.start_inner(id, Some((req, Some(theirs)))).map(|_| ())
    }

    fn start_inner(
        &self,
        id: &str,
        attach: Option<(Request, Option<OwnedFd>)>,
    ) -> Result<StartedContainer, EngineError> {
        let lock = self.containers.lock_container(id)?;
        let rec = self.containers.load(id)?;
        if ContainerStore::monitor_alive(&rec)
            && matches!(rec.status, Status::Running | Status::Restarting)
        {
            drop(lock);
            let client = match attach {
                Some((req, None)) => Some(self.request(&rec, req)?),
                Some((_, Some(_))) | None => None,
            };
            return Ok(StartedContainer { id: rec.id, client });
        }
        let program = monitor::program().map_err(EngineError::Monitor)?;
        let (report_rd, report_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| EngineError::Monitor(format!("creating a pipe: {e}")))?;
        let (client, monitor_end) = match attach {
            Some((req, Some(theirs))) => (None, Some((theirs, req))),
            Some((req, None)) => {
                let (ours, theirs) = UnixStream::pair()
                    .map_err(|e| EngineError::Monitor(format!("creating a socket pair: {e}")))?;
                (Some(ours), Some((OwnedFd::from(theirs), req)))
            }
            None => (None, None),
        };
        let id = rec.id.clone();
        let (report_rd_fd, client_fd) = (
            report_rd.as_raw_fd(),
            client.as_ref().map(|c| c.as_raw_fd()),
        );
        let launched = monitor::launch::spawn_detached(|| {
            // The command's ends of the pipe and the socket stay with the command.
            let _ = nix::unistd::close(report_rd_fd);
            if let Some(fd) = client_fd {
                let _ = nix::unistd::close(fd);
            }
            let err = self.launch_here(
                &id,
                &program,
                &lock,
                Some(report_wr.as_raw_fd()),
                None,
                monitor_end,
            );
            let _ = nix::unistd::write(&report_wr, report_line(&err).as_bytes());
            container::userns::child_exit(125)
        });
        drop(report_wr);
        launched.map_err(|e| EngineError::Monitor(format!("starting the monitor: {e}")))?;
        let mut line = String::new();
        let _ = std::io::BufReader::new(std::fs::File::from(report_rd)).read_line(&mut line);
        drop(lock);
        let line = line.trim_end();
        if line == REPORT_OK {
            self.container_event(&rec, "start", &[]);
            return Ok(StartedContainer { id, client });
        }
        Err(parse_report(line))
    }

    /// The monitor's set-up, in the detached process that becomes the monitor: starts the
    /// container as this process's child, records it, reports to the waiting command, and
    /// execs `berth-monitor`. Returns only on failure (the caller holds `lock`).
    fn launch_here(
        &self,
        id: &str,
        program: &std::path::Path,
        lock: &ContainerLock,
        report: Option<RawFd>,
        listener: Option<OwnedFd>,
        client: Option<(OwnedFd, Request)>,
    ) -> EngineError {
        match self.launch_inner(id, program, lock, report, listener, client) {
            Ok(never) => match never {},
            Err(e) => {
                if let Ok(mut rec) = self.containers.load(id) {
                    rec.error = e.to_string();
                    rec.exit_code = Some(e.exit_code());
                    rec.monitor_pid = None;
                    rec.monitor_start = None;
                    rec.pid = None;
                    if rec.status != Status::Created {
                        rec.status = Status::Exited;
                        rec.finished_at = Some(now());
                    }
                    let _ = self.containers.save(&rec);
                }
                let _ = std::fs::remove_file(self.containers.socket_path(id));
                e
            }
        }
    }

    fn launch_inner(
        &self,
        id: &str,
        program: &std::path::Path,
        lock: &ContainerLock,
        report: Option<RawFd>,
        listener: Option<OwnedFd>,
        client: Option<(OwnedFd, Request)>,
    ) -> Result<std::convert::Infallible, EngineError> {
        let mut rec = self.containers.load(id)?;
        let dir = self.containers.dir(id);
        let run_dir = self.containers.runtime_dir(id);
        std::fs::create_dir_all(&run_dir).map_err(io("creating", &run_dir))?;
        // The socket gives control of the container: for this user only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("setting the mode of", &run_dir))?;
        }
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(io("opening", std::path::Path::new("/dev/null")))?;
        // Nothing of the command's stdio stays here: its caller waits for those to close.
        for fd in 0..3 {
            dup_onto(devnull.as_raw_fd(), fd)?;
        }
        let socket = self.containers.socket_path(id);
        let listener = match listener {
            Some(l) => l,
            None => monitor::listen(&socket).map_err(io("listening on", &socket))?,
        };
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| EngineError::Monitor(format!("creating a pipe: {e}")))
        };
        // The container's stdio: pipes for its output (and stdin with -i), or a terminal.
        let (output, stdin_wr, child_ends) = if rec.tty {
            (None, None, vec![])
        } else {
            let (out_rd, out_wr) = pipe()?;
            let (err_rd, err_wr) = pipe()?;
            dup_onto(out_wr.as_raw_fd(), 1)?;
            dup_onto(err_wr.as_raw_fd(), 2)?;
            let stdin_wr = if rec.open_stdin {
                let (in_rd, in_wr) = pipe()?;
                dup_onto(in_rd.as_raw_fd(), 0)?;
                Some(in_wr)
            } else {
                None
            };
            (Some((out_rd, err_rd)), stdin_wr, vec![out_wr, err_wr])
        };
        drop(child_ends);
        let opts = RunOptions {
            attach_stdin: rec.open_stdin && !rec.tty,
            remove_after: if rec.auto_remove {
                rec.writable.clone()
            } else {
                vec![]
            },
            seccomp_cache: Some(self.dirs.cache.join("seccomp")),
            hand_over: true,
        };
        let mut close_in_child = vec![lock.raw_fd(), listener.as_raw_fd()];
        close_in_child.extend(report);
        close_in_child.extend(stdin_wr.as_ref().map(|f| f.as_raw_fd()));
        close_in_child.extend(client.as_ref().map(|(f, _)| f.as_raw_fd()));
        if let Some((o, e)) = &output {
            close_in_child.extend([o.as_raw_fd(), e.as_raw_fd()]);
        }
        let started = if rec.machine.is_some() {
            // A microVM's VMM takes the first process's place: the monitor's child, whose exit
            // status is the sandbox's. Its network is its own and goes with it.
            let started = self.spawn_vmm(&rec, &close_in_child)?;
            // The VMM recorded the network it set up.
            rec = self.containers.load(id)?;
            started
        } else {
            // The network is set up here, in the monitor: slirp4netns or pasta, the port
            // forwarder and a user-defined network's membership belong to this process, live as
            // long as the container, and die with the monitor; `__exited` ends them when the
            // container ends.
            let mut network = self.prepare_network(&rec)?;
            let ids = self.ids_for(rec.userns)?;
            let started = container::start(
                &dir,
                &ids,
                &opts,
                &close_in_child,
                Some(&mut network.attachment),
            )?;
            rec.ports = network.published.clone();
            rec.network = network.name.clone();
            rec.endpoint = network.endpoint_slot().lock().ok().and_then(|e| e.clone());
            // No destructor runs past the exec below: the helpers are recorded for `__exited`.
            let helpers = network.keep_running()?;
            let helpers_path = self.helpers_path(id);
            if helpers.is_empty() {
                // No file to write (each new file is an inode to allocate, which is slow on
                // a busy ext4 without a journal); `__exited` finds none and ends nothing.
                let _ = std::fs::remove_file(&helpers_path);
            } else {
                let helpers_json = serde_json::to_vec(&helpers).map_err(|e| EngineError::Io {
                    what: "encoding",
                    path: helpers_path.clone(),
                    source: std::io::Error::other(e),
                })?;
                std::fs::write(&helpers_path, helpers_json)
                    .map_err(io("writing", &helpers_path))?;
            }
            started
        };
        // The container holds its stdio now; ours goes back to /dev/null, errors to a file.
        for fd in 0..2 {
            dup_onto(devnull.as_raw_fd(), fd)?;
        }
        let diag = run_dir.join("monitor.log");
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&diag)
        {
            dup_onto(f.as_raw_fd(), 2)?;
        }

        let me = std::process::id() as i32;
        rec.status = Status::Running;
        rec.pid = Some(started.init.as_raw());
        self.rejoin_networks(&mut rec);
        rec.monitor_pid = Some(me);
        rec.monitor_start = process_start_time(me);
        rec.socket = Some(socket);
        rec.started_at = Some(now());
        rec.exit_code = None;
        rec.error.clear();
        rec.manually_stopped = false;
        self.containers.save(&rec)?;
        if let Some(fd) = report {
            // SAFETY: `report` is the pipe's write end, open until this process execs.
            let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = nix::unistd::write(f, format!("{REPORT_OK}\n").as_bytes());
        }

        let log = rec.log.unwrap_or_default();
        let berth = std::env::current_exe()
            .map_err(|e| EngineError::Monitor(format!("finding the berth binary: {e}")))?;
        let output_cfg = match (&started.master, &output) {
            (Some(m), _) => monitor::Output::Terminal {
                master: m.as_raw_fd(),
            },
            (None, Some((o, e))) => monitor::Output::Pipes {
                stdout: o.as_raw_fd(),
                stderr: e.as_raw_fd(),
            },
            (None, None) => {
                return Err(EngineError::Monitor(
                    "the container's terminal did not come back".into(),
                ))
            }
        };
        let cfg = monitor::Config {
            id: id.to_string(),
            berth,
            sandbox: monitor::Sandbox::Container {
                init: started.init.as_raw(),
                stage1: match &started.end {
                    container::End::Stage1 { stage1, status } => {
                        Some((stage1.as_raw(), status.as_raw_fd()))
                    }
                    container::End::Child => None,
                },
            },
            output: output_cfg,
            stdin: stdin_wr.as_ref().map(|f| f.as_raw_fd()),
            terminal_stdin: rec.tty && rec.open_stdin,
            listener: listener.as_raw_fd(),
            clients: client
                .iter()
                .map(|(fd, req)| (fd.as_raw_fd(), *req))
                .collect(),
            log: dir.join("container.log"),
            log_max_size: log.max_size,
            log_max_files: log.max_files,
            stop_signal: rec.stop_signal.unwrap_or(libc::SIGTERM),
        };
        let status = match &started.end {
            container::End::Stage1 { status, .. } => Some(status),
            container::End::Child => None,
        };
        let passed = [status, started.master.as_ref(), stdin_wr.as_ref()]
            .into_iter()
            .flatten()
            .chain(output.iter().flat_map(|(o, e)| [o, e]))
            .chain([&listener])
            .chain(client.iter().map(|(f, _)| f));
        for fd in passed {
            monitor::launch::set_cloexec(fd.as_raw_fd(), false);
        }
        let err = monitor::serve::exec(program, &cfg.to_args());
        // The container must not outlive a monitor that never ran: stage 1 dies with us.
        Err(EngineError::Monitor(format!(
            "running {}: {err}",
            program.display()
        )))
    }

    /// Connects to container `rec`'s monitor and sends `req`.
    pub(super) fn request(
        &self,
        rec: &ContainerRecord,
        req: Request,
    ) -> Result<UnixStream, EngineError> {
        let path = rec
            .socket
            .clone()
            .unwrap_or_else(|| self.containers.socket_path(&rec.id));
        let mut s = monitor::connect(&path).map_err(|e| {
            EngineError::Monitor(format!(
                "cannot reach the monitor of container {} at {}: {e}; `berth ps -a` shows its state",
                rec.name,
                path.display()
            ))
        })?;
        s.write_all(req.line().as_bytes())
            .map_err(|e| EngineError::Monitor(format!("talking to the monitor: {e}")))?;
        Ok(s)
    }

    /// Sends `req` to the monitor of `rec` and returns its answer (the exit status for `wait`
    /// and `stop`). A monitor that is ending (it has closed its socket, or closes the
    /// connection unanswered) has no answer to give: then this waits until the record shows
    /// the run `rec` describes is over, and returns `None`.
    fn ask(&self, rec: &ContainerRecord, req: Request) -> Result<Option<i32>, EngineError> {
        self.ask_with(rec, req, &mut || {})
    }

    /// As [`Self::ask`], with `killing` called when the monitor says its stop timer ran out
    /// (before it sends SIGKILL).
    fn ask_with(
        &self,
        rec: &ContainerRecord,
        req: Request,
        killing: &mut dyn FnMut(),
    ) -> Result<Option<i32>, EngineError> {
        let asked = self.request(rec, req);
        if let Ok(mut s) = asked {
            if let Some(code) = await_answer(&mut s, killing)? {
                return Ok(Some(code));
            }
        } else if let Err(e) = asked {
            let now = self.containers.load(&rec.id)?;
            if !ContainerStore::monitor_alive(&now) || now.pid != rec.pid {
                return Ok(None);
            }
            if self.settle(rec) {
                return Err(e);
            }
            return Ok(None);
        }
        self.settle(rec);
        Ok(None)
    }

    /// Waits (up to 30 s) until the run `rec` describes is over in the record; true when it
    /// still is not.
    fn settle(&self, rec: &ContainerRecord) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Ok(now) = self.containers.load(&rec.id) else {
                return false;
            };
            let same_run = now.status == Status::Running
                && now.pid == rec.pid
                && ContainerStore::monitor_alive(&now);
            if !same_run {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the container has a monitor to talk to (detached), rather than a foreground
    /// `berth run` supervising it.
    fn has_monitor(rec: &ContainerRecord) -> bool {
        rec.socket.is_some() && ContainerStore::monitor_alive(rec)
    }

    /// Waits until a foreground-run container has ended (its `berth run` records the end).
    fn wait_foreground(&self, id: &str, deadline: Option<Instant>) -> Option<i32> {
        loop {
            let rec = self.containers.load(id).ok()?;
            if !ContainerStore::is_running(&rec) {
                return Some(rec.exit_code.unwrap_or(137));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_init(rec: &ContainerRecord, signal: Signal) -> Result<(), EngineError> {
        let pid = rec
            .pid
            .ok_or_else(|| EngineError::NotRunning(rec.name.clone()))?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| EngineError::Monitor(format!("signalling container {}: {e}", rec.name)))
    }

    /// `berth stop`: the stop signal, SIGKILL after `timeout` seconds; returns the id once
    /// the container has ended. Stopping a stopped container changes nothing.
    pub fn stop(&self, key: &str, timeout: Option<u32>) -> Result<String, EngineError> {
        self.stop_noting(key, timeout, &mut |_| {})
    }

    /// As [`Self::stop`], telling `notice` when the timeout expires and SIGKILL follows (only
    /// then: not for a container the stop signal ended, nor for a timeout of 0).
    pub fn stop_noting(
        &self,
        key: &str,
        timeout: Option<u32>,
        notice: &mut dyn FnMut(&KillNotice),
    ) -> Result<String, EngineError> {
        let rec = self.container(key)?;
        let secs = timeout.or(rec.stop_timeout).unwrap_or(DEFAULT_STOP_TIMEOUT);
        if !matches!(rec.status, Status::Running | Status::Restarting)
            || !ContainerStore::monitor_alive(&rec)
        {
            return Ok(rec.id);
        }
        let sig = rec
            .stop_signal
            .and_then(|n| Signal::try_from(n).ok())
            .unwrap_or(Signal::SIGTERM);
        let killing = KillNotice {
            name: rec.name.clone(),
            signal: sig.as_str(),
            secs,
        };
        self.container_event(&rec, "kill", &[("signal", (sig as i32).to_string())]);
        if Self::has_monitor(&rec) {
            // The monitor answers after recording the end; a racing restart is cancelled. Its
            // timer sends SIGKILL when the stop signal has not ended the sandbox within
            // `secs`, and it says so first.
            self.ask_with(&rec, Request::Stop { secs }, &mut || notice(&killing))?;
            self.container_event(&rec, "stop", &[]);
            return Ok(rec.id);
        }
        let _ = Self::signal_init(&rec, sig);
        let deadline = Instant::now() + Duration::from_secs(secs as u64);
        if self.wait_foreground(&rec.id, Some(deadline)).is_none() {
            if secs > 0 {
                notice(&killing);
            }
            let _ = Self::signal_init(&rec, Signal::SIGKILL);
            self.wait_foreground(&rec.id, None);
        }
        self.container_event(&rec, "stop", &[]);
        Ok(rec.id)
    }

    /// `berth kill -s SIG`: one signal to the container's first process.
    pub fn kill(&self, key: &str, signal: i32) -> Result<String, EngineError> {
        let rec = self.container(key)?;
        if !ContainerStore::is_running(&rec) {
            return Err(EngineError::NotRunning(rec.name));
        }
        self.container_event(&rec, "kill", &[("signal", signal.to_string())]);
        if Self::has_monitor(&rec) {
            self.ask(&rec, Request::Kill { signal })?;
        } else {
            let sig = Signal::try_from(signal)
                .map_err(|_| EngineError::Monitor(format!("invalid signal {signal}")))?;
            Self::signal_init(&rec, sig)?;
        }
        Ok(rec.id)
    }

    /// `berth wait`: the exit status once the container has ended (at once for one that
    /// has; a created container is waited for until it has run).
    pub fn wait(&self, key: &str) -> Result<i32, EngineError> {
        let rec = self.container(key)?;
        if matches!(rec.status, Status::Running | Status::Restarting)
            && ContainerStore::monitor_alive(&rec)
        {
            if Self::has_monitor(&rec) {
                if let Some(code) = self.ask(&rec, Request::Wait)? {
                    return Ok(code);
                }
                // The run ended without an answer to us: its record says how.
                return Ok(self.container(&rec.id)?.exit_code.unwrap_or(137));
            }
            return Ok(self.wait_foreground(&rec.id, None).unwrap_or(137));
        }
        if rec.status == Status::Created {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = self.container(&rec.id)?;
                if now.status != Status::Created {
                    return self.wait(&rec.id);
                }
            }
        }
        Ok(rec.exit_code.unwrap_or(0))
    }

    /// `berth restart`: stop (if running, telling `notice` as [`Self::stop_noting`]), then
    /// start.
    pub fn restart(
        &self,
        key: &str,
        timeout: Option<u32>,
        notice: &mut dyn FnMut(&KillNotice),
    ) -> Result<String, EngineError> {
        let id = self.stop_noting(key, timeout, notice)?;
        self.start(&id, None)?;
        if let Ok(rec) = self.containers.load(&id) {
            self.container_event(&rec, "restart", &[]);
        }
        Ok(id)
    }

    /// `berth rename OLD NEW`.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), EngineError> {
        let rec = self.container(key)?;
        let _store = self.containers.lock()?;
        self.containers.check_name(new_name)?;
        let _lock = self.containers.lock_container(&rec.id)?;
        let mut rec = self.containers.load(&rec.id)?;
        let old = std::mem::replace(&mut rec.name, new_name.to_string());
        self.containers.save(&rec)?;
        self.container_event(&rec, "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// Removes a container that is not running (or any, with `force`, after stopping it with
    /// SIGKILL); with `volumes`, its anonymous volumes too.
    pub fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<String, EngineError> {
        let rec = self.container(key)?;
        if ContainerStore::monitor_alive(&rec)
            && matches!(rec.status, Status::Running | Status::Restarting)
        {
            if !force {
                return Err(StateError::Running(rec.name).into());
            }
            self.stop(&rec.id, Some(0))?;
        }
        let lock = self.containers.lock_container(&rec.id)?;
        let rec = match self.containers.load(&rec.id) {
            Ok(r) => r,
            // Removed meanwhile (a --rm container that ended, or another rm).
            Err(StateError::NotFound(_)) => return Ok(rec.id),
            Err(e) => return Err(e.into()),
        };
        if ContainerStore::monitor_alive(&rec) && rec.status == Status::Running {
            // Started again between the stop and the lock.
            return Err(StateError::Running(rec.name).into());
        }
        self.remove_dir(&rec.id);
        drop(lock);
        self.containers.remove_runtime(&rec.id);
        if volumes {
            self.remove_anonymous_volumes(&rec);
        }
        self.container_event(&rec, "destroy", &[]);
        Ok(rec.id)
    }

    /// `berth __exited`: the monitor's last word on a run. Records the end, answers the
    /// clients waiting for it, then removes a `--rm` container or, when the restart policy
    /// says so, waits out the back-off and starts the container again (this process becomes
    /// its monitor once more). Returns the status for this process to exit with.
    pub fn monitor_exited(&self, args: ExitedArgs) -> i32 {
        // The container's network goes first: its host ports are free, and nothing of it runs,
        // by the time anyone learns of the end (and before a restart sets it up again).
        self.stop_network_helpers(&args.id);
        // SAFETY: berth-monitor passed these descriptors open and names them on our command
        // line; nothing else in this process owns them.
        let listener = unsafe { OwnedFd::from_raw_fd(args.listener) };
        // SAFETY: as above.
        let mut clients: Vec<UnixStream> = args
            .clients
            .iter()
            .map(|fd| unsafe { UnixStream::from_raw_fd(*fd) })
            .collect();
        for fd in [listener.as_raw_fd()]
            .into_iter()
            .chain(clients.iter().map(|c| c.as_raw_fd()))
        {
            monitor::launch::set_cloexec(fd, true);
        }
        let answer = |clients: &mut Vec<UnixStream>, code: i32| {
            for mut c in clients.drain(..) {
                let _ = c.set_nonblocking(false);
                let _ = proto::write_frame(&mut c, proto::EXIT, &proto::exit_payload(code));
            }
        };
        let Ok(lock) = self.containers.lock_container(&args.id) else {
            answer(&mut clients, args.code);
            return 1;
        };
        let Ok(mut rec) = self.containers.load(&args.id) else {
            answer(&mut clients, args.code);
            return 1;
        };
        let ran = rec
            .started_at
            .as_deref()
            .and_then(clock::parse_rfc3339)
            .map(|t| Duration::from_nanos((clock::now_nanos() - t).max(0) as u64))
            .unwrap_or_default();
        rec.exit_code = Some(args.code);
        rec.finished_at = Some(now());
        rec.pid = None;
        rec.manually_stopped |= args.stopped;
        self.container_event(&rec, "die", &[("exitCode", args.code.to_string())]);
        let restart =
            rec.restart_policy
                .should_restart(args.code, rec.manually_stopped, rec.restart_count);
        if !restart {
            rec.status = Status::Exited;
            rec.monitor_pid = None;
            rec.monitor_start = None;
            let _ = self.containers.save(&rec);
            answer(&mut clients, args.code);
            drop(listener);
            let _ = std::fs::remove_file(self.containers.socket_path(&rec.id));
            if rec.auto_remove {
                self.remove_dir(&rec.id);
                drop(lock);
                self.containers.remove_runtime(&rec.id);
                self.remove_anonymous_volumes(&rec);
                self.container_event(&rec, "destroy", &[]);
            }
            return 0;
        }
        let previous =
            (rec.restart_delay_ms > 0).then(|| Duration::from_millis(rec.restart_delay_ms));
        let delay = policy::backoff(previous, ran);
        rec.status = Status::Restarting;
        rec.restart_delay_ms = delay.as_millis() as u64;
        let _ = self.containers.save(&rec);
        answer(&mut clients, args.code);
        drop(lock);

        // The back-off: a `stop` (or `kill`, or `rm -f`) now cancels the restart.
        let cancelled = serve_backoff(&listener, delay, args.code);
        let Ok(lock) = self.containers.lock_container(&rec.id) else {
            return 1;
        };
        let Ok(mut rec) = self.containers.load(&rec.id) else {
            return 1;
        };
        if let Some((mut client, req)) = cancelled {
            rec.status = Status::Exited;
            rec.manually_stopped = true;
            rec.monitor_pid = None;
            rec.monitor_start = None;
            let _ = self.containers.save(&rec);
            drop(listener);
            let _ = std::fs::remove_file(self.containers.socket_path(&rec.id));
            // Answered once the record says what `berth ps` will show.
            let _ = match req {
                Request::Kill { .. } => proto::write_frame(&mut client, proto::OK, b""),
                _ => proto::write_frame(&mut client, proto::EXIT, &proto::exit_payload(args.code)),
            };
            return 0;
        }
        rec.restart_count += 1;
        if self.containers.save(&rec).is_err() {
            return 1;
        }
        let program = match monitor::program() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("berth: restarting {}: {e}", rec.name);
                return 1;
            }
        };
        let err = self.launch_here(&rec.id, &program, &lock, None, Some(listener), None);
        eprintln!("berth: restarting container {}: {err}", rec.name);
        1
    }
}

/// Serves the monitor socket while a restart waits: answers `wait` with the last status,
/// refuses `attach`, and cancels the restart on `stop` or `kill`: then returns that client,
/// to be answered once the end is recorded.
fn serve_backoff(listener: &OwnedFd, delay: Duration, code: i32) -> Option<(UnixStream, Request)> {
    let deadline = Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: fds is a live array of one pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            continue;
        }
        // SAFETY: accept4 with null address pointers returns a new descriptor or -1.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: accept4 just returned this descriptor; we own it.
        let mut client = unsafe { UnixStream::from_raw_fd(fd) };
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let _ = std::io::BufReader::new(&client).read_line(&mut line);
        match Request::parse(line.trim_end()) {
            Some(req @ (Request::Stop { .. } | Request::Kill { .. })) => {
                return Some((client, req))
            }
            Some(Request::Wait) => {
                let _ = proto::write_frame(&mut client, proto::EXIT, &proto::exit_payload(code));
            }
            _ => {
                let _ = proto::write_frame(
                    &mut client,
                    proto::ERROR,
                    b"the container is restarting: wait until it runs (`berth ps` shows it Up)",
                );
            }
        }
    }
}

fn dup_onto(fd: RawFd, target: RawFd) -> Result<(), EngineError> {
    if fd == target {
        monitor::launch::set_cloexec(fd, false);
        return Ok(());
    }
    // SAFETY: dup2 between descriptors this process owns.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(EngineError::Monitor(format!(
            "dup2: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The set-up's report line for a failed start: `err CODE MESSAGE`.
pub(super) fn report_line(e: &EngineError) -> String {
    format!(
        "err {} {}\n",
        e.exit_code(),
        e.to_string().replace('\n', " ")
    )
}

pub(super) fn parse_report(line: &str) -> EngineError {
    let parsed = line.strip_prefix("err ").and_then(|rest| {
        let (code, msg) = rest.split_once(' ')?;
        Some((code.parse::<i32>().ok()?, msg.to_string()))
    });
    match parsed {
        Some((code, message)) => EngineError::Container(container::ContainerError::Start {
            code,
            message,
        }),
        None => EngineError::Monitor(
            "the monitor ended before the container started; its log is monitor.log in the container's runtime directory"
                .into(),
        ),
    }
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn reports_round_trip() {
        let e = EngineError::Container(container::ContainerError::Start {
            code: 127,
            message: "exec: \"x\": not found".into(),
        });
        match parse_report(report_line(&e).trim_end()) {
            EngineError::Container(container::ContainerError::Start { code, message }) => {
                assert_eq!(code, 127);
                assert!(message.contains("not found"));
            }
            other => panic!("{other:?}"),
        }
    }
}
