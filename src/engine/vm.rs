//! The microVM wall's engine half: a `--vm` sandbox's machine fixed at create time (the
//! guest kernel and agent, the layers as disks, the shares, the bundle), booted in the
//! foreground by `berth run --vm`, or by the VMM process that a detached sandbox's monitor
//! forks in place of a container's first process (`run -d --vm`, `start`, restarts).

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::unistd::Pid;

use super::{io, BundleRoot, EngineError, RunFlags, VmRequest};
use crate::container;
use crate::net::{self, NetworkStore, PublishedPort};
use crate::rootfs;
use crate::spec::{self, RunRequest, SpecError};
use crate::state::{process_start_time, ContainerRecord, Status, VmMachine, VmNetwork, VmShare};
use crate::vm::guest;
use crate::vm::sandbox::{self, Outcome, SandboxConfig};

/// The socket on which a running microVM's VMM takes `berth exec` sessions.
pub(super) const EXEC_SOCKET: &str = "vmm.sock";
/// A microVM's writable disk, in its sandbox's directory.
const WRITABLE_DISK: &str = "upper.ext4";

/// The virtio-9p shares of a microVM for its resolved binds (volumes and host directories),
/// one per bind, in order; a missing host directory is created as `-v` does for containers.
fn vm_shares(binds: &[spec::BindVolume]) -> Result<Vec<VmShare>, EngineError> {
    binds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if !b.host.exists() {
                std::fs::create_dir_all(&b.host).map_err(io("creating the volume source", &b.host))?;
            }
            if !b.host.is_dir() {
                return Err(EngineError::Usage(format!(
                    "{} is not a directory: a microVM shares directories only; mount the directory that holds it",
                    b.host.display()
                )));
            }
            Ok(VmShare {
                path: b.host.clone(),
                tag: guest::share_tag(i),
                read_only: b.read_only,
            })
        })
        .collect()
}

/// Adds the guest's mount of each share to `spec`: type `9p`, the share's tag as the source.
fn add_share_mounts(
    spec: &mut oci_spec::runtime::Spec,
    binds: &[spec::BindVolume],
    shares: &[VmShare],
) -> Result<(), EngineError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (b, share) in binds.iter().zip(shares) {
        let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
        if share.read_only {
            options.push("ro".into());
        }
        let m = oci_spec::runtime::MountBuilder::default()
            .destination(&b.container)
            .typ("9p")
            .source(&share.tag)
            .options(options)
            .build()
            .map_err(|e| EngineError::Spec(SpecError::Build(e.to_string())))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// The network's name in the record (`berth ps`, `inspect`).
fn network_name(network: &VmNetwork) -> String {
    match network {
        VmNetwork::None => "none".into(),
        VmNetwork::Passt => "passt".into(),
        VmNetwork::Named(name) => name.clone(),
    }
}

/// The erofs disks of the layers `lowers` (bottom first), as [`rootfs::erofs::layer_disks`]
/// makes them, with progress on stderr for those the cache lacks (a large image's first
/// `--vm` run builds them for minutes): a bar on a terminal, a plain line per disk otherwise.
/// Nothing is shown when every disk is cached.
fn layer_disks_shown(
    lowers: &[PathBuf],
    cache: &std::path::Path,
    ids: &container::IdMapping,
) -> Result<Vec<PathBuf>, EngineError> {
    // erofs names a layer's disk after the layer's directory: `<dir name>.erofs`.
    let missing: Vec<&PathBuf> = lowers
        .iter()
        .filter(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_none_or(|n| !cache.join(format!("{n}.erofs")).exists())
        })
        .collect();
    if !missing.is_empty() {
        let shown = LayerDiskProgress::new(missing.len());
        for (i, dir) in missing.iter().enumerate() {
            shown.start(i, dir);
            rootfs::erofs::layer_disks(std::slice::from_ref(dir), cache, ids)?;
        }
        shown.finish();
    }
    Ok(rootfs::erofs::layer_disks(lowers, cache, ids)?)
}

/// What building layer disks shows on stderr.
struct LayerDiskProgress {
    total: usize,
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
}

impl LayerDiskProgress {
    fn new(total: usize) -> LayerDiskProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "Building microVM layer disks [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            // mkfs.erofs of one large layer takes minutes: the clock keeps moving meanwhile.
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        LayerDiskProgress {
            total,
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn start(&self, i: usize, dir: &std::path::Path) {
        let layer = short_layer(dir);
        match &self.bar {
            Some(bar) => {
                bar.set_position(i as u64);
                bar.set_message(layer);
            }
            None => eprintln!("{}", start_line(i, self.total, &layer)),
        }
    }

    fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}", done_line(self.total, self.started.elapsed()));
    }
}

/// A layer's short name: the first 12 characters of its directory's (the diff id's hex).
fn short_layer(dir: &std::path::Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn start_line(i: usize, total: usize, layer: &str) -> String {
    format!(
        "Building microVM layer disk {}/{total} (layer {layer}); later runs reuse it",
        i + 1
    )
}

fn done_line(total: usize, took: std::time::Duration) -> String {
    let noun = if total == 1 { "disk" } else { "disks" };
    format!(
        "Built {total} microVM layer {noun} in {:.1}s",
        took.as_secs_f64()
    )
}

impl super::Engine {
    /// The machine of the new `--vm` sandbox `id`: the guest kernel and initramfs, the layers
    /// as erofs disks, the volumes and host directories as virtio-9p shares, and the bundle
    /// (the same spec as the container wall, plus the shares' mounts), recorded.
    pub(super) fn prepare_vm(
        &self,
        id: &str,
        resolved: &crate::image::ResolvedImage,
        lowers: &[PathBuf],
        mut req: RunRequest,
        flags: &RunFlags,
        machine: &VmRequest,
    ) -> Result<(), EngineError> {
        let dir = self.containers.dir(id);
        let kernel = guest::kernel(&self.dirs.data)?;
        let agent = guest::agent(&self.dirs.data)?;
        let vm_cache = self.dirs.cache.join("vm");
        let initramfs = guest::initramfs(&agent, &vm_cache)?;
        let layers = layer_disks_shown(lowers, &vm_cache.join("layers"), &self.ids)?;
        // Volumes and host directories reach the guest as virtio-9p shares, which the agent
        // mounts where the spec says (a `9p` mount whose source is the share's tag).
        let mounts = self.resolve_mounts(&flags.mounts, &flags.volumes_from, lowers)?;
        let shares = vm_shares(&mounts.binds)?;
        // `--mount type=tmpfs` joins `--tmpfs`, which the guest mounts itself.
        req.tmpfs.extend(mounts.tmpfs);
        let root = BundleRoot {
            mount: None,
            path: dir.join("rootfs"),
        };
        // On a user-defined network the /etc files are a container's (the network daemon
        // completes the hosts file once the VM has an address).
        let view = match &machine.network {
            VmNetwork::Named(name) => {
                NetworkStore::new(&self.dirs).get(name)?;
                Some(net::netns::bridge_view())
            }
            _ => None,
        };
        let mut spec = self.write_bundle(id, resolved, lowers, &req, root, None, view.as_ref())?;
        if !shares.is_empty() {
            add_share_mounts(&mut spec, &mounts.binds, &shares)?;
            super::save_spec(&dir, &spec)?;
        }
        // What the sandbox writes outlives a run unless nothing of it does (`--rm`).
        let upper = if flags.remove {
            None
        } else {
            let disk = dir.join(WRITABLE_DISK);
            rootfs::erofs::writable_disk(&disk)?;
            Some(disk)
        };
        let mut rec = self.containers.load(id)?;
        rec.mounts = mounts.records;
        rec.command = super::spec_command(&spec);
        rec.network = network_name(&machine.network);
        rec.machine = Some(VmMachine {
            cpus: machine.cpus,
            mem_mib: machine.mem_mib,
            network: machine.network.clone(),
            kernel,
            initramfs,
            layers,
            shares,
            upper,
            // keep-id: the guest's process runs as the user's ids, which see the user's files
            // in the shares as their own.
            share_owner: super::keep_id_user(flags.userns).map(|u| (u.uid, u.gid)),
        });
        self.containers.save(&rec)?;
        Ok(())
    }

    /// Runs the created `--vm` sandbox `id` in the foreground, supervised by this process
    /// (whose pid is recorded as the sandbox's: a signal to it reaches the guest's process),
    /// and returns its exit status.
    pub(super) fn run_vm_created(&self, id: &str, flags: &RunFlags) -> Result<i32, EngineError> {
        let mut rec = self.containers.load(id)?;
        let me = std::process::id() as i32;
        rec.status = Status::Running;
        rec.pid = Some(me);
        rec.monitor_pid = Some(me);
        rec.monitor_start = process_start_time(me);
        rec.started_at = Some(super::lifecycle::now());
        // The output goes straight to this terminal; no log is kept.
        rec.log = None;
        self.containers.save(&rec)?;
        self.container_event(&rec, "start", &[]);
        let outcome = self.boot_vm(id, flags.attach_stdin, None, || {})?;
        self.container_event(&rec, "die", &[("exitCode", outcome.exit_code.to_string())]);
        if !flags.remove {
            let mut rec = self.containers.load(id)?;
            rec.status = Status::Exited;
            rec.exit_code = Some(outcome.exit_code);
            rec.monitor_pid = None;
            rec.monitor_start = None;
            rec.pid = None;
            rec.finished_at = Some(super::lifecycle::now());
            self.containers.save(&rec)?;
        }
        Ok(outcome.exit_code)
    }

    /// Boots `--vm` sandbox `id` and runs its process to the end, with this process's stdio
    /// as the process's: its network first (published ports bound, so one in use fails before
    /// a VM boots; a user-defined network joined through a tap), recorded; then the VM.
    /// `on_started` runs once the guest's process runs; `exec` takes `berth exec` sessions.
    fn boot_vm(
        &self,
        id: &str,
        attach_stdin: bool,
        exec: Option<UnixListener>,
        on_started: impl FnMut(),
    ) -> Result<Outcome, EngineError> {
        let mut rec = self.containers.load(id)?;
        let mut machine = rec.machine.clone().ok_or_else(|| {
            EngineError::Usage(format!("container {} is not a microVM", rec.name))
        })?;
        if self.refresh_machine(&rec, &mut machine)? {
            rec.machine = Some(machine.clone());
        }
        let dir = self.containers.dir(id);
        let etc_dir = dir.join("etc");
        let opts = rec.network_options.clone().unwrap_or_default();
        // `-P` was expanded into `publish` when the sandbox was created.
        let mut bound = if machine.network != VmNetwork::None {
            net::ports::bind_all(&opts.publish)?
        } else {
            vec![]
        };
        let published: Vec<PublishedPort> = bound.iter().map(|(p, _)| *p).collect();
        let spec = container::process::load_spec(&dir)?;
        // The VM's place on a user-defined network: a tap from the network daemon, held (with
        // the connection the daemon counts) until the VM is gone; published ports through
        // berth's forwarder in the daemon's namespaces, as for a container there.
        let mut forwarder = None;
        let mut membership = None;
        let mut sandbox_network = None;
        // Where the guest's NIC is, for `inspect` (its MAC follows its address).
        let endpoint = |network_id: String, ip, prefix_len, gateway| net::Endpoint {
            network_id,
            ip,
            prefix_len,
            gateway,
            mac: net::mac_for(ip),
            aliases: opts.aliases.clone(),
        };
        let mut vm_endpoint = None;
        match &machine.network {
            VmNetwork::Named(name) => {
                let config = NetworkStore::new(&self.dirs).get(name)?;
                let hostname = spec
                    .hostname()
                    .clone()
                    .unwrap_or_else(|| id[..12.min(id.len())].to_string());
                let who = net::Identity {
                    id,
                    name: &rec.name,
                    hostname: &hostname,
                    hosts_file: etc_dir.join("hosts"),
                };
                let join = net::netns::Join::new(&self.dirs, config.clone(), &who, &opts.aliases)?;
                let (userns, netns) = (join.userns_path(), join.netns_path());
                let member = join.attach_tap()?;
                if !bound.is_empty() {
                    forwarder = Some(net::ports::Forwarder::start(
                        Some(&userns),
                        &netns,
                        std::net::IpAddr::V4(member.ip),
                        std::mem::take(&mut bound),
                    )?);
                }
                let tap = member.tap.try_clone().map_err(|e| EngineError::Io {
                    what: "duplicating the tap of",
                    path: dir.clone(),
                    source: e,
                })?;
                sandbox_network = Some(sandbox::SandboxNetwork::Tap {
                    tap,
                    guest: berth_agent::net::GuestNetwork {
                        interface: "eth0".into(),
                        address: member.ip,
                        prefix_len: config.prefix,
                        gateway: config.gateway,
                        // A tap queues what the device has not read yet.
                        tcp_window: None,
                    },
                    hosts: etc_dir.join("hosts"),
                });
                vm_endpoint = Some(endpoint(
                    config.id.clone(),
                    member.ip,
                    config.prefix,
                    config.gateway,
                ));
                membership = Some(member);
            }
            VmNetwork::Passt => {
                use crate::vm::passt::{GATEWAY, GUEST, PREFIX_LEN};
                vm_endpoint = Some(endpoint(String::new(), GUEST, PREFIX_LEN, GATEWAY));
                // passt binds the host ports itself.
                let ports = net::ports::release(std::mem::take(&mut bound));
                sandbox_network = Some(sandbox::SandboxNetwork::Passt(
                    ports
                        .iter()
                        .map(|p| crate::vm::passt::Forward {
                            host_ip: (!p.host_ip.is_unspecified()).then_some(p.host_ip),
                            host_port: p.host_port,
                            guest_port: p.container_port,
                            udp: p.proto == net::ports::Proto::Udp,
                        })
                        .collect(),
                ));
            }
            VmNetwork::None => {}
        }
        // passwd and group are there with --userns=keep-id only (the image's, plus the user).
        let mut etc_files: Vec<(String, String)> =
            ["hostname", "hosts", "resolv.conf", "passwd", "group"]
                .iter()
                .filter_map(|name| {
                    let text = std::fs::read_to_string(etc_dir.join(name)).ok()?;
                    Some((name.to_string(), text))
                })
                .collect();
        if machine.network == VmNetwork::Passt {
            // Names resolve through passt's DNS forwarder; the gateway is the host.
            use crate::vm::passt::{DNS, GATEWAY};
            for (name, text) in etc_files.iter_mut() {
                match name.as_str() {
                    "resolv.conf" => *text = format!("nameserver {DNS}\n"),
                    "hosts" => text.push_str(&format!(
                        "{GATEWAY}\thost.containers.internal host.docker.internal\n"
                    )),
                    _ => {}
                }
            }
        }
        let spec_json = serde_json::to_vec(&spec).map_err(|e| EngineError::Io {
            what: "encoding the runtime spec for",
            path: dir.clone(),
            source: std::io::Error::other(e),
        })?;
        rec.ports = published;
        rec.network = network_name(&machine.network);
        rec.endpoint = vm_endpoint;
        self.containers.save(&rec)?;

        let outcome = sandbox::run(
            &SandboxConfig {
                kernel: machine.kernel,
                initramfs: machine.initramfs,
                layers: machine.layers,
                upper: machine.upper,
                shares: machine
                    .shares
                    .into_iter()
                    .map(|s| crate::vm::ShareConfig {
                        path: s.path,
                        tag: s.tag,
                        read_only: s.read_only,
                        guest_owner: machine.share_owner.unwrap_or((0, 0)),
                    })
                    .collect(),
                vcpus: machine.cpus,
                mem_mib: machine.mem_mib,
                spec: spec_json,
                tty: rec.tty,
                attach_stdin,
                etc_files,
                console_log: dir.join("console.log"),
                network: sandbox_network,
                exec,
            },
            on_started,
        );
        // The ports close and the daemon forgets the VM (its tap is gone with the VMM's
        // descriptors) before the run reports its end.
        drop(forwarder);
        drop(membership);
        Ok(outcome?)
    }

    /// Forks the VMM of `--vm` sandbox `rec` as this process's child, in the monitor's
    /// set-up, where a container's first process would be: with this process's stdio (the
    /// monitor's pipes), or a terminal of its own with `rec.tty`, whose master comes back.
    /// Returns once the guest's process runs (or with its start's error). The VMM closes
    /// `close_in_child` at once, dies with the monitor (`PR_SET_PDEATHSIG`), and exits with
    /// the sandbox's status; its network (passt, a tap, the port forwarder) is its own and
    /// goes with it.
    pub(super) fn spawn_vmm(
        &self,
        rec: &ContainerRecord,
        close_in_child: &[RawFd],
    ) -> Result<container::Started, EngineError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            EngineError::Monitor(format!("starting the microVM: {what}: {e}"))
        };
        let terminal = if rec.tty {
            let size = nix::pty::Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&size), None).map_err(|e| failed("openpty", &e))?;
            // The guest has a terminal of its own, which already did the line discipline: the
            // host's passes bytes through untouched (no echo, no \n -> \r\n once more).
            let mut t = nix::sys::termios::tcgetattr(&pty.slave)
                .map_err(|e| failed("reading the terminal's settings", &e))?;
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .map_err(|e| failed("setting the terminal raw", &e))?;
            Some(pty)
        } else {
            None
        };
        let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| failed("creating a pipe", &e))?;
        let socket = self.containers.runtime_dir(&rec.id).join(EXEC_SOCKET);
        let exec = crate::monitor::listen(&socket)
            .map(UnixListener::from)
            .map_err(io("listening on", &socket))?;
        let parent = std::process::id() as i32;
        // SAFETY: the monitor's set-up is single-threaded; the child runs the VMM, which
        // starts its own threads.
        match unsafe { libc::fork() } {
            -1 => Err(failed("fork", &std::io::Error::last_os_error())),
            0 => {
                // SAFETY: prctl and getppid take and return integers only.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    if libc::getppid() != parent {
                        libc::_exit(137);
                    }
                }
                for fd in close_in_child.iter().copied().chain([ready_rd.as_raw_fd()]) {
                    // SAFETY: closing this copy's descriptors the VMM must not hold.
                    unsafe { libc::close(fd) };
                }
                if let Some(pty) = &terminal {
                    // SAFETY: setsid, dup2 and ioctl on descriptors this copy owns: the
                    // terminal becomes the VMM's controlling terminal and stdio, so a resize
                    // of the master (attach) reaches it as SIGWINCH.
                    unsafe {
                        libc::close(pty.master.as_raw_fd());
                        libc::setsid();
                        for fd in 0..3 {
                            libc::dup2(pty.slave.as_raw_fd(), fd);
                        }
                        libc::ioctl(0, libc::TIOCSCTTY, 0);
                    }
                }
                let code = self.vmm_child(&rec.id, rec.open_stdin, exec, ready_wr);
                std::process::exit(code)
            }
            pid => {
                drop(ready_wr);
                drop(exec);
                let master = terminal.map(|pty| pty.master);
                let mut line = String::new();
                let _ = std::io::BufReader::new(std::fs::File::from(ready_rd)).read_line(&mut line);
                let line = line.trim_end();
                if line == super::lifecycle::REPORT_OK {
                    return Ok(container::Started {
                        init: Pid::from_raw(pid),
                        end: container::End::Child,
                        master,
                    });
                }
                let mut status = 0;
                // SAFETY: waitpid writes the status into a local integer.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                let _ = std::fs::remove_file(&socket);
                if line.is_empty() {
                    return Err(EngineError::Monitor(format!(
                        "the microVM's VMM ended before its process started; the guest console is in {}",
                        self.containers.dir(&rec.id).join("console.log").display()
                    )));
                }
                Err(super::lifecycle::parse_report(line))
            }
        }
    }

    /// The VMM process of a detached microVM: boots it, reports on `ready` once its process
    /// runs (or why it could not start), and returns the sandbox's exit status. Errors past
    /// the start go to stderr, which is the sandbox's (its log).
    fn vmm_child(&self, id: &str, stdin: bool, exec: UnixListener, ready: OwnedFd) -> i32 {
        let mut ready = Some(std::fs::File::from(ready));
        let result = self.boot_vm(id, stdin, Some(exec), || {
            if let Some(mut r) = ready.take() {
                let _ = writeln!(r, "{}", super::lifecycle::REPORT_OK);
            }
        });
        match result {
            Ok(outcome) => outcome.exit_code,
            Err(e) => {
                match ready.take() {
                    Some(mut r) => {
                        let _ = r.write_all(super::lifecycle::report_line(&e).as_bytes());
                    }
                    None => eprintln!("berth: {e}"),
                }
                e.exit_code()
            }
        }
    }

    /// `berth exec` into running microVM `rec`: `process` (the sandbox's, with the exec's
    /// command, environment, directory and terminal) as a new session through its VMM.
    /// `-u` is resolved against the image's /etc/passwd and /etc/group, as at create time.
    pub(super) fn exec_vm(
        &self,
        rec: &ContainerRecord,
        mut spec: oci_spec::runtime::Spec,
        mut process: oci_spec::runtime::Process,
        opts: &super::ExecOptions,
    ) -> Result<i32, EngineError> {
        let stream = self.vm_session(rec, "berth exec")?;
        if let Some(user) = &opts.user {
            let image = self.images.resolve(&rec.image_id)?;
            let lowers = self.layers.ensure(&image.layers, &self.ids)?;
            let passwd = rootfs::read_merged(&lowers, "etc/passwd");
            let group = rootfs::read_merged(&lowers, "etc/group");
            let u = spec::user::resolve(user, passwd.as_deref(), group.as_deref())
                .map_err(SpecError::from)?;
            let mut who = process.user().clone();
            who.set_uid(u.uid);
            who.set_gid(u.gid);
            who.set_additional_gids(Some(u.additional_gids));
            process.set_user(who);
        }
        spec.set_process(Some(process));
        let spec = serde_json::to_vec(&spec).map_err(|e| EngineError::Io {
            what: "encoding the runtime spec for",
            path: self.containers.dir(&rec.id),
            source: std::io::Error::other(e),
        })?;
        let session = crate::vm::exec::ExecSession {
            spec,
            tty: opts.tty,
            stdin: opts.interactive,
            detach: opts.detach,
        };
        Ok(crate::vm::exec::exec(stream, session)?)
    }

    /// Makes again what `machine` boots from the caches when it is gone (a cleaned
    /// `~/.cache/berth`, a guest kernel or agent installed anew): the kernel and agent as
    /// found now, the initramfs and the layer disks from the image. True when anything
    /// changed. The writable disk is the sandbox's own and is never remade here.
    fn refresh_machine(
        &self,
        rec: &ContainerRecord,
        machine: &mut VmMachine,
    ) -> Result<bool, EngineError> {
        let boot_files = [&machine.kernel, &machine.initramfs]
            .into_iter()
            .chain(machine.layers.iter());
        if boot_files.into_iter().all(|p| p.exists()) {
            return Ok(false);
        }
        let vm_cache = self.dirs.cache.join("vm");
        machine.kernel = guest::kernel(&self.dirs.data)?;
        let agent = guest::agent(&self.dirs.data)?;
        machine.initramfs = guest::initramfs(&agent, &vm_cache)?;
        let image = self.images.resolve(&rec.image_id).map_err(|e| {
            EngineError::Usage(format!(
                "the layer disks of microVM {} are gone and its image {} with them ({e}): pull the image again, or remove the sandbox",
                rec.name, rec.image
            ))
        })?;
        let lowers = self.layers.ensure(&image.layers, &self.ids)?;
        machine.layers = layer_disks_shown(&lowers, &vm_cache.join("layers"), &self.ids)?;
        Ok(true)
    }

    /// A session with the agent of running microVM `rec`, through its VMM's exec socket
    /// (`berth exec`, and the agent's jobs for `berth cp` and `berth commit`, named by `what`).
    fn vm_session(
        &self,
        rec: &ContainerRecord,
        what: &str,
    ) -> Result<std::os::unix::net::UnixStream, EngineError> {
        if !crate::state::ContainerStore::is_running(rec) {
            return Err(EngineError::Usage(format!(
                "microVM {} is not running, and {what} works through its agent in the guest: start it first with `berth start {}`",
                rec.name, rec.name
            )));
        }
        let socket = self.containers.runtime_dir(&rec.id).join(EXEC_SOCKET);
        if rec.socket.is_none() || !socket.exists() {
            return Err(EngineError::Usage(format!(
                "microVM {} runs in the foreground (`berth run --vm` without -d), which takes no sessions for {what}: start it with `berth run -d --vm` or `berth start`",
                rec.name
            )));
        }
        crate::monitor::connect(&socket).map_err(|e| {
            EngineError::Monitor(format!(
                "cannot reach the VMM of microVM {} at {}: {e}; `berth ps -a` shows its state",
                rec.name,
                socket.display()
            ))
        })
    }

    /// Runs the agent's `job` in running microVM `rec` (see [`crate::vm::exec::builtin`]).
    pub(super) fn vm_job(
        &self,
        rec: &ContainerRecord,
        what: &str,
        job: berth_agent::protocol::Builtin,
        input: Option<&mut (dyn std::io::Read + Send)>,
        output: &mut dyn Write,
    ) -> Result<(), EngineError> {
        let stream = self.vm_session(rec, what)?;
        let dir = self.containers.dir(&rec.id);
        let spec = std::fs::read(dir.join("config.json"))
            .map_err(io("reading the runtime spec in", &dir))?;
        Ok(crate::vm::exec::builtin(stream, spec, job, input, output)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_disk_progress_says_which_disk_of_how_many() {
        let dir = std::path::Path::new("/x/layers/0123456789abcdef0123");
        assert_eq!(short_layer(dir), "0123456789ab");
        assert_eq!(
            start_line(1, 3, "0123456789ab"),
            "Building microVM layer disk 2/3 (layer 0123456789ab); later runs reuse it"
        );
        assert_eq!(
            done_line(1, std::time::Duration::from_millis(1250)),
            "Built 1 microVM layer disk in 1.2s"
        );
        assert_eq!(
            done_line(3, std::time::Duration::from_secs(90)),
            "Built 3 microVM layer disks in 90.0s"
        );
    }

    #[test]
    fn cached_layer_disks_are_told_by_erofs_names() {
        // Every disk cached under erofs's name for it: the paths come back and nothing is
        // built (mkfs.erofs on these missing directories would fail), so the progress's rule
        // for "cached" is erofs's own.
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let lowers: Vec<PathBuf> = ["aaa", "bbb"].iter().map(|n| tmp.path().join(n)).collect();
        for n in ["aaa", "bbb"] {
            std::fs::write(cache.join(format!("{n}.erofs")), b"").unwrap();
        }
        let ids = container::IdMapping::for_current_user();
        let disks = layer_disks_shown(&lowers, &cache, &ids).unwrap();
        assert_eq!(
            disks,
            vec![cache.join("aaa.erofs"), cache.join("bbb.erofs")]
        );
    }
}
