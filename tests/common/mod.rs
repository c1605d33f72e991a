//! Test harness: runs the real `berth` binary, as an unprivileged user, in a
//! state directory of its own, and checks that nothing is left behind.
//!
//! Who runs berth:
//! - test process is root (CI, `scripts/test`): berth runs as the user
//!   `berthtest` (created by `scripts/setup-host`), through
//!   `setpriv --reuid --regid --init-groups` with a clean environment;
//! - test process is an ordinary user: berth runs as that user;
//! - `Berth::as_root()`: berth runs as root, unchanged;
//! - `Berth::options().user(NAME)`: berth runs as the unprivileged user NAME
//!   through setpriv, like `berthtest`; the test process must be root.
//!
//! A fixture whose prerequisites are missing (no test user, no subuid range,
//! no user namespaces, binary out of the user's reach) skips the test with
//! the reason on stderr — except under `CI=true`, where it fails it.
//!
//! Every fixture gets `/tmp/berth-test-XXXXXX/` (0700, owned by the user):
//! `root/` is `BERTH_ROOT`, `run/` is `XDG_RUNTIME_DIR`, `host/` is for files
//! the test shares with containers. When a fixture is dropped it checks that
//! no process still carries its `BERTH_ROOT`, that nothing is mounted under
//! it and, when no other fixture is alive, that the test user runs nothing.

// Each test crate uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod debian;
pub mod image;
pub mod procs;
pub mod pty;
pub mod registry;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

pub use image::{test_images, CONFIG_IMAGE, DOCKER_IMAGE, IMAGE};
pub use pty::PtySession;

/// The unprivileged user the suite runs berth as when it runs as root.
pub const TEST_USER: &str = "berthtest";
/// An unprivileged user with no subordinate id range (created by
/// `scripts/setup-host`), for berth's single-id fallback.
pub const NOSUB_USER: &str = "berthnosub";
/// The PATH berth (and through it the container runtime helpers) sees.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long one berth command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long processes get to go away after a test.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The berth binary cargo built for this test run.
pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// What a script inside `scripts/kvm-nested` exports before it runs monitors or containers:
/// the runtime directory on the inner machine's tmpfs (9p, where the fixture lives, holds no
/// UNIX sockets) and the copy storage driver (overlayfs does not stack on 9p).
pub const NESTED_ENV: &str =
    "export BERTH_RUNTIME_DIR=/run/user/$(id -u)/berth-rt BERTH_STORAGE_DRIVER=copy";

/// scripts/kvm-nested of this checkout.
pub fn kvm_nested_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kvm-nested")
}

/// Runs `bash SCRIPT` inside `scripts/kvm-nested` (a machine with a real KVM) as the fixture's
/// user, with the fixture's directory shared and its `BERTH_ROOT`; the script's own output is
/// what comes back.
pub fn kvm_nested(
    berth: &Berth,
    script: &Path,
    timeout_s: u32,
    stall_s: u32,
) -> Result<Output, String> {
    let nested = kvm_nested_script();
    // The inner machine sees the host's root read-only but mounts its own tmpfs on /tmp: the
    // directory of the berth binary under test is shared too (a checkout may live in /tmp).
    let bin_dir = Path::new(berth_bin())
        .parent()
        .expect("the berth binary has a directory");
    let out = Command::new(&nested)
        .arg("--share")
        .arg(&berth.base)
        .arg("--share")
        .arg(bin_dir)
        .arg("--user")
        .arg(&berth.identity.name)
        .args(["--cpus", "2", "--memory", "3G", "--timeout"])
        .arg(timeout_s.to_string())
        .arg("--stall")
        .arg(stall_s.to_string())
        .arg("--env")
        .arg(format!("BERTH_ROOT={}", berth.root.display()))
        .args(["--", "bash"])
        .arg(script)
        .output()
        .map_err(|e| format!("running {}: {e}", nested.display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/kvm-nested failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Whether /dev/kvm is hardware KVM, which boots a Linux guest: present, and not PVM (the
/// `kvm_pvm` module, software nested virtualization, on which a Linux guest never reaches
/// userspace).
pub fn hardware_kvm() -> bool {
    Path::new("/dev/kvm").exists() && !Path::new("/sys/module/kvm_pvm").exists()
}

/// Runs `bash SCRIPT` on this host as the fixture's user with its `BERTH_ROOT` and runtime
/// directory, within `timeout_s`: how the microVM checks run where /dev/kvm is hardware KVM
/// ([`hardware_kvm`]), without the emulated machine of [`kvm_nested`]. The script's own output
/// is what comes back.
pub fn run_script_directly(berth: &Berth, script: &Path, timeout_s: u32) -> Result<Output, String> {
    let timeout = timeout_s.to_string();
    let script_s = script.to_string_lossy().to_string();
    let out = berth
        .identity
        .command(
            "timeout",
            ["-k", "10", timeout.as_str(), "bash", script_s.as_str()],
        )
        .env("BERTH_ROOT", &berth.root)
        .env("XDG_RUNTIME_DIR", &berth.runtime_dir)
        .envs(
            ["BERTH_VM_KERNEL", "BERTH_VM_AGENT", "CI"]
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v))),
        )
        .current_dir(&berth.host_dir)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// True when `CI=true` (or `1`): prerequisites must be there, nothing skips.
pub fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Skips the calling test with `reason`, or fails it under CI.
pub fn skip(reason: &str) {
    let test = thread::current().name().unwrap_or("test").to_string();
    if ci() {
        panic!("{test}: {reason} (CI=true: missing prerequisites fail the suite)");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Whom berth runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Through setpriv (the test process is root, berth is not).
    pub drop_privileges: bool,
    /// The user's subordinate uid range, if any (start, count).
    pub subuids: Option<(u32, u32)>,
    /// The user's subordinate gid range, if any (start, count).
    pub subgids: Option<(u32, u32)>,
}

fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The identity for unprivileged fixtures, checked once per test process.
fn unprivileged() -> Result<&'static Identity, String> {
    static ID: OnceLock<Result<Identity, String>> = OnceLock::new();
    ID.get_or_init(check_unprivileged)
        .as_ref()
        .map_err(Clone::clone)
}

/// The unprivileged user of this test run: [`TEST_USER`], or `BERTH_TEST_USER` where two
/// checkouts run their suites side by side on one machine (each fixture's clean-up checks that
/// its user runs nothing else, so two runs need two users, each with a subordinate id range).
pub fn test_user() -> String {
    std::env::var("BERTH_TEST_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| TEST_USER.to_string())
}

fn check_unprivileged() -> Result<Identity, String> {
    let user = if is_root() {
        let name = test_user();
        User::from_name(&name)
            .map_err(|e| format!("looking up {name}: {e}"))?
            .ok_or_else(|| format!("no user {name}: run scripts/setup-host as root to create it"))?
    } else {
        User::from_uid(Uid::effective())
            .map_err(|e| format!("looking up uid {}: {e}", Uid::effective()))?
            .ok_or_else(|| format!("uid {} has no /etc/passwd entry", Uid::effective()))?
    };
    let id = identity_of(&user, is_root());
    let (Some(_), Some(_)) = (id.subuids, id.subgids) else {
        return Err(format!(
            "no subordinate id range for {name} in /etc/subuid and /etc/subgid: \
             run `sudo scripts/setup-host --user {name}` (or add `{name}:200000:65536` to both)",
            name = id.name
        ));
    };
    for helper in ["newuidmap", "newgidmap"] {
        if which(helper).is_none() {
            return Err(format!(
                "{helper} not found: install the uidmap package (scripts/setup-host does)"
            ));
        }
    }
    check_usable(&id)?;
    Ok(id)
}

/// The identity for `Options::user(name)` fixtures, checked once per user and
/// test process. Whether the user has a subordinate range is the test's
/// business (`Identity::subuids`, `Identity::subgids`), not a prerequisite.
fn named_user(name: &str) -> Result<Identity, String> {
    static IDS: Mutex<Vec<(String, Result<Identity, String>)>> = Mutex::new(Vec::new());
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, found)) = ids.iter().find(|(n, _)| n == name) {
        return found.clone();
    }
    let checked = check_named_user(name);
    ids.push((name.to_string(), checked.clone()));
    checked
}

fn check_named_user(name: &str) -> Result<Identity, String> {
    if !is_root() {
        return Err(format!(
            "this test runs berth as the user {name}, and switching to that user (setpriv) \
             needs the suite to run as root"
        ));
    }
    let user = User::from_name(name)
        .map_err(|e| format!("looking up {name}: {e}"))?
        .ok_or_else(|| format!("no user {name}: run scripts/setup-host as root to create it"))?;
    if user.uid.is_root() {
        return Err(format!(
            "{name} has uid 0; Options::user is for unprivileged users"
        ));
    }
    let id = identity_of(&user, true);
    check_usable(&id)?;
    Ok(id)
}

/// `user` as berth sees it, with its subordinate ranges.
fn identity_of(user: &User, drop_privileges: bool) -> Identity {
    Identity {
        name: user.name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir.clone(),
        drop_privileges,
        subuids: subid_range("/etc/subuid", &user.name, user.uid.as_raw()),
        subgids: subid_range("/etc/subgid", &user.name, user.uid.as_raw()),
    }
}

/// What any unprivileged identity needs: to reach the binary and the test
/// images, and to create a user namespace.
fn check_usable(id: &Identity) -> Result<(), String> {
    if id.drop_privileges {
        // The user must reach the binary and the test images through every parent directory.
        let images = image::images_dir();
        let images_parent = images.parent().unwrap_or(Path::new("/"));
        let parent = images_parent.to_string_lossy().into_owned();
        let script = "test -x \"$1\" && test -x \"$2\"";
        let probe = id.command(
            "/bin/sh",
            ["-c", script, "sh", berth_bin(), parent.as_str()],
        );
        if !quiet_success(probe) {
            return Err(format!(
                "{} cannot reach {} or {}: a parent directory is not searchable by others \
                 (e.g. a checkout under /root); `chmod o+x` the parents or move the checkout to /work or /srv",
                id.name,
                berth_bin(),
                images_parent.display()
            ));
        }
    }
    if !quiet_success(id.command("unshare", ["--user", "--map-root-user", "true"])) {
        return Err(format!(
            "{} cannot create a user namespace: run scripts/setup-host as root \
             (it enables kernel.unprivileged_userns_clone, user.max_user_namespaces and \
             lifts AppArmor's restriction)",
            id.name
        ));
    }
    Ok(())
}

impl Identity {
    /// `program args` run as this identity, with a clean environment.
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = if self.drop_privileges {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }
}

fn root_identity() -> Identity {
    Identity {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
        drop_privileges: false,
        subuids: subid_range("/etc/subuid", "root", 0),
        subgids: subid_range("/etc/subgid", "root", 0),
    }
}

/// The first `NAME:START:COUNT` (or `UID:START:COUNT`) line for the user.
fn subid_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        if owner != name && owner != id.to_string() {
            return None;
        }
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

fn which(program: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn quiet_success(mut cmd: Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Fixtures alive in this process; the last one to go checks for stray
/// processes, ignoring those that already ran when the first one started
/// (another session's berth, a podman pause process): the harness reports
/// processes it cannot attribute, and kills only its own.
static ALIVE: Mutex<(usize, Vec<i32>)> = Mutex::new((0, Vec::new()));

/// Whom a fixture runs berth as.
#[derive(Default)]
enum Who {
    /// `berthtest` when the suite runs as root, else the user running it.
    #[default]
    Unprivileged,
    Root,
    /// A named unprivileged user (the suite must run as root).
    User(String),
}

/// How to set a fixture up.
#[derive(Default)]
pub struct Options {
    who: Who,
    global_args: Vec<String>,
    env: Vec<(String, String)>,
    no_image: bool,
}

impl Options {
    /// Run berth as root instead of the unprivileged user.
    pub fn root(mut self) -> Self {
        self.who = Who::Root;
        self
    }

    /// Run berth as the unprivileged user `name` (e.g. [`NOSUB_USER`])
    /// instead of the usual one. Needs the suite to run as root: otherwise
    /// the test skips (fails under CI).
    pub fn user(mut self, name: &str) -> Self {
        self.who = Who::User(name.to_string());
        self
    }

    /// An option put before every berth command (e.g. `--storage-driver`).
    pub fn global_arg(mut self, arg: &str) -> Self {
        self.global_args.push(arg.to_string());
        self
    }

    /// An environment variable for every berth command.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Do not load the standard test image.
    pub fn no_image(mut self) -> Self {
        self.no_image = true;
        self
    }

    /// The fixture, or `None` (after printing why) when the test must skip.
    pub fn start(self) -> Option<Berth> {
        let identity = match &self.who {
            Who::Root => {
                if !is_root() {
                    skip("this test runs berth as root and the suite is not running as root");
                    return None;
                }
                root_identity()
            }
            Who::Unprivileged => match unprivileged() {
                Ok(id) => id.clone(),
                Err(reason) => {
                    skip(&reason);
                    return None;
                }
            },
            Who::User(name) => match named_user(name) {
                Ok(id) => id,
                Err(reason) => {
                    skip(&reason);
                    return None;
                }
            },
        };
        let berth = Berth::create(identity, self.global_args, self.env);
        if !self.no_image {
            berth.load(&test_images().oci);
        }
        Some(berth)
    }
}

/// One isolated berth installation for one test.
pub struct Berth {
    pub identity: Identity,
    /// /tmp/berth-test-XXXXXX, removed on drop.
    pub base: PathBuf,
    /// BERTH_ROOT: all of berth's state.
    pub root: PathBuf,
    /// XDG_RUNTIME_DIR.
    pub runtime_dir: PathBuf,
    /// A directory owned by the user for files shared with containers.
    pub host_dir: PathBuf,
    global_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Berth {
    /// The usual fixture: unprivileged, with [`IMAGE`] loaded.
    pub fn new() -> Option<Berth> {
        Options::default().start()
    }

    /// Berth run as root, with [`IMAGE`] loaded.
    pub fn as_root() -> Option<Berth> {
        Options::default().root().start()
    }

    pub fn options() -> Options {
        Options::default()
    }

    fn create(identity: Identity, global_args: Vec<String>, env: Vec<(String, String)>) -> Berth {
        {
            let mut alive = ALIVE.lock().unwrap_or_else(|e| e.into_inner());
            if alive.0 == 0 {
                alive.1 = procs::processes(|_, _, _| true)
                    .iter()
                    .map(|p| p.pid)
                    .collect();
            }
            alive.0 += 1;
        }
        let base = nix::unistd::mkdtemp("/tmp/berth-test-XXXXXX").expect("mkdtemp under /tmp");
        let owner = (
            Some(Uid::from_raw(identity.uid)),
            Some(Gid::from_raw(identity.gid)),
        );
        let make = |path: &Path, mode: u32| {
            fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            nix::unistd::chown(path, owner.0, owner.1)
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        };
        make(&base, 0o700);
        let (root, runtime_dir, host_dir) =
            (base.join("root"), base.join("run"), base.join("host"));
        make(&root, 0o700);
        make(&runtime_dir, 0o700);
        make(&host_dir, 0o755);
        Berth {
            identity,
            base,
            root,
            runtime_dir,
            host_dir,
            global_args,
            env,
        }
    }

    /// `berth ARGS` as a Command, ready to adjust and spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(berth_bin()), args)
    }

    /// `PROGRAM ARGS` as [`Berth::command`] runs berth: PROGRAM is another berth binary (a
    /// copy the user owns, say) with this fixture's state, user and environment.
    pub fn command_of(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = self.identity.command(
            &program.to_string_lossy(),
            self.global_args.iter().map(String::as_str),
        );
        cmd.args(args)
            .env("BERTH_ROOT", &self.root)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("RUST_BACKTRACE", "1")
            // Where scripts/test installed the microVM guest, when not in a standard place.
            .envs(
                ["BERTH_VM_KERNEL", "BERTH_VM_AGENT"]
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v))),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.host_dir);
        cmd
    }

    /// `berth ARGS`, waited for (with a timeout), output captured.
    pub fn cmd(&self, args: &[&str]) -> Output {
        finish(self.command(args), None, args)
    }

    /// `berth ARGS` with `input` on stdin.
    pub fn cmd_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        finish(self.command(args), Some(input), args)
    }

    /// `berth ARGS`, which must succeed; returns its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "{}", describe(args, &out));
        stdout(&out)
    }

    /// `berth run --rm ARGS`.
    pub fn container(&self, args: &[&str]) -> Output {
        let full: Vec<&str> = ["run", "--rm"]
            .iter()
            .copied()
            .chain(args.iter().copied())
            .collect();
        self.cmd(&full)
    }

    /// `berth run --rm ARGS`, which must exit 0; returns its stdout.
    pub fn container_ok(&self, args: &[&str]) -> String {
        let full: Vec<&str> = ["run", "--rm"]
            .iter()
            .copied()
            .chain(args.iter().copied())
            .collect();
        self.run_ok(&full)
    }

    /// `berth load -i ARCHIVE`; returns its stdout.
    pub fn load(&self, archive: &Path) -> String {
        self.run_ok(&["load", "-i", &archive.to_string_lossy()])
    }

    /// Loads [`CONFIG_IMAGE`] too.
    pub fn load_config_image(&self) {
        self.load(&test_images().config_oci);
    }

    /// `berth ARGS` running in the background with piped stdio.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args), args)
    }

    /// `berth ARGS` on a fresh `rows` x `cols` pty.
    pub fn spawn_pty(&self, args: &[&str], rows: u16, cols: u16) -> PtySession {
        let mut cmd = self.command(args);
        cmd.env("TERM", "xterm");
        let owner = self
            .identity
            .drop_privileges
            .then_some((self.identity.uid, self.identity.gid));
        PtySession::spawn(cmd, rows, cols, owner)
    }

    /// A directory under `host/`, owned by the user berth runs as.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.host_dir.join(name)
    }

    /// Creates `host/NAME` as a directory owned by the user.
    pub fn host_mkdir(&self, name: &str) -> PathBuf {
        let path = self.host_path(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.give(&path);
        path
    }

    /// Writes `host/NAME`, owned by the user.
    pub fn host_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.host_path(name);
        fs::write(&path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.give(&path);
        path
    }

    pub fn give(&self, path: &Path) {
        let uid = Some(Uid::from_raw(self.identity.uid));
        let gid = Some(Gid::from_raw(self.identity.gid));
        nix::unistd::chown(path, uid, gid)
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// Processes started through this fixture that are still running.
    pub fn own_processes(&self) -> Vec<procs::Process> {
        procs::with_env(&format!("BERTH_ROOT={}", self.root.display()))
    }

    /// The leftover checks; returns what is wrong (empty when clean).
    fn leftovers(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mine = procs::wait_until_gone(EXIT_GRACE, || self.own_processes());
        if !mine.is_empty() {
            problems.push(format!("processes left running:\n  {}", join(&mine)));
            procs::kill_all(&mine);
        }
        let mounts = procs::mounts_under(&self.base);
        if !mounts.is_empty() {
            problems.push(format!(
                "mounts left under {}:\n  {}",
                self.base.display(),
                mounts.join("\n  ")
            ));
        }
        problems
    }

    /// Processes of the test user or its subordinate ids; only meaningful
    /// when no fixture is running anything.
    fn stray_user_processes(&self) -> Vec<procs::Process> {
        let id = &self.identity;
        let in_subids = |uid: u32| {
            id.subuids
                .is_some_and(|(start, count)| uid >= start && uid - start < count)
        };
        if id.drop_privileges {
            procs::processes(|_, uid, _| uid == id.uid || in_subids(uid))
        } else if id.uid == 0 {
            Vec::new()
        } else {
            // Running as ourselves: our other processes (shell, cargo) are not berth's.
            let marker = b"BERTH_ROOT=/tmp/berth-test-";
            procs::processes(|_, uid, environ| {
                in_subids(uid)
                    || (uid == id.uid
                        && environ().split(|b| *b == 0).any(|e| e.starts_with(marker)))
            })
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let mut problems = self.leftovers();
        {
            let mut alive = ALIVE.lock().unwrap_or_else(|e| e.into_inner());
            alive.0 -= 1;
            if alive.0 == 0 {
                let before = std::mem::take(&mut alive.1);
                let stray = procs::wait_until_gone(EXIT_GRACE, || {
                    let mut found = self.stray_user_processes();
                    found.retain(|p| !before.contains(&p.pid));
                    found
                });
                if !stray.is_empty() {
                    problems.push(format!(
                        "processes of {} left running (by this or an earlier test of this crate):\n  {}",
                        self.identity.name,
                        join(&stray)
                    ));
                }
            }
        }
        // Never delete through a mount: that would reach into whatever is mounted.
        if procs::mounts_under(&self.base).is_empty() {
            remove_tree(&self.base, &self.identity);
        }
        if !problems.is_empty() && !thread::panicking() {
            panic!("berth left things behind:\n{}", problems.join("\n"));
        }
    }
}

fn join(procs: &[procs::Process]) -> String {
    procs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Removes a fixture directory. Root removes anything; an ordinary user
/// needs a user namespace with its subordinate ids mapped to remove files
/// owned by them (unpacked layers, containers' writes).
fn remove_tree(path: &Path, identity: &Identity) {
    if fs::remove_dir_all(path).is_ok() || is_root() {
        return;
    }
    let status = Command::new("unshare")
        .args(["--map-root-user", "--map-auto", "rm", "-rf"])
        .arg(path)
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "note: could not remove {} (files of {}'s subordinate ids)",
            path.display(),
            identity.name
        );
    }
}

/// Runs `cmd` (berth with `args`) to its end within the command timeout, output captured.
pub fn finish(mut cmd: Command, input: Option<&[u8]>, args: &[&str]) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning berth {args:?}: {e}"));
    let writer = child.stdin.take().map(|mut stdin| {
        let data = input.unwrap_or_default().to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let Some(status) = wait_timeout(child, COMMAND_TIMEOUT) else {
        panic!(
            "berth {} did not finish within {COMMAND_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.join().unwrap_or_default()),
            String::from_utf8_lossy(&err.join().unwrap_or_default())
        );
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// The child's status, or None after killing it when `timeout` passed.
fn wait_timeout(mut child: Child, timeout: Duration) -> Option<ExitStatus> {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => Some(status.expect("waiting for berth")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            None
        }
    }
}

/// A berth command running in the background.
pub struct Running {
    child: Option<Child>,
    args: Vec<String>,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    fn start(mut cmd: Command, args: &[&str]) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning berth {args:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let pipe = child.stdout.take().expect("piped stdout");
        let acc = Arc::clone(&stdout);
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = acc.lock().unwrap_or_else(|e| e.into_inner());
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
        let stderr = collect(child.stderr.take());
        Running {
            child: Some(child),
            args: args.iter().map(|s| s.to_string()).collect(),
            lines,
            stdout,
            stdout_reader: Some(stdout_reader),
            stderr: Some(stderr),
        }
    }

    /// The berth process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Blocks until a stdout line contains `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "berth {}: no line with {needle:?} within {timeout:?}; stdout so far:\n{}",
                        self.args.join(" "),
                        self.stdout_so_far()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let out = self.take_output(Duration::from_secs(10));
                    panic!(
                        "berth {} ended before printing {needle:?}\n{}",
                        self.args.join(" "),
                        describe_strs(&self.args, &out)
                    )
                }
            }
        }
    }

    pub fn stdout_so_far(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends `signal` to the berth process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("kill -{signal} berth: {e}"));
    }

    /// Waits for berth to exit and returns everything it printed.
    pub fn wait(mut self, timeout: Duration) -> Output {
        self.take_output(timeout)
    }

    fn take_output(&mut self, timeout: Duration) -> Output {
        let child = self.child.take().expect("waited twice");
        let status = wait_timeout(child, timeout).unwrap_or_else(|| {
            panic!(
                "berth {} did not exit within {timeout:?}; stdout:\n{}",
                self.args.join(" "),
                self.stdout_so_far()
            )
        });
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Output {
            status,
            stdout: self.stdout_so_far().into_bytes(),
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit code the shell would show: the code, or 128+N for signal N.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// A failure message with the command and everything it printed.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "berth {}\nexit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        out.status,
        stdout(out),
        stderr(out)
    )
}

fn describe_strs(args: &[String], out: &Output) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    describe(&args, out)
}

/// Asserts that `out` exited with `expected`, showing the output otherwise.
#[track_caller]
pub fn assert_exit(args: &[&str], out: &Output, expected: i32) {
    assert_eq!(code(out), expected, "{}", describe(args, out));
}

/// Whether an external tool is installed (for tests that use one).
pub fn have(program: &str) -> bool {
    which(program).is_some()
}

/// The `CapEff:` mask of a set of capability numbers, as /proc prints it.
pub fn cap_mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | (1u64 << c)))
}

/// Lines of `text`, trimmed, without empty ones.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The `Key:` line's value from a /proc status text.
pub fn status_field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| l[key.len() + 1..].trim().to_string())
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends `msg` over TCP to `addr` until an answer comes back (the server in the container may
/// not listen yet), and returns the answer.
pub fn tcp_ask(addr: std::net::SocketAddr, msg: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(msg.as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if !reply.is_empty() {
                    return reply;
                }
                last = "connection closed without an answer".into();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no answer from {addr} within {within:?}: {last}");
}
