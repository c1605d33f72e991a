//! The host checks behind `berth doctor`: each one reads what this machine offers, says what
//! it found, and — when something is missing — the exact command (Debian/Ubuntu first) that
//! fixes it.
//!
//! Only an unusable user namespace (for a rootless user) and missing uid-map helpers next to an
//! existing subordinate range are failures: everything else degrades to a slower or narrower
//! mode (fuse-overlayfs or copies instead of kernel overlay, single-id maps, no networking, no
//! `--vm`) and is a warning.

use std::ffi::{CString, OsString};
use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::idmap::{parse_subid, IdMapping, SubRange};
use crate::rootfs::which;

/// How serious a check's finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Works as berth wants it.
    Ok,
    /// berth still runs, in a degraded mode or without one feature.
    Warn,
    /// berth cannot run containers here until this is fixed.
    Fail,
}

impl Level {
    /// The six-column tag `render` prints: `[ ok ]`, `[warn]`, `[FAIL]`.
    pub fn tag(self) -> &'static str {
        match self {
            Level::Ok => "[ ok ]",
            Level::Warn => "[warn]",
            Level::Fail => "[FAIL]",
        }
    }
}

/// One finding of `berth doctor`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Short, stable name of what was checked (e.g. `user namespaces`).
    pub name: &'static str,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// The command to run or the line to add (only meaningful when `level` is not `Ok`).
    pub fix: Option<String>,
}

impl Check {
    fn new(
        name: &'static str,
        level: Level,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            name,
            level,
            detail: detail.into(),
            fix,
        }
    }

    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check::new(name, Level::Ok, detail, None)
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Level::Warn, detail, Some(fix.into()))
    }
}

/// What `/dev/kvm` offers, for `berth info` and the KVM check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmStatus {
    /// No /dev/kvm (or no KVM module behind it).
    Absent,
    /// /dev/kvm exists but this user cannot open it read-write.
    NoAccess,
    /// /dev/kvm opens read-write; `pvm` when it is PVM software nested virtualization.
    Usable { pvm: bool },
}

impl std::fmt::Display for KvmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvmStatus::Absent => "absent",
            KvmStatus::NoAccess => "no access",
            KvmStatus::Usable { pvm: false } => "usable",
            KvmStatus::Usable { pvm: true } => "usable (PVM)",
        })
    }
}

/// Which cgroup hierarchy the host mounts at /sys/fs/cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Legacy: one hierarchy per controller, no unified tree.
    V1,
    /// v1 controllers plus an (empty-handed) v2 tree at /sys/fs/cgroup/unified.
    Hybrid,
    /// Unified cgroup v2.
    V2,
    /// Nothing recognisable is mounted at /sys/fs/cgroup.
    None,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::V1 => "v1",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::V2 => "v2",
            CgroupMode::None => "none",
        })
    }
}

/// Runs every host check, in the order `berth doctor` prints them.
pub fn run_checks() -> Vec<Check> {
    let me = Me::current();
    let subuid_text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid_text = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let subu = parse_subid(&subuid_text, &me.name, me.uid);
    let subg = parse_subid(&subgid_text, &me.name, me.uid);
    let tools = [
        ("newuidmap", tool_state("newuidmap")),
        ("newgidmap", tool_state("newgidmap")),
    ];
    let overlay = overlay_facts();
    let overlay_ok = overlay.probe.is_ok();
    vec![
        check_uidmap_tools(&tools, me.needs_userns, subu.is_some() && subg.is_some()),
        check_subids(
            &me,
            subu,
            subg,
            free_subid_start(&[&subuid_text, &subgid_text]),
        ),
        check_userns(&userns_facts(), &me),
        check_overlay(&overlay, &me),
        check_fuse(
            which("fuse-overlayfs"),
            dev_state(Path::new("/dev/fuse")),
            overlay_ok,
        ),
        check_network(which("slirp4netns"), which("pasta"), which("iptables")),
        check_kvm(dev_state(Path::new("/dev/kvm")), is_pvm(), &me),
        check_vm_guest(),
        check_cgroups(cgroup_mode(), &me),
        check_runtime_dir(
            std::env::var_os("BERTH_ROOT").filter(|v| !v.is_empty()),
            std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()),
            me.uid,
        ),
    ]
}

/// True when any check failed (berth cannot run containers here).
pub fn has_failures(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.level == Level::Fail)
}

/// One line per check (`[ ok ] name: detail`), with an indented `fix:` under non-ok ones.
pub fn render(checks: &[Check]) -> String {
    const INDENT: &str = "       ";
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "{} {}: {}", c.level.tag(), c.name, c.detail);
        if c.level == Level::Ok {
            continue;
        }
        if let Some(fix) = &c.fix {
            for (i, line) in fix.lines().enumerate() {
                if i == 0 {
                    let _ = writeln!(out, "{INDENT}fix: {line}");
                } else {
                    let _ = writeln!(out, "{INDENT}     {line}");
                }
            }
        }
    }
    out
}

/// Whether /dev/kvm is there, opens read-write, and is PVM.
pub fn kvm_status() -> KvmStatus {
    match dev_state(Path::new("/dev/kvm")) {
        DevState::Missing => KvmStatus::Absent,
        DevState::NoAccess(_) => KvmStatus::NoAccess,
        DevState::ReadWrite => KvmStatus::Usable { pvm: is_pvm() },
    }
}

/// Reads the cgroup hierarchy mounted at /sys/fs/cgroup.
pub fn cgroup_mode() -> CgroupMode {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
    let Ok(fs) = statfs("/sys/fs/cgroup") else {
        return CgroupMode::None;
    };
    let t = fs.filesystem_type();
    classify_cgroup(
        t == CGROUP2_SUPER_MAGIC,
        t == TMPFS_MAGIC,
        Path::new("/sys/fs/cgroup/unified").exists(),
    )
}

/// Parses `major.minor` from a kernel release such as `6.8.0-45-generic`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Whether `release` is at least `min` (false when it cannot be parsed).
pub fn kernel_at_least(release: &str, min: (u32, u32)) -> bool {
    parse_kernel_version(release).is_some_and(|v| v >= min)
}

// ---------------------------------------------------------------------------------------------
// Who is asking

/// The calling user, as the container code will see it.
struct Me {
    uid: u32,
    name: String,
    /// False for root (berth runs without a user namespace), unless `BERTH_FORCE_USERNS` is set,
    /// exactly as `IdMapping::for_current_user` decides.
    needs_userns: bool,
}

impl Me {
    fn current() -> Me {
        let uid = nix::unistd::geteuid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Me {
            uid,
            name,
            needs_userns: uid != 0 || std::env::var_os("BERTH_FORCE_USERNS").is_some(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. newuidmap / newgidmap

#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolState {
    Missing,
    /// On PATH but neither setuid root nor carrying file capabilities.
    Unprivileged(PathBuf),
    SetuidRoot(PathBuf),
    FileCaps(PathBuf),
}

impl ToolState {
    fn usable(&self) -> bool {
        matches!(self, ToolState::SetuidRoot(_) | ToolState::FileCaps(_))
    }
}

fn tool_state(name: &str) -> ToolState {
    let Some(path) = which(name) else {
        return ToolState::Missing;
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return ToolState::Missing;
    };
    if meta.mode() & 0o4000 != 0 && meta.uid() == 0 {
        ToolState::SetuidRoot(path)
    } else if has_file_caps(&path) {
        ToolState::FileCaps(path)
    } else {
        ToolState::Unprivileged(path)
    }
}

/// Whether `path` carries a `security.capability` extended attribute.
fn has_file_caps(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both arguments are NUL-terminated strings that outlive the call; a null buffer of
    // size 0 asks only for the attribute's size, so nothing is written.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n >= 0
}

fn check_uidmap_tools(tools: &[(&str, ToolState)], needs_userns: bool, has_range: bool) -> Check {
    const NAME: &str = "newuidmap/newgidmap";
    let described: Vec<String> = tools
        .iter()
        .map(|(name, state)| match state {
            ToolState::Missing => format!("{name} not found on PATH"),
            ToolState::Unprivileged(p) => {
                format!(
                    "{} is neither setuid root nor has file capabilities",
                    p.display()
                )
            }
            ToolState::SetuidRoot(p) => format!("{} (setuid root)", p.display()),
            ToolState::FileCaps(p) => format!("{} (file capabilities)", p.display()),
        })
        .collect();
    let detail = described.join(", ");
    if tools.iter().all(|(_, s)| s.usable()) {
        return Check::ok(NAME, detail);
    }
    if !needs_userns {
        return Check::ok(NAME, format!("{detail} (not needed: running as root)"));
    }
    let mut fixes = Vec::new();
    if tools.iter().any(|(_, s)| *s == ToolState::Missing) {
        fixes.push("sudo apt-get install uidmap".to_string());
    }
    for (_, state) in tools {
        if let ToolState::Unprivileged(p) = state {
            fixes.push(format!(
                "sudo chown root:root {0} && sudo chmod u+s {0}",
                p.display()
            ));
        }
    }
    let fix = fixes.join(" && ");
    if has_range {
        Check::new(
            NAME,
            Level::Fail,
            format!("{detail}: your subordinate ids cannot be mapped"),
            Some(fix),
        )
    } else {
        Check::warn(
            NAME,
            format!("{detail} (without a subordinate range berth maps only your own id and does not need them)"),
            fix,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 2. subordinate ids

/// The smallest id at or above 100000 that no range in the given subid files uses.
fn free_subid_start(texts: &[&str]) -> u32 {
    let end = texts
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(':').skip(1);
            let start: u64 = parts.next()?.trim().parse().ok()?;
            let count: u64 = parts.next()?.trim().parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(0)
        .max(100_000);
    u32::try_from(end)
        .ok()
        .filter(|e| e.checked_add(65_536).is_some())
        .unwrap_or(100_000)
}

const FULL_RANGE: u32 = 65_536;

fn check_subids(me: &Me, subu: Option<SubRange>, subg: Option<SubRange>, free: u32) -> Check {
    const NAME: &str = "subordinate ids";
    if !me.needs_userns {
        return Check::ok(NAME, "running as root: no user namespace needed");
    }
    let user = &me.name;
    let new_range = format!("{free}-{}", free as u64 + FULL_RANGE as u64 - 1);
    let show = |kind: &str, r: Option<SubRange>| match r {
        Some(r) => format!("{kind} {}:{}", r.start, r.count),
        None => format!("no {kind} range for {user}"),
    };
    let detail = format!("{}, {}", show("subuid", subu), show("subgid", subg));
    match (subu, subg) {
        (Some(u), Some(g)) if u.count >= FULL_RANGE && g.count >= FULL_RANGE => {
            Check::ok(NAME, detail)
        }
        (Some(u), Some(g)) => {
            let mut del = Vec::new();
            let mut add = Vec::new();
            for (flag, r) in [("subuids", u), ("subgids", g)] {
                if r.count < FULL_RANGE {
                    let last = r.start as u64 + r.count as u64 - 1;
                    del.push(format!("--del-{flag} {}-{last}", r.start));
                    add.push(format!("--add-{flag} {new_range}"));
                }
            }
            Check::warn(
                NAME,
                format!(
                    "{detail}: fewer than {FULL_RANGE} ids, so images with files owned by higher ids fail to unpack"
                ),
                format!("sudo usermod {} {user} && sudo usermod {} {user}", del.join(" "), add.join(" ")),
            )
        }
        _ => {
            let mut flags = Vec::new();
            let mut files = Vec::new();
            if subu.is_none() {
                flags.push(format!("--add-subuids {new_range}"));
                files.push("/etc/subuid");
            }
            if subg.is_none() {
                flags.push(format!("--add-subgids {new_range}"));
                files.push("/etc/subgid");
            }
            Check::warn(
                NAME,
                format!("{detail}: single-id mode (only container root exists; chown to other ids fails)"),
                format!(
                    "sudo usermod {} {user} (or add the line `{user}:{free}:{FULL_RANGE}` to {})",
                    flags.join(" "),
                    files.join(" and ")
                ),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. user namespaces

/// The outcome of forking a child that unshares a user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UsernsProbe {
    /// unshare(CLONE_NEWUSER) and a mount namespace inside it both worked.
    Works,
    /// unshare(CLONE_NEWUSER) failed with this errno.
    NoUserns(i32),
    /// The user namespace was created but grants no capabilities (unshare(CLONE_NEWNS) failed
    /// with this errno): the signature of Ubuntu's AppArmor restriction.
    NoCaps(i32),
    /// The probe itself could not run.
    Error(String),
}

struct UsernsFacts {
    unprivileged_userns_clone: Option<i64>,
    max_user_namespaces: Option<i64>,
    apparmor_restrict: Option<i64>,
    probe: UsernsProbe,
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn userns_facts() -> UsernsFacts {
    UsernsFacts {
        unprivileged_userns_clone: read_sysctl("/proc/sys/kernel/unprivileged_userns_clone"),
        max_user_namespaces: read_sysctl("/proc/sys/user/max_user_namespaces"),
        apparmor_restrict: read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        probe: probe_userns(),
    }
}

fn probe_userns() -> UsernsProbe {
    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe calls (unshare, reading errno, _exit), so it is sound even though the
    // parent may be multi-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return UsernsProbe::Error(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let errno = || {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(1)
                .clamp(1, 127)
        };
        // SAFETY: unshare only changes this (child) process's namespaces; _exit ends the child
        // without running the parent's atexit handlers or destructors.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(errno());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                libc::_exit(128 + errno());
            }
            libc::_exit(0);
        }
    }
    use nix::sys::wait::{waitpid, WaitStatus};
    let child = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return UsernsProbe::Error(format!("waiting for the probe child: {e}")),
            Ok(WaitStatus::Exited(_, 0)) => return UsernsProbe::Works,
            Ok(WaitStatus::Exited(_, code)) if code < 128 => return UsernsProbe::NoUserns(code),
            Ok(WaitStatus::Exited(_, code)) => return UsernsProbe::NoCaps(code - 128),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return UsernsProbe::Error(format!("probe child killed by {sig}"))
            }
            Ok(_) => continue,
        }
    }
}

fn errno_text(e: i32) -> String {
    nix::errno::Errno::from_raw(e).desc().to_string()
}

fn check_userns(f: &UsernsFacts, me: &Me) -> Check {
    const NAME: &str = "user namespaces";
    let mut found = Vec::new();
    if let Some(v) = f.unprivileged_userns_clone {
        found.push(format!("kernel.unprivileged_userns_clone={v}"));
    }
    if let Some(v) = f.max_user_namespaces {
        found.push(format!("user.max_user_namespaces={v}"));
    }
    if let Some(v) = f.apparmor_restrict {
        found.push(format!("kernel.apparmor_restrict_unprivileged_userns={v}"));
    }
    let probe = match &f.probe {
        UsernsProbe::Works => "unshare(CLONE_NEWUSER) works".to_string(),
        UsernsProbe::NoUserns(e) => format!("unshare(CLONE_NEWUSER) fails: {}", errno_text(*e)),
        UsernsProbe::NoCaps(e) => format!(
            "a user namespace is created but grants no capabilities (unshare(CLONE_NEWNS) inside fails: {})",
            errno_text(*e)
        ),
        UsernsProbe::Error(e) => format!("probe failed: {e}"),
    };
    found.push(probe);
    let detail = found.join(", ");
    if f.probe == UsernsProbe::Works {
        return Check::ok(NAME, detail);
    }
    let persist = |key: &str, value: &str| {
        format!(
            "sudo sysctl -w {key}={value} && echo {key}={value} | sudo tee /etc/sysctl.d/90-berth-userns.conf"
        )
    };
    let fix = if f.unprivileged_userns_clone == Some(0) {
        persist("kernel.unprivileged_userns_clone", "1")
    } else if f.max_user_namespaces == Some(0) || f.probe == UsernsProbe::NoUserns(libc::ENOSPC) {
        persist("user.max_user_namespaces", "28633")
    } else if f.apparmor_restrict.is_some_and(|v| v != 0) {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/local/bin/berth".to_string());
        format!(
            "printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile berth {exe} flags=(unconfined) {{\\n  userns,\\n}}\\n' | sudo tee /etc/apparmor.d/berth && sudo apparmor_parser -r /etc/apparmor.d/berth\n(or, for every program: {})",
            persist("kernel.apparmor_restrict_unprivileged_userns", "0")
        )
    } else {
        "something else blocks user namespaces (a seccomp filter, e.g. inside a Docker container, or a hardened kernel): run berth directly on the host".to_string()
    };
    if me.needs_userns {
        Check::new(NAME, Level::Fail, detail, Some(fix))
    } else {
        Check::warn(
            NAME,
            format!("{detail} (as root berth runs without one)"),
            fix,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 4. kernel overlayfs

struct OverlayFacts {
    release: String,
    in_proc_filesystems: bool,
    module_available: bool,
    probe: Result<(), String>,
}

fn overlay_facts() -> OverlayFacts {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_proc_filesystems = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    let module_available = Path::new("/sys/module/overlay").exists()
        || Path::new("/lib/modules")
            .join(&release)
            .join("kernel/fs/overlayfs")
            .exists()
        || std::fs::read_to_string(
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.builtin"),
        )
        .is_ok_and(|t| t.contains("overlayfs/overlay.ko"));
    OverlayFacts {
        release,
        in_proc_filesystems,
        module_available,
        probe: probe_overlay(),
    }
}

fn probe_overlay() -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let scratch = std::env::temp_dir().join(format!("berth-doctor-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let res = crate::rootfs::probe_kernel_overlay(&scratch, &IdMapping::for_current_user());
    let _ = std::fs::remove_dir_all(&scratch);
    res
}

fn check_overlay(f: &OverlayFacts, me: &Me) -> Check {
    const NAME: &str = "kernel overlayfs";
    let how = if me.needs_userns {
        "in a user namespace"
    } else {
        "as root"
    };
    match &f.probe {
        Ok(()) => Check::ok(
            NAME,
            format!("kernel {}: overlay mounts work {how}", f.release),
        ),
        Err(e) => {
            let fallback =
                "fuse-overlayfs (sudo apt-get install fuse-overlayfs) or plain copies take over";
            let (why, fix) = if !kernel_at_least(&f.release, (5, 11)) && me.needs_userns {
                (
                    "older than 5.11, which first allowed overlay mounts in a user namespace".to_string(),
                    format!("upgrade the kernel to 5.11 or newer (sudo apt-get install linux-generic); until then {fallback}"),
                )
            } else if !f.in_proc_filesystems && f.module_available {
                (
                    "overlay is not in /proc/filesystems but the module exists".to_string(),
                    "sudo modprobe overlay && echo overlay | sudo tee /etc/modules-load.d/overlay.conf".to_string(),
                )
            } else if !f.in_proc_filesystems {
                (
                    "this kernel has no overlayfs (CONFIG_OVERLAY_FS)".to_string(),
                    format!("nothing to fix for berth to run: {fallback}"),
                )
            } else {
                (
                    "overlay is available but the probe mount failed".to_string(),
                    format!("nothing to fix for berth to run: {fallback}"),
                )
            };
            Check::warn(NAME, format!("kernel {}: {why}: {e}", f.release), fix)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. fuse-overlayfs, 6. networking helpers

#[derive(Debug, Clone, PartialEq, Eq)]
enum DevState {
    ReadWrite,
    Missing,
    NoAccess(String),
}

fn dev_state(path: &Path) -> DevState {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => DevState::ReadWrite,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DevState::Missing,
        // No driver behind the node (module not loaded): as good as absent.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENODEV)) => DevState::Missing,
        Err(e) => DevState::NoAccess(e.to_string()),
    }
}

/// The version line `tool --version` prints, waiting at most two seconds.
fn tool_version(path: &Path) -> Option<String> {
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if text.trim().is_empty() {
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
    }
    // Prefer the line naming the tool (fuse-overlayfs prints fusermount's version first).
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.clone().next();
    lines
        .find(|l| l.contains(name.as_str()))
        .or(first)
        .map(str::to_string)
}

fn describe_tool(name: &str, path: &Option<PathBuf>) -> String {
    match path {
        None => format!("{name} not found"),
        Some(p) => match tool_version(p) {
            Some(v) => format!("{} ({v})", p.display()),
            None => p.display().to_string(),
        },
    }
}

fn check_fuse(bin: Option<PathBuf>, dev: DevState, overlay_ok: bool) -> Check {
    const NAME: &str = "fuse-overlayfs";
    let mut found = vec![describe_tool("fuse-overlayfs", &bin)];
    let mut fixes = Vec::new();
    if bin.is_none() {
        fixes.push("sudo apt-get install fuse-overlayfs".to_string());
    }
    match &dev {
        DevState::ReadWrite => found.push("/dev/fuse read-write".to_string()),
        DevState::Missing => {
            found.push("no /dev/fuse".to_string());
            fixes.push("sudo modprobe fuse".to_string());
        }
        DevState::NoAccess(e) => {
            found.push(format!(
                "/dev/fuse not accessible ({e}; udev makes it 0666 on most distros)"
            ));
            fixes.push("sudo chmod 0666 /dev/fuse".to_string());
        }
    }
    let mut detail = found.join(", ");
    if fixes.is_empty() {
        return Check::ok(NAME, detail);
    }
    if overlay_ok {
        detail.push_str(" (only a fallback: kernel overlay works here)");
    } else {
        detail.push_str(" (without it berth copies every layer into each container)");
    }
    Check::warn(NAME, detail, fixes.join(" && "))
}

fn check_network(
    slirp: Option<PathBuf>,
    pasta: Option<PathBuf>,
    iptables: Option<PathBuf>,
) -> Check {
    const NAME: &str = "networking";
    if slirp.is_none() && pasta.is_none() {
        return Check::warn(
            NAME,
            "neither slirp4netns nor pasta found: container networking other than none/host needs one",
            "sudo apt-get install slirp4netns passt",
        );
    }
    if slirp.is_none() || iptables.is_none() {
        return Check::warn(
            NAME,
            format!(
                "{}, {}, {}: user-defined networks (`berth network create`) need slirp4netns and iptables",
                describe_tool("slirp4netns", &slirp),
                describe_tool("pasta", &pasta),
                describe_tool("iptables", &iptables)
            ),
            "sudo apt-get install slirp4netns iptables",
        );
    }
    Check::ok(
        NAME,
        format!(
            "{}, {}",
            describe_tool("slirp4netns", &slirp),
            describe_tool("pasta", &pasta)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// 7. KVM

/// Whether the host's KVM is PVM (software nested virtualization).
fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
        || std::fs::read_to_string("/proc/modules").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().next() == Some("kvm_pvm"))
        })
}

/// The KVM module for this CPU (`kvm_intel`, `kvm_amd`), when /proc/cpuinfo tells.
fn kvm_module() -> Option<&'static str> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if info.contains("GenuineIntel") {
        Some("kvm_intel")
    } else if info.contains("AuthenticAMD") {
        Some("kvm_amd")
    } else {
        None
    }
}

fn check_kvm(dev: DevState, pvm: bool, me: &Me) -> Check {
    const NAME: &str = "kvm";
    const PVM: &str = "KVM here is PVM (software nested virtualization): tiny guests run but standard Linux guests never reach userspace; full microVM runs need hardware KVM or nested virtualization";
    match dev {
        DevState::Missing => Check::warn(
            NAME,
            "no /dev/kvm: microVMs (--vm) need KVM",
            match kvm_module() {
                Some(m) => format!("enable virtualization (VT-x/AMD-V) in the firmware setup, then: sudo modprobe {m}"),
                None => "enable virtualization in the firmware setup, then load the KVM module: sudo modprobe kvm_intel (Intel) or sudo modprobe kvm_amd (AMD)".to_string(),
            },
        ),
        DevState::NoAccess(e) => {
            let meta = std::fs::metadata("/dev/kvm").ok();
            let group = meta
                .as_ref()
                .and_then(|m| {
                    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
                        .ok()
                        .flatten()
                })
                .filter(|g| g.gid.as_raw() != 0);
            let group_rw = meta.as_ref().is_some_and(|m| m.mode() & 0o060 == 0o060);
            let mut detail = format!("/dev/kvm exists but cannot be opened read-write ({e})");
            let fix = match group.filter(|_| group_rw) {
                Some(g) if g.mem.contains(&me.name) => {
                    detail.push_str(&format!(
                        "; {} is in group {}, but this session started before",
                        me.name, g.name
                    ));
                    format!("log out and back in (or run `newgrp {}`)", g.name)
                }
                Some(g) => format!(
                    "sudo usermod -aG {} {} and log in again (or, until the next reboot: sudo chmod 0666 /dev/kvm)",
                    g.name, me.name
                ),
                None => {
                    if let Some(m) = &meta {
                        detail.push_str(&format!(
                            "; it is mode {:04o}, owner {}:{}, so no group grants access",
                            m.mode() & 0o7777,
                            m.uid(),
                            m.gid()
                        ));
                    }
                    "sudo chmod 0666 /dev/kvm (the mode Debian/Ubuntu's udev rule gives it; lasts until the next reboot)".to_string()
                }
            };
            if pvm {
                detail.push_str(&format!("; {PVM}"));
            }
            Check::warn(NAME, detail, fix)
        }
        DevState::ReadWrite if pvm => Check::warn(
            NAME,
            format!("/dev/kvm read-write, but {PVM}"),
            "run microVMs on hardware with VT-x/AMD-V or in a VM with nested virtualization enabled; here, run berth inside scripts/kvm-nested (a QEMU machine with a real KVM)",
        ),
        DevState::ReadWrite => Check::ok(NAME, "/dev/kvm read-write"),
    }
}

/// The guest kernel and agent `run --vm` boots.
fn check_vm_guest() -> Check {
    const NAME: &str = "vm-guest";
    let data = crate::paths::Dirs::from_env().data;
    match (
        crate::vm::guest::kernel(&data),
        crate::vm::guest::agent(&data),
    ) {
        (Ok(k), Ok(a)) => Check::ok(
            NAME,
            format!("guest kernel {}, agent {}", k.display(), a.display()),
        ),
        (Err(e), _) | (_, Err(e)) => Check::warn(
            NAME,
            format!("microVMs (--vm) cannot start: {e}"),
            "scripts/build-guest (builds berth's guest kernel and agent and installs them)",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 8. cgroups

fn classify_cgroup(is_cgroup2: bool, is_tmpfs: bool, unified_present: bool) -> CgroupMode {
    match (is_cgroup2, is_tmpfs, unified_present) {
        (true, _, _) => CgroupMode::V2,
        (false, true, true) => CgroupMode::Hybrid,
        (false, true, false) => CgroupMode::V1,
        (false, false, _) => CgroupMode::None,
    }
}

/// The cgroup v2 directory delegated to `uid` (owned by it), with its controllers.
fn delegated_cgroup(uid: u32) -> Option<(PathBuf, String)> {
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") {
        if let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) {
            let mut dir = root.join(rel.trim_start_matches('/'));
            while dir.starts_with(root) && dir != root {
                candidates.push(dir.clone());
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    candidates.push(root.join(format!("user.slice/user-{uid}.slice/user@{uid}.service")));
    candidates.into_iter().find_map(|d| {
        let meta = std::fs::metadata(&d).ok()?;
        (meta.is_dir() && meta.uid() == uid).then(|| {
            let ctl = std::fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default();
            (d, ctl.trim().to_string())
        })
    })
}

fn check_cgroups(mode: CgroupMode, me: &Me) -> Check {
    const NAME: &str = "cgroups";
    const TO_V2: &str = "add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX in /etc/default/grub, then: sudo update-grub && sudo reboot";
    const DELEGATE: &str = "sudo mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl daemon-reload, then log in again";
    match mode {
        CgroupMode::V2 if !me.needs_userns => {
            let ctl = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
            Check::ok(NAME, format!("cgroup v2 (controllers: {})", ctl.trim()))
        }
        CgroupMode::V2 => match delegated_cgroup(me.uid) {
            Some((dir, ctl)) if ["cpu", "memory", "pids"].iter().all(|c| ctl.split_whitespace().any(|x| x == *c)) => {
                Check::ok(NAME, format!("cgroup v2, {} delegated to {} (controllers: {ctl})", dir.display(), me.name))
            }
            Some((dir, ctl)) => Check::warn(
                NAME,
                format!(
                    "cgroup v2, {} delegated to {} but with controllers `{ctl}`: rootless cpu/memory/pids limits need cpu, memory and pids",
                    dir.display(),
                    me.name
                ),
                DELEGATE,
            ),
            None => Check::warn(
                NAME,
                format!("cgroup v2, but no cgroup is delegated to {}: rootless resource limits cannot be applied", me.name),
                DELEGATE,
            ),
        },
        CgroupMode::Hybrid => Check::warn(
            NAME,
            "cgroup hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified): resource limits for rootless containers need cgroup v2 with delegation",
            TO_V2,
        ),
        CgroupMode::V1 => Check::warn(
            NAME,
            "cgroup v1: resource limits for rootless containers need cgroup v2 with delegation",
            TO_V2,
        ),
        CgroupMode::None => Check::warn(
            NAME,
            "no cgroup filesystem at /sys/fs/cgroup: resource limits cannot be applied",
            "sudo mount -t cgroup2 none /sys/fs/cgroup",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 9. runtime directory

fn check_runtime_dir(berth_root: Option<OsString>, xdg: Option<OsString>, uid: u32) -> Check {
    const NAME: &str = "runtime dir";
    const EXPORT: &str = "export XDG_RUNTIME_DIR=/run/user/$(id -u)";
    if let Some(root) = berth_root {
        let root = PathBuf::from(root);
        return Check::ok(
            NAME,
            format!(
                "BERTH_ROOT={}: runtime files under {}",
                root.display(),
                root.join("run").display()
            ),
        );
    }
    let Some(dir) = xdg.map(PathBuf::from) else {
        return Check::warn(
            NAME,
            format!("XDG_RUNTIME_DIR is not set: berth falls back to /tmp/berth-{uid}"),
            format!("set XDG_RUNTIME_DIR (e.g. {EXPORT})"),
        );
    };
    let shown = format!("XDG_RUNTIME_DIR={}", dir.display());
    let problem = match std::fs::metadata(&dir) {
        Err(e) => Some(format!("{e}")),
        Ok(m) if !m.is_dir() => Some("not a directory".to_string()),
        Ok(m) if m.uid() != uid => Some(format!("owned by uid {}, not by uid {uid}", m.uid())),
        Ok(_) => nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
            .err()
            .map(|e| format!("not writable: {}", e.desc())),
    };
    match problem {
        None => Check::ok(NAME, format!("{shown} (yours, writable)")),
        Some(p) => Check::warn(
            NAME,
            format!("{shown}: {p}"),
            format!("{EXPORT} (systemd-logind creates it at login), or unset XDG_RUNTIME_DIR to use /tmp/berth-{uid}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(needs_userns: bool) -> Me {
        Me {
            uid: 1000,
            name: "alice".to_string(),
            needs_userns,
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_kernel_version("5.11"), Some((5, 11)));
        assert_eq!(parse_kernel_version("5.4.0-rc1"), Some((5, 4)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!(kernel_at_least("5.11.0", (5, 11)));
        assert!(kernel_at_least("6.1.0", (5, 11)));
        assert!(kernel_at_least("5.15.0-91-generic", (5, 11)));
        assert!(!kernel_at_least("5.10.200", (5, 11)));
        assert!(!kernel_at_least("4.19.0", (5, 11)));
        assert!(!kernel_at_least("", (5, 11)));
    }

    #[test]
    fn render_format() {
        let checks = vec![
            Check::ok("a", "fine"),
            Check::warn("b", "meh", "do this"),
            Check::new(
                "c",
                Level::Fail,
                "broken",
                Some("line one\nline two".into()),
            ),
            Check::new("d", Level::Warn, "no fix", None),
        ];
        assert_eq!(
            render(&checks),
            "[ ok ] a: fine\n\
             [warn] b: meh\n       fix: do this\n\
             [FAIL] c: broken\n       fix: line one\n            line two\n\
             [warn] d: no fix\n"
        );
        assert!(has_failures(&checks));
        assert!(!has_failures(&checks[..2]));
    }

    #[test]
    fn ok_checks_hide_their_fix() {
        let mut c = Check::ok("a", "fine");
        c.fix = Some("unused".into());
        assert_eq!(render(&[c]), "[ ok ] a: fine\n");
    }

    #[test]
    fn free_subid_start_skips_used_ranges() {
        assert_eq!(free_subid_start(&["", ""]), 100_000);
        assert_eq!(
            free_subid_start(&[
                "bob:100000:65536\n# c\n",
                "bob:100000:65536\ncarol:165536:65536\n"
            ]),
            231_072
        );
        assert_eq!(free_subid_start(&["x:10:10\n", ""]), 100_000);
        assert_eq!(free_subid_start(&["x:4294960000:65536\n", ""]), 100_000);
    }

    #[test]
    fn subids_root_is_ok() {
        let c = check_subids(&user(false), None, None, 100_000);
        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.detail, "running as root: no user namespace needed");
    }

    #[test]
    fn subids_levels_and_fixes() {
        let full = Some(SubRange {
            start: 100_000,
            count: 65_536,
        });
        let small = Some(SubRange {
            start: 200_000,
            count: 1000,
        });
        let me = user(true);
        assert_eq!(check_subids(&me, full, full, 165_536).level, Level::Ok);

        let c = check_subids(&me, full, small, 300_000);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(
            c.fix.as_deref(),
            Some("sudo usermod --del-subgids 200000-200999 alice && sudo usermod --add-subgids 300000-365535 alice")
        );

        let c = check_subids(&me, None, None, 100_000);
        assert_eq!(c.level, Level::Warn);
        assert!(c.detail.contains("single-id mode"), "{}", c.detail);
        assert_eq!(
            c.fix.as_deref(),
            Some("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice (or add the line `alice:100000:65536` to /etc/subuid and /etc/subgid)")
        );

        // Reuses the idmap parser: by name or numeric uid.
        let text = "bob:100000:65536\n1000:300000:65536\n";
        assert_eq!(
            parse_subid(text, "alice", 1000),
            Some(SubRange {
                start: 300_000,
                count: 65_536
            })
        );
    }

    #[test]
    fn uidmap_tools_levels() {
        let good = [
            (
                "newuidmap",
                ToolState::SetuidRoot("/usr/bin/newuidmap".into()),
            ),
            (
                "newgidmap",
                ToolState::FileCaps("/usr/bin/newgidmap".into()),
            ),
        ];
        assert_eq!(check_uidmap_tools(&good, true, true).level, Level::Ok);

        let missing = [
            ("newuidmap", ToolState::Missing),
            ("newgidmap", ToolState::Missing),
        ];
        let c = check_uidmap_tools(&missing, true, true);
        assert_eq!(c.level, Level::Fail);
        assert_eq!(c.fix.as_deref(), Some("sudo apt-get install uidmap"));
        assert_eq!(check_uidmap_tools(&missing, true, false).level, Level::Warn);
        assert_eq!(check_uidmap_tools(&missing, false, true).level, Level::Ok);

        let plain = [
            (
                "newuidmap",
                ToolState::Unprivileged("/usr/bin/newuidmap".into()),
            ),
            (
                "newgidmap",
                ToolState::SetuidRoot("/usr/bin/newgidmap".into()),
            ),
        ];
        let c = check_uidmap_tools(&plain, true, true);
        assert_eq!(c.level, Level::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("sudo chown root:root /usr/bin/newuidmap && sudo chmod u+s /usr/bin/newuidmap")
        );
    }

    fn facts(
        clone: Option<i64>,
        max: Option<i64>,
        aa: Option<i64>,
        probe: UsernsProbe,
    ) -> UsernsFacts {
        UsernsFacts {
            unprivileged_userns_clone: clone,
            max_user_namespaces: max,
            apparmor_restrict: aa,
            probe,
        }
    }

    #[test]
    fn userns_levels_and_fixes() {
        let me = user(true);
        let ok = check_userns(&facts(Some(1), Some(100), Some(0), UsernsProbe::Works), &me);
        assert_eq!(ok.level, Level::Ok);

        let c = check_userns(
            &facts(Some(0), Some(100), None, UsernsProbe::NoUserns(libc::EPERM)),
            &me,
        );
        assert_eq!(c.level, Level::Fail);
        assert!(c
            .fix
            .unwrap()
            .contains("kernel.unprivileged_userns_clone=1"));

        let c = check_userns(
            &facts(None, Some(0), None, UsernsProbe::NoUserns(libc::ENOSPC)),
            &me,
        );
        assert!(c.fix.unwrap().contains("user.max_user_namespaces=28633"));

        let c = check_userns(
            &facts(None, Some(100), Some(1), UsernsProbe::NoCaps(libc::EPERM)),
            &me,
        );
        assert_eq!(c.level, Level::Fail);
        assert!(c
            .fix
            .unwrap()
            .contains("apparmor_parser -r /etc/apparmor.d/berth"));

        let c = check_userns(
            &facts(None, Some(100), None, UsernsProbe::NoUserns(libc::EPERM)),
            &user(false),
        );
        assert_eq!(c.level, Level::Warn);
    }

    #[test]
    fn userns_probe_runs() {
        // Whatever the host allows, the probe must come back (and not hang or crash).
        let p = probe_userns();
        assert!(!matches!(p, UsernsProbe::Error(_)), "{p:?}");
    }

    #[test]
    fn cgroup_classification() {
        assert_eq!(classify_cgroup(true, false, false), CgroupMode::V2);
        assert_eq!(classify_cgroup(false, true, true), CgroupMode::Hybrid);
        assert_eq!(classify_cgroup(false, true, false), CgroupMode::V1);
        assert_eq!(classify_cgroup(false, false, true), CgroupMode::None);
        assert_eq!(
            check_cgroups(CgroupMode::V1, &user(true)).level,
            Level::Warn
        );
    }

    #[test]
    fn kvm_levels() {
        let me = user(true);
        assert_eq!(check_kvm(DevState::ReadWrite, false, &me).level, Level::Ok);
        let pvm = check_kvm(DevState::ReadWrite, true, &me);
        assert_eq!(pvm.level, Level::Warn);
        assert!(pvm.detail.contains("PVM"));
        assert_eq!(check_kvm(DevState::Missing, false, &me).level, Level::Warn);
        let c = check_kvm(DevState::NoAccess("Permission denied".into()), false, &me);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.unwrap().contains("/dev/kvm"));
    }

    #[test]
    fn network_and_fuse_levels() {
        assert_eq!(check_network(None, None, None).level, Level::Warn);
        assert_eq!(
            check_network(None, None, None).fix.as_deref(),
            Some("sudo apt-get install slirp4netns passt")
        );
        let pasta_only = check_network(None, Some("/usr/bin/pasta".into()), None);
        assert_eq!(pasta_only.level, Level::Warn);
        assert!(
            pasta_only.detail.contains("user-defined networks"),
            "{}",
            pasta_only.detail
        );
        let c = check_fuse(None, DevState::NoAccess("Permission denied".into()), true);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(
            c.fix.as_deref(),
            Some("sudo apt-get install fuse-overlayfs && sudo chmod 0666 /dev/fuse")
        );
    }

    #[test]
    fn runtime_dir_cases() {
        let c = check_runtime_dir(None, None, 1000);
        assert_eq!(c.level, Level::Warn);
        assert!(c.detail.contains("/tmp/berth-1000"));

        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let c = check_runtime_dir(None, Some(dir.path().into()), uid);
        assert_eq!(c.level, Level::Ok, "{c:?}");
        let c = check_runtime_dir(None, Some(dir.path().into()), uid + 1);
        assert_eq!(c.level, Level::Warn);
        let c = check_runtime_dir(None, Some(dir.path().join("nope").into()), uid);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(
            check_runtime_dir(Some("/x".into()), None, uid).level,
            Level::Ok
        );
    }
}
