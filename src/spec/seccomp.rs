//! Docker's default seccomp profile, as an OCI `LinuxSeccomp`.
//!
//! The data follows moby's `profiles/seccomp/default.json`: deny with EPERM by default,
//! a large allow list, a few argument-filtered rules (`personality`, `clone`, `socket`)
//! and groups that are allowed only when the container holds the capability that makes
//! the syscall meaningful. Choices made where the JSON leaves room:
//! - `ptrace`, `process_vm_readv` and `process_vm_writev` are allowed unconditionally:
//!   moby gates them on kernel >= 4.8 and berth requires 5.11.
//! - s390 rules are left out: its `clone` takes the flags in another argument and berth
//!   does not run there.
//! - Arch-only rules are kept for the arches Rust names `x86_64`, `x86`, `aarch64`,
//!   `arm`, `powerpc64` and `riscv64`, selected by [`std::env::consts::ARCH`].

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

/// Docker's errno for a denied syscall.
const EPERM: u32 = libc::EPERM as u32;
/// Returned for `clone3` so that libc falls back to `clone`, whose flags can be checked.
const ENOSYS: u32 = libc::ENOSYS as u32;
/// `AF_VSOCK`: host/guest sockets stay closed to containers.
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;
/// CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET | CLONE_NEWCGROUP: `clone` may create none of these without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// What a rule does to a matching syscall.
#[derive(Clone, Copy)]
enum Action {
    Allow,
    Errno(u32),
}

/// When a rule is part of the profile, given the container's capabilities.
#[derive(Clone, Copy)]
enum Gate {
    Always,
    WithCap(&'static str),
    WithoutCap(&'static str),
}

/// One argument comparison (OCI semantics: for MASKED_EQ, `value` is the mask).
#[derive(Clone, Copy)]
struct Cond {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
}

impl Cond {
    const fn eq(index: usize, value: u64) -> Self {
        Cond {
            index,
            op: LinuxSeccompOperator::ScmpCmpEq,
            value,
            value_two: None,
        }
    }

    const fn ne(index: usize, value: u64) -> Self {
        Cond {
            op: LinuxSeccompOperator::ScmpCmpNe,
            ..Cond::eq(index, value)
        }
    }

    /// `(arg & mask) == value`.
    const fn masked_eq(index: usize, mask: u64, value: u64) -> Self {
        Cond {
            index,
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
            value: mask,
            value_two: Some(value),
        }
    }
}

/// One entry of the profile: syscalls sharing an action, conditions and gates.
#[derive(Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    action: Action,
    conds: &'static [Cond],
    gate: Gate,
    /// Rust `target_arch` names the rule is limited to; empty means every arch.
    arches: &'static [&'static str],
}

impl Rule {
    const fn allow(names: &'static [&'static str]) -> Self {
        Rule {
            names,
            action: Action::Allow,
            conds: &[],
            gate: Gate::Always,
            arches: &[],
        }
    }

    const fn when(self, conds: &'static [Cond]) -> Self {
        Rule { conds, ..self }
    }

    const fn gate(self, gate: Gate) -> Self {
        Rule { gate, ..self }
    }

    const fn on(self, arches: &'static [&'static str]) -> Self {
        Rule { arches, ..self }
    }

    const fn errno(names: &'static [&'static str], errno: u32) -> Self {
        Rule {
            action: Action::Errno(errno),
            ..Rule::allow(names)
        }
    }
}

/// Syscalls every container may make, whatever its capabilities.
const BASE_ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls that only CAP_SYS_ADMIN makes useful (mounts, namespaces, `clone` with any flags).
const SYS_ADMIN: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// The profile, in moby's order. Syscalls named nowhere (`keyctl`, `add_key`,
/// `request_key`, `kexec_load`, `swapon`, `userfaultfd`, ...) get the default EPERM.
const RULES: &[Rule] = &[
    Rule::allow(BASE_ALLOW),
    // moby: minKernel 4.8, when ptrace could no longer bypass seccomp.
    Rule::allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    Rule::allow(&["socket"]).when(&[Cond::ne(0, AF_VSOCK)]),
    // Separate rules, so they OR: the default persona, PER_LINUX32, UNAME26 and the
    // 0xffffffff query, each alone.
    Rule::allow(&["personality"]).when(&[Cond::eq(0, 0x0)]),
    Rule::allow(&["personality"]).when(&[Cond::eq(0, 0x8)]),
    Rule::allow(&["personality"]).when(&[Cond::eq(0, 0x20000)]),
    Rule::allow(&["personality"]).when(&[Cond::eq(0, 0x20008)]),
    Rule::allow(&["personality"]).when(&[Cond::eq(0, 0xffff_ffff)]),
    Rule::allow(&["sync_file_range2", "swapcontext"]).on(&["powerpc64"]),
    Rule::allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .on(&["arm", "aarch64"]),
    Rule::allow(&["arch_prctl"]).on(&["x86_64"]),
    Rule::allow(&["modify_ldt"]).on(&["x86_64", "x86"]),
    Rule::allow(&["riscv_flush_icache"]).on(&["riscv64"]),
    Rule::allow(&["open_by_handle_at"]).gate(Gate::WithCap("CAP_DAC_READ_SEARCH")),
    Rule::allow(SYS_ADMIN).gate(Gate::WithCap("CAP_SYS_ADMIN")),
    Rule::allow(&["clone"])
        .when(&[Cond::masked_eq(0, CLONE_NAMESPACE_FLAGS, 0)])
        .gate(Gate::WithoutCap("CAP_SYS_ADMIN")),
    Rule::errno(&["clone3"], ENOSYS).gate(Gate::WithoutCap("CAP_SYS_ADMIN")),
    Rule::allow(&["reboot"]).gate(Gate::WithCap("CAP_SYS_BOOT")),
    Rule::allow(&["chroot"]).gate(Gate::WithCap("CAP_SYS_CHROOT")),
    Rule::allow(&["delete_module", "init_module", "finit_module"])
        .gate(Gate::WithCap("CAP_SYS_MODULE")),
    Rule::allow(&["acct"]).gate(Gate::WithCap("CAP_SYS_PACCT")),
    Rule::allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .gate(Gate::WithCap("CAP_SYS_PTRACE")),
    Rule::allow(&["iopl", "ioperm"]).gate(Gate::WithCap("CAP_SYS_RAWIO")),
    Rule::allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .gate(Gate::WithCap("CAP_SYS_TIME")),
    Rule::allow(&["vhangup"]).gate(Gate::WithCap("CAP_SYS_TTY_CONFIG")),
    Rule::allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ])
    .gate(Gate::WithCap("CAP_SYS_NICE")),
    Rule::allow(&["syslog"]).gate(Gate::WithCap("CAP_SYSLOG")),
    Rule::allow(&["bpf"]).gate(Gate::WithCap("CAP_BPF")),
    Rule::allow(&["perf_event_open"]).gate(Gate::WithCap("CAP_PERFMON")),
];

/// Docker's default profile for a container holding `caps` (canonical `CAP_*` names,
/// compared case-insensitively), for the arch berth was built for.
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    default_profile_for_arch(std::env::consts::ARCH, caps)
}

/// [`default_profile`] for another arch, named as [`std::env::consts::ARCH`] names it.
pub fn default_profile_for_arch(arch: &str, caps: &[String]) -> LinuxSeccomp {
    let has_cap = |wanted: &str| caps.iter().any(|cap| cap.eq_ignore_ascii_case(wanted));
    let syscalls: Vec<LinuxSyscall> = RULES
        .iter()
        .filter(|rule| rule.arches.is_empty() || rule.arches.contains(&arch))
        .filter(|rule| match rule.gate {
            Gate::Always => true,
            Gate::WithCap(cap) => has_cap(cap),
            Gate::WithoutCap(cap) => !has_cap(cap),
        })
        .map(to_oci)
        .collect();

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(EPERM))
        .set_architectures(architectures(arch))
        .set_syscalls(Some(syscalls));
    profile
}

/// The native arch and the compat arches whose binaries it runs, as in moby's `archMap`.
fn architectures(arch: &str) -> Option<Vec<Arch>> {
    match arch {
        "x86_64" => Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]),
        "aarch64" => Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        "riscv64" => Some(vec![Arch::ScmpArchRiscv64]),
        _ => None,
    }
}

fn to_oci(rule: &Rule) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(rule.names.iter().map(|name| name.to_string()).collect());
    match rule.action {
        Action::Allow => syscall.set_action(LinuxSeccompAction::ScmpActAllow),
        Action::Errno(errno) => syscall
            .set_action(LinuxSeccompAction::ScmpActErrno)
            .set_errno_ret(Some(errno)),
    };
    if !rule.conds.is_empty() {
        let args = rule
            .conds
            .iter()
            .map(|cond| {
                let builder = LinuxSeccompArgBuilder::default()
                    .index(cond.index)
                    .op(cond.op)
                    .value(cond.value);
                match cond.value_two {
                    Some(value_two) => builder.value_two(value_two),
                    None => builder,
                }
                .build()
                .expect("every LinuxSeccompArg field has a default")
            })
            .collect();
        syscall.set_args(Some(args));
    }
    syscall
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::caps::DEFAULT_CAPS;

    fn default_caps() -> Vec<String> {
        DEFAULT_CAPS.iter().map(|cap| cap.to_string()).collect()
    }

    fn with(extra: &str) -> Vec<String> {
        let mut caps = default_caps();
        caps.push(extra.to_string());
        caps
    }

    fn rules_for<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|rule| rule.names().iter().any(|n| n == name))
            .collect()
    }

    /// Allowed whatever the arguments.
    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        rules_for(profile, name)
            .iter()
            .any(|rule| rule.action() == LinuxSeccompAction::ScmpActAllow && rule.args().is_none())
    }

    #[test]
    fn default_action_is_eperm_for_the_native_arches() {
        let profile = default_profile_for_arch("x86_64", &default_caps());
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(1));
        assert_eq!(
            profile.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let arm = default_profile_for_arch("aarch64", &default_caps());
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
    }

    #[test]
    fn everyday_syscalls_and_ptrace_are_allowed() {
        let profile = default_profile_for_arch("x86_64", &default_caps());
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "getpid",
            "ptrace",
            "arch_prctl",
        ] {
            assert!(allowed(&profile, name), "{name} should be allowed");
        }
        // CAP_SYS_CHROOT is in Docker's default set.
        assert!(allowed(&profile, "chroot"));
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed_by_default() {
        let profile = default_profile_for_arch("x86_64", &default_caps());
        for name in [
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "open_by_handle_at",
            "init_module",
            "finit_module",
            "reboot",
            "bpf",
            "perf_event_open",
            "syslog",
            "iopl",
            "acct",
            "clone3",
            "userfaultfd",
            "swapon",
        ] {
            assert!(!allowed(&profile, name), "{name} must not be allowed");
        }
    }

    #[test]
    fn arch_specific_rules_follow_the_arch() {
        let x86 = default_profile_for_arch("x86_64", &default_caps());
        let arm = default_profile_for_arch("aarch64", &default_caps());
        assert!(allowed(&x86, "modify_ldt") && !allowed(&arm, "modify_ldt"));
        assert!(allowed(&arm, "cacheflush") && !allowed(&x86, "cacheflush"));
    }

    #[test]
    fn personality_is_allowed_only_for_five_personas() {
        let profile = default_profile(&default_caps());
        let rules = rules_for(&profile, "personality");
        let mut values: Vec<u64> = rules
            .iter()
            .map(|rule| {
                let args = rule
                    .args()
                    .as_ref()
                    .expect("personality rules are conditional");
                assert_eq!(args.len(), 1, "one condition per rule, so the rules OR");
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                assert_eq!(args[0].index(), 0);
                args[0].value()
            })
            .collect();
        values.sort();
        assert_eq!(values, [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn clone_is_restricted_and_clone3_is_enosys_without_sys_admin() {
        let profile = default_profile(&default_caps());
        let clone = rules_for(&profile, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0x7E02_0000);
        assert_eq!(args[0].value_two(), Some(0));

        let clone3 = rules_for(&profile, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
    }

    #[test]
    fn socket_refuses_only_vsock() {
        let profile = default_profile(&default_caps());
        let socket = rules_for(&profile, "socket");
        assert_eq!(socket.len(), 1);
        let args = socket[0].args().as_ref().unwrap();
        assert_eq!(
            (args[0].index(), args[0].op(), args[0].value()),
            (0, LinuxSeccompOperator::ScmpCmpNe, 40)
        );
    }

    #[test]
    fn sys_admin_opens_mounts_namespaces_and_unrestricted_clone() {
        let profile = default_profile(&with("cap_sys_admin"));
        for name in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
        ] {
            assert!(allowed(&profile, name), "{name} should be allowed");
        }
        assert!(rules_for(&profile, "clone3")
            .iter()
            .all(|rule| rule.action() == LinuxSeccompAction::ScmpActAllow));
        assert!(rules_for(&profile, "clone")
            .iter()
            .all(|rule| rule.args().is_none()));
    }

    #[test]
    fn capability_groups_follow_their_capability() {
        let groups = [
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYS_MODULE", "finit_module"),
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_TIME", "settimeofday"),
            ("CAP_SYS_NICE", "mbind"),
            ("CAP_SYS_PACCT", "acct"),
            ("CAP_SYS_RAWIO", "iopl"),
            ("CAP_SYS_TTY_CONFIG", "vhangup"),
            ("CAP_SYSLOG", "syslog"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ];
        let without = default_profile(&default_caps());
        for (cap, syscall) in groups {
            assert!(!allowed(&without, syscall), "{syscall} without {cap}");
            assert!(
                allowed(&default_profile(&with(cap)), syscall),
                "{syscall} with {cap}"
            );
        }
        let no_chroot = default_profile(&[]);
        assert!(!allowed(&no_chroot, "chroot"));
    }

    #[test]
    fn the_base_list_has_no_duplicates_or_gated_syscalls() {
        let mut seen = std::collections::HashSet::new();
        for name in BASE_ALLOW {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(!SYS_ADMIN.contains(name), "{name} is CAP_SYS_ADMIN-only");
        }
    }

    #[test]
    fn serializes_as_oci_json() {
        let json = serde_json::to_value(default_profile(&default_caps())).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["names"][0] == "clone")
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], 2_114_060_288u64);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
    }
}
