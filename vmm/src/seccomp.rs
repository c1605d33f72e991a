//! The jailed VMM's seccomp filters, one per thread kind ([`ThreadKind`]), as Firecracker has
//! them: each thread installs its kind's filter as it starts ([`enter`]), before it touches
//! anything the guest controls. A filter's mismatch action is `SIGSYS`: a handler writes which
//! thread kind made which system call on the report pipe (berth tells the user) and ends the
//! whole VMM.
//!
//! The lists are what each kind was seen to make (`strace -f` of `berth vmm` with the tiny
//! guest and of `berth run --vm`, musl's std) and what the device code it runs can make
//! (read from the code: the 9p server's file system calls, the block device's positioned I/O,
//! the balloon's madvise). A vCPU thread runs the emulation of the devices whose registers and
//! queues the guest touches, so its list is the union of KVM_RUN's and theirs; its ioctls are
//! limited to KVM_RUN and the two register reads of the triple-fault report.
//!
//! Without [`prepare`] (unit tests, fuzz targets, berth linking the library) [`enter`] does
//! nothing.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::launch::ThreadKind;

/// Why the filters could not be made or installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp filters are only defined for x86_64 so far")]
    UnsupportedArch,
    #[error("building the {kind} thread's seccomp filter")]
    Build {
        kind: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing the SIGSYS handler")]
    Handler(#[source] std::io::Error),
}

/// The compiled filters, by kind, and the test hook.
struct Filters {
    programs: Vec<(ThreadKind, BpfProgram)>,
    violate: Option<ThreadKind>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();
/// Where the SIGSYS handler writes its report.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The kind of the thread, for the SIGSYS handler (const-initialized: no allocation, no
    /// lazy initialization in the handler).
    static KIND: std::cell::Cell<u8> = const { std::cell::Cell::new(u8::MAX) };
}

/// Compiles every kind's filter and installs the SIGSYS handler that reports on `report`.
/// From then on [`enter`] installs filters. `violate`: the kind whose threads call a forbidden
/// system call once filtered (the tests' hook, [`crate::launch::TEST_VIOLATION_ENV`]).
pub fn prepare(report: RawFd, violate: Option<ThreadKind>) -> Result<(), Error> {
    let mut programs = Vec::new();
    for kind in ThreadKind::ALL {
        let filter = SeccompFilter::new(
            rules(kind)?,
            SeccompAction::Trap,
            SeccompAction::Allow,
            std::env::consts::ARCH
                .try_into()
                .map_err(|source| Error::Build {
                    kind: kind.name(),
                    source,
                })?,
        )
        .map_err(|source| Error::Build {
            kind: kind.name(),
            source,
        })?;
        let program: BpfProgram = filter.try_into().map_err(|source| Error::Build {
            kind: kind.name(),
            source,
        })?;
        programs.push((kind, program));
    }
    REPORT_FD.store(report, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction with a handler that only reads its arguments, formats on the
    // stack and makes async-signal-safe system calls (write, exit_group).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(Error::Handler(std::io::Error::last_os_error()));
        }
    }
    let _ = FILTERS.set(Filters { programs, violate });
    Ok(())
}

/// Installs `kind`'s filter on the calling thread (nothing without [`prepare`]). A thread that
/// cannot be filtered does not go on: the VMM ends with that report.
pub fn enter(kind: ThreadKind) {
    let Some(filters) = FILTERS.get() else {
        return;
    };
    let Some((_, program)) = filters.programs.iter().find(|(k, _)| *k == kind) else {
        return;
    };
    KIND.with(|k| k.set(kind as u8));
    if let Err(e) = seccompiler::apply_filter(program) {
        let text = format!(
            "failed installing the {} thread's seccomp filter: {e}",
            kind.name()
        );
        report_raw(text.as_bytes());
        // SAFETY: ends the process; nothing of it may run unfiltered.
        unsafe { libc::syscall(libc::SYS_exit_group, 1) };
    }
    if filters.violate == Some(kind) {
        // The test hook: a system call no thread may make.
        // SAFETY: socket takes integers; its result is dropped (the filter kills first).
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }
}

/// Writes `bytes` on the report pipe, `failed ` first.
fn report_raw(bytes: &[u8]) {
    let fd = REPORT_FD.load(Ordering::SeqCst);
    let mut line = b"failed ".to_vec();
    line.extend_from_slice(bytes);
    // SAFETY: writes a local buffer.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// The SIGSYS handler: `seccomp <kind> <nr>` on the report pipe, then the VMM ends.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo_t's `_sigsys` member (si_call_addr, si_syscall, si_arch) follows the three ints
    // and the padding of the header, at 16 bytes on 64-bit Linux: si_syscall at 24.
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler.
    let nr = unsafe { *(info.cast::<u8>().add(24).cast::<libc::c_int>()) };
    let kind = KIND.with(|k| k.get());
    let name = ThreadKind::ALL
        .into_iter()
        .find(|k| *k as u8 == kind)
        .map_or("unknown", |k| k.name());
    let mut buf = [0u8; 64];
    let mut len = 0;
    for part in [b"seccomp ".as_slice(), name.as_bytes(), b" "] {
        buf[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let mut digits = [0u8; 12];
    let mut n = i64::from(nr).unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if nr < 0 {
        i -= 1;
        digits[i] = b'-';
    }
    let d = &digits[i..];
    buf[len..len + d.len()].copy_from_slice(d);
    len += d.len();
    buf[len] = b'\n';
    len += 1;
    // SAFETY: write and exit_group are async-signal-safe and every filter allows them.
    unsafe {
        libc::write(REPORT_FD.load(Ordering::SeqCst), buf.as_ptr().cast(), len);
        libc::syscall(libc::SYS_exit_group, 128 + libc::SIGSYS);
    }
}

/// The rules of `kind`'s filter: the system calls it may make (with argument conditions for
/// the vCPUs' ioctls).
#[cfg(target_arch = "x86_64")]
fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    use libc::*;
    // Every kind: memory (the allocator, thread stacks), locks, signals (the kick, SIGSYS,
    // and a panic's abort, which signals the thread itself), clocks, random seeds (std's
    // hash maps), the report and the end.
    const COMMON: &[c_long] = &[
        SYS_tkill,
        SYS_tgkill,
        SYS_getrandom,
        SYS_read,
        SYS_write,
        SYS_close,
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_madvise,
        SYS_brk,
        SYS_mprotect,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_sched_yield,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_restart_syscall,
        SYS_getpid,
        SYS_gettid,
        SYS_exit,
        SYS_exit_group,
    ];
    // Files the devices serve: disks (positioned I/O, flushes) and 9p shares (the file system
    // calls of crosvm's 9P server, below berth's guard).
    const FILES: &[c_long] = &[
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_readv,
        SYS_writev,
        SYS_lseek,
        SYS_fsync,
        SYS_fdatasync,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
        SYS_fstatfs,
        SYS_openat,
        SYS_getdents64,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_unlinkat,
        SYS_renameat,
        SYS_renameat2,
        SYS_linkat,
        SYS_symlinkat,
        SYS_readlinkat,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_utimensat,
        SYS_ftruncate,
        SYS_fallocate,
        SYS_fcntl,
        SYS_fgetxattr,
        SYS_flistxattr,
        SYS_lgetxattr,
        SYS_llistxattr,
        SYS_getuid,
        SYS_getgid,
    ];
    // The agent channel and the NIC's stream (frames out: send with MSG_DONTWAIT).
    const STREAMS: &[c_long] = &[SYS_sendto, SYS_sendmsg, SYS_recvfrom, SYS_recvmsg];
    let mut allowed: Vec<c_long> = Vec::new();
    let mut rules = BTreeMap::new();
    match kind {
        // Reaping, and std's exit path (its signal stack goes, its buffers flush).
        ThreadKind::Waiter => allowed.extend([
            SYS_wait4,
            SYS_waitid,
            SYS_write,
            SYS_close,
            SYS_futex,
            SYS_munmap,
            SYS_sigaltstack,
            SYS_rt_sigreturn,
            SYS_rt_sigprocmask,
            SYS_exit,
            SYS_exit_group,
        ]),
        ThreadKind::Main => {
            allowed.extend(COMMON);
            // Shutting the device threads' streams down (the vCPUs are kicked with tkill).
            allowed.push(SYS_shutdown);
        }
        ThreadKind::Vcpu => {
            allowed.extend(COMMON);
            allowed.extend(FILES);
            allowed.extend(STREAMS);
            let ioctl_is = |request: u64| -> Result<SeccompRule, Error> {
                let build = |source| Error::Build {
                    kind: kind.name(),
                    source,
                };
                let cond =
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                        .map_err(build)?;
                SeccompRule::new(vec![cond]).map_err(build)
            };
            rules.insert(
                SYS_ioctl,
                vec![
                    ioctl_is(KVM_RUN)?,
                    ioctl_is(ioctl_read(0x81, size_of::<kvm_bindings::kvm_regs>()))?,
                    ioctl_is(ioctl_read(0x83, size_of::<kvm_bindings::kvm_sregs>()))?,
                ],
            );
        }
        ThreadKind::Io => {
            allowed.extend(COMMON);
            allowed.extend(STREAMS);
            allowed.extend([SYS_poll, SYS_ppoll]);
        }
    }
    for nr in allowed {
        rules.entry(nr).or_insert_with(Vec::new);
    }
    Ok(rules)
}

/// KVM's ioctl type (`KVMIO`), and KVM_RUN = _IO(KVMIO, 0x80).
const KVMIO: u64 = 0xAE;
const KVM_RUN: u64 = KVMIO << 8 | 0x80;

/// _IOR(KVMIO, nr, size): the ioctl number of a KVM read of `size` bytes.
const fn ioctl_read(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

#[cfg(not(target_arch = "x86_64"))]
fn rules(_: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    Err(Error::UnsupportedArch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_kind_has_a_filter_that_compiles() {
        for kind in ThreadKind::ALL {
            let rules = rules(kind).unwrap();
            assert!(rules.contains_key(&libc::SYS_exit_group), "{kind:?}");
            assert!(!rules.contains_key(&libc::SYS_socket), "{kind:?}");
            assert!(!rules.contains_key(&libc::SYS_execve), "{kind:?}");
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Trap,
                SeccompAction::Allow,
                seccompiler::TargetArch::x86_64,
            )
            .unwrap();
            let _: BpfProgram = filter.try_into().unwrap();
        }
    }
}
