//! The VM itself: /dev/kvm, the VM file descriptor, guest memory registration, and the
//! in-kernel interrupt controllers (PIC, I/O APIC) and PIT.

use std::io;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::arch::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use super::memory::GuestMemory;

/// The KVM API version every kernel since 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

/// What the VMM needs from KVM.
const REQUIRED_CAPS: [(Cap, &str); 8] = [
    (Cap::Irqchip, "in-kernel interrupt controllers"),
    (Cap::UserMemory, "user memory regions"),
    (Cap::SetTssAddr, "KVM_SET_TSS_ADDR"),
    (Cap::Pit2, "the in-kernel PIT"),
    (Cap::Irqfd, "irqfd"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::ExtCpuid, "KVM_GET_SUPPORTED_CPUID"),
    (Cap::ImmediateExit, "immediate_exit"),
];

/// Why the VM could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("/dev/kvm does not exist: enable virtualization in the firmware (or nested virtualization for this VM) and load the kvm module (`modprobe kvm_intel` or `modprobe kvm_amd`)")]
    NoKvm,
    #[error("/dev/kvm is not accessible to this user: run `sudo scripts/setup-host` (it makes /dev/kvm usable by every user){}", group.as_ref().map(|g| format!(", or add the user to its group (`sudo usermod -aG {g} $USER`, then log in again)")).unwrap_or_default())]
    KvmAccess {
        /// The device's group, when joining it would help (not root's).
        group: Option<String>,
    },
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("/dev/kvm speaks KVM API version {0}, berth needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    #[error("this host's KVM lacks {0}, which berth needs (Linux 4.11 and later have all it uses): update the kernel, or where this /dev/kvm is a stand-in (a hypervisor's or an emulator's), run without --vm")]
    MissingCap(&'static str),
    #[error("KVM allows at most {max} vCPUs per VM here: pick a smaller --cpus")]
    TooManyVcpus { max: usize },
    #[error("KVM_CREATE_VM failed (too many VMs, or out of memory?)")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed")]
    TssAddress(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_IDENTITY_MAP_ADDR failed")]
    IdentityMap(#[source] kvm_ioctls::Error),
    #[error("creating the in-kernel interrupt controllers failed")]
    Irqchip(#[source] kvm_ioctls::Error),
    #[error("creating the in-kernel PIT failed")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("registering guest memory slot {slot} with KVM failed")]
    MemoryRegion {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("routing an eventfd to IRQ {gsi} failed")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("routing writes of {datamatch} to MMIO address {addr:#x} to an eventfd failed")]
    Ioeventfd {
        addr: u64,
        datamatch: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("creating vCPU {id} failed")]
    CreateVcpu {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Opens /dev/kvm and checks that it offers what berth needs.
pub fn open_kvm() -> Result<Kvm, Error> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => Error::NoKvm,
        libc::EACCES | libc::EPERM => Error::KvmAccess { group: kvm_group() },
        _ => Error::OpenKvm(e),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(Error::ApiVersion(version));
    }
    for (cap, what) in REQUIRED_CAPS {
        if !kvm.check_extension(cap) {
            return Err(Error::MissingCap(what));
        }
    }
    Ok(kvm)
}

/// The group owning /dev/kvm when it grants read-write access and is not root's.
fn kvm_group() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    if meta.gid() == 0 || meta.mode() & 0o060 != 0o060 {
        return None;
    }
    let group = nix::unistd::Group::from_gid(meta.gid().into()).ok()??;
    Some(group.name)
}

/// A VM with its interrupt controllers.
pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates a VM that can take `vcpus` vCPUs, with KVM's TSS and identity-map pages placed
    /// in the MMIO gap and the in-kernel PIC and I/O APIC (they must exist before any vCPU).
    pub fn new(kvm: &Kvm, vcpus: u8) -> Result<Vm, Error> {
        let max = kvm.get_max_vcpus();
        if usize::from(vcpus) > max {
            return Err(Error::TooManyVcpus { max });
        }
        let fd = loop {
            match kvm.create_vm() {
                Err(e) if e.errno() == libc::EINTR => continue,
                result => break result.map_err(Error::CreateVm)?,
            }
        };
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(Error::TssAddress)?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(Error::IdentityMap)?;
        fd.create_irq_chip().map_err(Error::Irqchip)?;
        Ok(Vm { fd })
    }

    /// Makes every region of `mem` guest-physical memory. `mem` must outlive the VM's vCPUs.
    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), Error> {
        for (slot, region) in (0u32..).zip(mem.iter()) {
            let host =
                mem.get_host_address(region.start_addr())
                    .map_err(|_| Error::MemoryRegion {
                        slot,
                        source: kvm_ioctls::Error::new(libc::EFAULT),
                    })?;
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping of exactly `memory_size` bytes owned by
            // `mem`, which the caller keeps alive for as long as the VM can run.
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(|source| Error::MemoryRegion { slot, source })?;
        }
        Ok(())
    }

    /// Creates the PIT (after the interrupt controllers), with the PC speaker port as a dummy.
    ///
    /// Linux guests calibrate and check their timers with it. Its price is paid at teardown:
    /// KVM unregisters the PIT's interrupt notifiers with two SRCU grace periods, most of the
    /// time between a guest's reset and `berth vmm`'s exit (about 16 ms on a loaded PVM host).
    pub fn create_pit(&self) -> Result<(), Error> {
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(config).map_err(Error::Pit)
    }

    /// Raises interrupt `gsi` whenever `event` is signalled.
    pub fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(|source| Error::Irqfd { gsi, source })
    }

    /// Signals `event`, with no exit to the VMM, whenever the guest writes the 32-bit value
    /// `datamatch` to MMIO address `addr`.
    pub fn register_ioevent(
        &self,
        event: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), Error> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| Error::Ioeventfd {
                addr,
                datamatch,
                source,
            })
    }

    /// Creates vCPU `id` (its APIC id too).
    pub fn create_vcpu(&self, id: u8) -> Result<VcpuFd, Error> {
        self.fd
            .create_vcpu(u64::from(id))
            .map_err(|source| Error::CreateVcpu { id, source })
    }
}

/// An eventfd for KVM to signal (an ioeventfd) or to turn into an interrupt (an irqfd).
pub fn eventfd() -> io::Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
}
