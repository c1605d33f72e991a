//! vCPU threads: each vCPU runs KVM_RUN on a thread of its own and handles the exits that need
//! the VMM (port I/O, MMIO, the guest ending) until the guest or the VMM ends the run.
//!
//! Stopping: whoever ends the run sets the shared stop flag ([`ExitSignal`]); a vCPU checks it
//! before every KVM_RUN, and the VMM kicks vCPU threads out of KVM_RUN with [`KICK_SIGNAL`]
//! (a no-op handler installed without SA_RESTART, so KVM_RUN returns EINTR) until each thread
//! has finished. Kicking again and again closes the window in which a signal lands between
//! the flag check and KVM_RUN.

use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::arch;
use super::devices::Bus;
use super::memory::GuestMemory;
use super::{ExitReason, ExitSignal, VmEvent};

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// How often a stopping VMM kicks vCPU threads that have not finished yet.
const KICK_INTERVAL: Duration = Duration::from_millis(1);
/// How many times per interval it looks whether they have.
const KICK_POLLS: u32 = 20;

/// Why a vCPU stopped the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the guest triple-faulted on vCPU {id}{}: a fault with no working handler (a kernel that crashed early, or one not built for PVH or the 64-bit boot protocol); {}", at(*rip), paging)]
    TripleFault {
        id: u8,
        rip: Option<u64>,
        /// Its control registers and how the page tables map `rip` (arch::fault_report).
        paging: String,
    },
    #[error("the guest reported a crash (KVM system event on vCPU {id})")]
    GuestCrash { id: u8 },
    #[error("KVM could not enter vCPU {id} (hardware entry failure reason {reason:#x})")]
    FailEntry { id: u8, reason: u64 },
    #[error("KVM internal error on vCPU {id}{} (suberror {suberror}){}", at(*rip), internal_hint(*suberror))]
    Internal {
        id: u8,
        rip: Option<u64>,
        suberror: u32,
    },
    #[error("vCPU {id}: unexpected KVM exit {exit}")]
    UnexpectedExit { id: u8, exit: String },
    #[error("vCPU {id}: KVM_RUN failed")]
    Run {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: its thread ended unexpectedly")]
    ThreadEnded { id: u8 },
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start the thread for vCPU {id}")]
    Spawn {
        id: u8,
        #[source]
        source: std::io::Error,
    },
}

fn at(rip: Option<u64>) -> String {
    rip.map(|r| format!(" at rip {r:#x}")).unwrap_or_default()
}

fn internal_hint(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION if super::kvm_is_pvm() => {
            ": an instruction KVM cannot emulate; this host's KVM is PVM (software nested \
             virtualization), which runs only simple guests: use hardware KVM or scripts/kvm-nested"
        }
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => ": an instruction KVM cannot emulate",
        _ => "",
    }
}

/// What every vCPU thread shares: the buses and the way to end the run.
pub struct VcpuContext {
    pub pio: Bus,
    pub mmio: Bus,
    /// Guest memory, read only to report a fault.
    pub mem: GuestMemory,
    pub exit: ExitSignal,
}

/// A configured vCPU, ready to start.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

/// What one pass through KVM_RUN asks of the loop.
enum Step {
    Continue,
    End(VmEvent),
}

impl Vcpu {
    pub fn new(id: u8, fd: VcpuFd) -> Vcpu {
        Vcpu { id, fd }
    }

    /// Runs the vCPU on a thread of its own until the run ends.
    pub fn start(self, ctx: Arc<VcpuContext>) -> Result<JoinHandle<()>, Error> {
        install_kick_handler()?;
        let id = self.id;
        thread::Builder::new()
            .name(format!("berth-vcpu{id}"))
            .spawn(move || self.run(&ctx))
            .map_err(|source| Error::Spawn { id, source })
    }

    fn run(mut self, ctx: &VcpuContext) {
        crate::seccomp::enter(crate::launch::ThreadKind::Vcpu);
        // However this thread ends (a panic included), the VMM hears of it; when the run is
        // already ending the report is ignored.
        struct Ended<'a>(u8, &'a ExitSignal);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.1
                    .end(VmEvent::Failed(Error::ThreadEnded { id: self.0 }.into()));
            }
        }
        let _ended = Ended(self.id, &ctx.exit);
        while !ctx.exit.stopping() {
            if let Step::End(event) = self.step(ctx) {
                ctx.exit.end(event);
                return;
            }
        }
    }

    /// One KVM_RUN and the handling of its exit.
    fn step(&mut self, ctx: &VcpuContext) -> Step {
        let id = self.id;
        let fail = |e: Error| Step::End(VmEvent::Failed(e.into()));
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.pio.write(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ctx.mmio.read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.mmio.write(addr, data);
            }
            // Only without an in-kernel LAPIC; a halted guest that nothing can wake has ended.
            Ok(VcpuExit::Hlt) => return Step::End(VmEvent::Exit(ExitReason::Halted)),
            Ok(VcpuExit::Shutdown) => {
                let (rip, paging) = arch::regs::fault_report(&self.fd, &ctx.mem);
                return fail(Error::TripleFault { id, rip, paging });
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => Step::End(VmEvent::Exit(ExitReason::PowerOff)),
                    KVM_SYSTEM_EVENT_RESET => Step::End(VmEvent::Exit(ExitReason::Reset)),
                    KVM_SYSTEM_EVENT_CRASH => fail(Error::GuestCrash { id }),
                    other => fail(Error::UnexpectedExit {
                        id,
                        exit: format!("SystemEvent({other})"),
                    }),
                };
            }
            Ok(VcpuExit::FailEntry(reason, _)) => return fail(Error::FailEntry { id, reason }),
            Ok(VcpuExit::InternalError) => {
                let suberror = self.internal_suberror();
                let rip = self.rip();
                return fail(Error::Internal { id, rip, suberror });
            }
            Ok(VcpuExit::Intr) => {}
            Ok(exit) => {
                let exit = format!("{exit:?}");
                return fail(Error::UnexpectedExit { id, exit });
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(source) => return fail(Error::Run { id, source }),
        }
        Step::Continue
    }

    fn rip(&self) -> Option<u64> {
        self.fd.get_regs().ok().map(|r| r.rip)
    }

    fn internal_suberror(&mut self) -> u32 {
        // SAFETY: KVM filled the `internal` member of the exit union for KVM_EXIT_INTERNAL_ERROR,
        // the exit being handled.
        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror }
    }
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), Error> {
    static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
    (*INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), handle_kick)))
        .map_err(Error::Signal)
}

/// Stops the vCPU threads: kicks each one out of KVM_RUN until it has finished (the stop flag
/// must already be set), then joins them.
pub fn stop_all(handles: Vec<JoinHandle<()>>) {
    let all_finished = || handles.iter().all(|h| h.is_finished());
    'kick: while !all_finished() {
        for handle in handles.iter().filter(|h| !h.is_finished()) {
            // ESRCH only: the thread finished in between.
            let _ = handle.kill(kick_signal());
        }
        // A kicked thread leaves within microseconds; poll finely before kicking again.
        for _ in 0..KICK_POLLS {
            thread::sleep(KICK_INTERVAL / KICK_POLLS);
            if all_finished() {
                break 'kick;
            }
        }
    }
    for handle in handles {
        // A panicking vCPU thread has already reported through its `Ended` guard.
        let _ = handle.join();
    }
}
