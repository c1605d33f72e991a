//! `berth-vmm`: the program that runs a berth microVM's guest, and nothing else. berth starts
//! it with the descriptors of a [`Launch`] (see `berth_vmm::launch`); it enters its jail
//! (`berth_vmm::jail`), boots the VM with a seccomp filter on every thread
//! (`berth_vmm::seccomp`), and reports how the guest ended on the report pipe. It is not meant
//! to be run by hand.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use berth_vmm::launch::{self, Launch, Report, ThreadKind, LAUNCH_FD};
use berth_vmm::{jail, seccomp};

fn main() {
    let start = Instant::now();
    // SAFETY: descriptor 3 is the launch pipe berth passes; nothing else owns it.
    let input = unsafe { File::from_raw_fd(LAUNCH_FD) };
    let launch = match Launch::read_from(input) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "berth-vmm: {} (berth-vmm is started by berth, not by hand)",
                chain(&e)
            );
            std::process::exit(125);
        }
    };
    let violate = std::env::var(launch::TEST_VIOLATION_ENV)
        .ok()
        .and_then(|k| ThreadKind::from_name(&k));
    jail::close_other_fds(&launch.fds());
    // SAFETY: the report pipe is the launch's; this process owns it from here.
    let report = unsafe { File::from_raw_fd(launch.report) };
    let code = match jail::enter(&launch) {
        Ok(jail::Role::Waiter { pid }) => {
            seccomp_waiter();
            jail::wait(pid)
        }
        Ok(jail::Role::Vmm) => run(launch, &report, violate, start),
        Err(e) => fail(&report, &e),
    };
    std::process::exit(code);
}

/// The waiter's filter: reaping and exiting only.
fn seccomp_waiter() {
    // A waiter that cannot be filtered still holds nothing: it goes on unfiltered rather than
    // lose the VMM's status.
    if seccomp::prepare(-1, None).is_ok() {
        seccomp::enter(ThreadKind::Waiter);
    }
}

/// The jailed VMM: boots the VM and waits for its end; the exit status.
#[cfg(target_arch = "x86_64")]
fn run(launch: Launch, report: &File, violate: Option<ThreadKind>, start: Instant) -> i32 {
    if let Err(e) = seccomp::prepare(launch.report, violate) {
        return fail(report, &e);
    }
    let (machine, io) = machine(launch);
    let vm = match berth_vmm::boot(machine, io, start) {
        Ok(vm) => vm,
        Err(e) => return fail(report, &e),
    };
    // Every thread runs: the main thread's own filter (threads started after it would inherit
    // it on top of theirs).
    seccomp::enter(ThreadKind::Main);
    match vm.wait() {
        Ok(r) => {
            let _ = Report::Ended(r).write_to(report);
            0
        }
        Err(e) => fail(report, &e),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn run(_: Launch, report: &File, _: Option<ThreadKind>, _: Instant) -> i32 {
    fail(report, &berth_vmm::Error::UnsupportedArch)
}

/// The machine and its streams from the launch's descriptors.
#[cfg(target_arch = "x86_64")]
fn machine(launch: Launch) -> (berth_vmm::Machine, berth_vmm::VmIo) {
    use berth_vmm::{Machine, NetBackend, OpenDisk, OpenFile, ShareConfig, VmIo};
    // SAFETY (every from_raw_fd below): the launch's descriptors are this process's, each
    // named once in it, and taken over here once.
    let file = |fd: RawFd| unsafe { File::from_raw_fd(fd) };
    let console: Box<dyn Write + Send> = match launch.console_copy {
        Some(copy) => Box::new(Tee(file(launch.console), file(copy))),
        None => Box::new(file(launch.console)),
    };
    let io = VmIo {
        console,
        channel: launch
            .channel
            .map(|fd| unsafe { UnixStream::from_raw_fd(fd) }),
        net: launch.net.map(|n| {
            let backend = if n.tap {
                NetBackend::Tap(unsafe { OwnedFd::from_raw_fd(n.fd) })
            } else {
                NetBackend::Stream(unsafe { UnixStream::from_raw_fd(n.fd) })
            };
            (backend, n.mac)
        }),
    };
    let machine = Machine {
        kvm: unsafe { kvm_ioctls::Kvm::from_raw_fd(launch.kvm) },
        kernel: OpenFile {
            file: file(launch.kernel.fd),
            path: launch.kernel.path,
        },
        initrd: launch.initrd.map(|f| OpenFile {
            file: file(f.fd),
            path: f.path,
        }),
        cmdline: launch.cmdline,
        vcpus: launch.vcpus,
        mem_mib: launch.mem_mib,
        disks: launch
            .disks
            .iter()
            .map(|d| OpenDisk {
                file: file(d.fd),
                read_only: d.read_only,
            })
            .collect(),
        shares: launch
            .shares
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The bind in the jail is the directory now; its descriptor is not needed.
                drop(unsafe { OwnedFd::from_raw_fd(s.fd) });
                ShareConfig {
                    path: launch::share_path(i),
                    tag: s.tag.clone(),
                    read_only: s.read_only,
                    guest_owner: s.guest_owner,
                }
            })
            .collect(),
        balloon: launch.balloon,
    };
    (machine, io)
}

/// Reports `e` (with its causes) as the failure; the exit status 1.
fn fail(out: &File, e: &dyn std::error::Error) -> i32 {
    let _ = Report::Failed(chain(e)).write_to(out);
    1
}

/// An error and its causes, `: `-separated, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The console written to two descriptors (the log and berth's stderr, BERTH_VM_DEBUG).
struct Tee(File, File);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        let _ = self.1.write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.1.flush();
        self.0.flush()
    }
}
