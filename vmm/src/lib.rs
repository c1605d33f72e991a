//! berth's microVM monitor: boots a kernel in a VM of its own, with a serial console and
//! virtio devices, and reports how the guest ended.
//!
//! Split as Firecracker's VMM is: [`memory`] (guest RAM and its layout), [`vm`] (the VM file
//! descriptor, interrupt controllers, memory registration), [`vcpu`] (vCPU threads and their
//! exits), `arch` (x86_64 boot state: CPUID, MSRs, registers, MP table, boot information),
//! [`devices`] (serial, i8042, boot timer, the buses, virtio), and `builder`, which wires them
//! together in boot order. [`boot`] boots a VM; `RunningVm::wait` waits for it to end.
//!
//! This crate is also the `berth-vmm` program (src/main.rs), the only process that runs a
//! guest: berth hands it open descriptors and a [`launch::Launch`] description, and the
//! program enters a [`jail`] (namespaces, an empty root) and a [`seccomp`] filter per thread
//! kind before the guest's first instruction. berth itself links this library for the types
//! the two sides share and for [`launch`], the one definition of what passes between them.
//!
//! Guest memory is hostile input: every address the guest or a kernel image provides goes
//! through vm-memory's checked accessors, and device accesses through the bus's range checks.

#[cfg(target_arch = "x86_64")]
pub mod arch;
#[cfg(target_arch = "x86_64")]
mod builder;
pub mod devices;
pub mod jail;
pub mod launch;
pub mod memory;
pub mod seccomp;
#[cfg(target_arch = "x86_64")]
pub mod vcpu;
// `vm::vm` is the VM file descriptor's module, as Firecracker's `vstate/vm.rs`.
#[cfg(target_arch = "x86_64")]
pub mod vm;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

#[cfg(target_arch = "x86_64")]
pub use builder::{boot, KernelError, RunningVm, MAX_VIRTIO_DEVICES as MAX_DEVICES};
#[cfg(not(target_arch = "x86_64"))]
pub const MAX_DEVICES: usize = 0;

/// The command line when none is given: the serial console, reboot through the i8042 (which
/// ends the VM), no PCI probing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";
/// Default guest size.
pub const DEFAULT_MEM_MIB: u64 = 128;

/// What to boot, and on how much machine.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// A PVH ELF kernel, an ELF vmlinux or a bzImage.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    /// virtio block devices, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// Host directories the guest mounts over virtio-9p, by tag.
    pub shares: Vec<ShareConfig>,
    /// A virtio-balloon device through which the guest reports the pages it frees, which the
    /// VMM gives back to the host (the last virtio device).
    pub balloon: bool,
}

/// The host ends of a VM's streams.
pub struct VmIo {
    /// The serial console's output.
    pub console: Box<dyn Write + Send>,
    /// The guest agent's channel (virtio-console, `/dev/hvc0` in the guest).
    pub channel: Option<std::os::unix::net::UnixStream>,
    /// The network back end of the guest's NIC (virtio-net, `eth0`), with its MAC address.
    pub net: Option<(NetBackend, [u8; 6])>,
}

/// Where a guest NIC's frames go.
#[derive(Debug)]
pub enum NetBackend {
    /// A stream of length-prefixed Ethernet frames (passt).
    Stream(std::os::unix::net::UnixStream),
    /// A tap device (`IFF_TAP | IFF_NO_PI`), e.g. on a user-defined network's bridge.
    Tap(std::os::fd::OwnedFd),
}

/// A host file the guest sees as a virtio block device.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A host directory the guest sees as a virtio-9p device with mount tag `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConfig {
    pub path: PathBuf,
    pub tag: String,
    pub read_only: bool,
    /// The uid and gid the guest sees the user's own files as (and a chown to which is a
    /// chown to the user): root by default, the user's ids with `--userns=keep-id`.
    pub guest_owner: (u32, u32),
}

/// How a guest ended a run that went as it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042 reset, or a reset system event).
    Reset,
    /// The guest powered the machine off.
    PowerOff,
    /// The guest halted with nothing left to wake it.
    Halted,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExitReason::Reset => "reset",
            ExitReason::PowerOff => "power-off",
            ExitReason::Halted => "halted",
        })
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub exit: ExitReason,
    /// Time from the VMM's start to the guest's boot-timer signal, if it sent one.
    pub boot_time: Option<Duration>,
}

/// Why a VM could not boot or did not end well.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the microVM is only implemented for x86_64 so far")]
    UnsupportedArch,
    #[error("--cpus must be at least 1")]
    NoVcpus,
    #[error("the VM's vCPUs stopped without reporting why")]
    Lost,
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Kvm(#[from] vm::Error),
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error("giving unused guest memory back to the host")]
    Discard(#[from] memory::DiscardError),
    #[cfg(target_arch = "x86_64")]
    #[error("{}: {source}", path.display())]
    Kernel { path: PathBuf, source: KernelError },
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Boot(#[from] arch::Error),
    #[error("too many devices for one VM ({0}; at most {MAX_DEVICES}): an image with that many layers needs squashing")]
    TooManyDevices(usize),
    #[error("opening the disk {}", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sharing a directory with the microVM")]
    Share(#[from] devices::virtio::share::ShareError),
    #[error("setting up the devices")]
    Devices(#[source] std::io::Error),
    #[error("placing a device on the bus")]
    Bus(#[from] devices::bus::Error),
    #[cfg(target_arch = "x86_64")]
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
}

/// How the vCPUs and devices report the end of a run to the thread waiting for it.
#[derive(Debug)]
pub enum VmEvent {
    Exit(ExitReason),
    Failed(Error),
}

/// Ends the run: sets the stop flag every vCPU checks before KVM_RUN, then reports why. Only
/// the first report counts.
#[derive(Clone)]
pub struct ExitSignal {
    stop: Arc<AtomicBool>,
    events: Sender<VmEvent>,
}

impl ExitSignal {
    pub fn new(events: Sender<VmEvent>) -> ExitSignal {
        ExitSignal {
            stop: Arc::new(AtomicBool::new(false)),
            events,
        }
    }

    /// Stops the vCPUs and reports `event`.
    pub fn end(&self, event: VmEvent) {
        self.stop.store(true, Ordering::SeqCst);
        // The receiver only goes away once the run is over.
        let _ = self.events.send(event);
    }

    /// Stops the vCPUs without a report (the run's end is already known).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the run is ending.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A VM to boot with everything it reads already open: the jailed VMM sees no host path, so
/// berth opens the kernel, the initrd, the disks and /dev/kvm, and binds the shares' directories
/// into the jail (see [`launch`]).
pub struct Machine {
    pub kvm: kvm_ioctls::Kvm,
    pub kernel: OpenFile,
    pub initrd: Option<OpenFile>,
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    /// virtio block devices, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<OpenDisk>,
    /// Directories the guest mounts over virtio-9p, by tag, at their paths in the jail.
    pub shares: Vec<ShareConfig>,
    pub balloon: bool,
}

/// An open file, with the host path it was opened at for messages.
#[derive(Debug)]
pub struct OpenFile {
    pub file: std::fs::File,
    pub path: PathBuf,
}

/// An open disk.
#[derive(Debug)]
pub struct OpenDisk {
    pub file: std::fs::File,
    pub read_only: bool,
}

/// Whether /dev/kvm is PVM (software nested virtualization, the `kvm_pvm` module): tiny guests
/// run there, standard Linux guests do not get to userspace.
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}
