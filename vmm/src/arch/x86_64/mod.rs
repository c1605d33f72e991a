//! x86_64 boot: where the boot data lives in guest memory, the memory map, the boot
//! information a kernel receives (PVH `hvm_start_info` or the Linux zero page), and the
//! per-vCPU set-up (CPUID, MSRs, registers, LAPIC).

pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msr;
pub mod regs;

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Address, GuestAddress};

use crate::memory::{self, GuestMemory};

/// Guest-physical addresses of the boot data (as Firecracker lays them out).
pub mod layout {
    /// The GDT the boot code's segment registers come from.
    pub const GDT_ADDR: u64 = 0x500;
    /// An empty IDT: any exception before the kernel installs its own is a triple fault.
    pub const IDT_ADDR: u64 = 0x520;
    /// PVH: the `hvm_start_info` structure (%ebx at entry).
    pub const PVH_INFO_START: u64 = 0x6000;
    /// PVH: the module list (the initrd).
    pub const MODLIST_START: u64 = 0x6040;
    /// PVH: the memory map.
    pub const MEMMAP_START: u64 = 0x7000;
    /// Linux boot protocol: the zero page (`boot_params`, %rsi at entry).
    pub const ZERO_PAGE_START: u64 = 0x7000;
    /// The stack of the 64-bit entry.
    pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
    /// Identity page tables for the 64-bit entry.
    pub const PML4_START: u64 = 0x9000;
    pub const PDPTE_START: u64 = 0xa000;
    pub const PDE_START: u64 = 0xb000;
    /// The kernel command line.
    pub const CMDLINE_START: u64 = 0x20000;
    /// The longest command line, with its terminating NUL.
    pub const CMDLINE_MAX_SIZE: usize = 2048;
    /// Where conventional memory ends: the EBDA's last KiB holds the MP table.
    pub const EBDA_START: u64 = super::mptable::MPTABLE_START;
    /// The start of high memory, where kernels are loaded.
    pub const HIMEM_START: u64 = 0x10_0000;
    /// KVM's three-page TSS region and its identity-map page, just below the BIOS area at the
    /// top of the 32-bit space (inside the MMIO gap, away from RAM).
    pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
    pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
}

use layout::*;

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// The Linux boot protocol's "HdrS" magic, boot flag and "undefined loader" id.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// The PVH entry of an ELF kernel: 32-bit protected mode, `hvm_start_info` in %ebx.
    Pvh { entry: GuestAddress },
    /// The 64-bit Linux boot protocol (bzImage, or an ELF vmlinux without PVH note): long mode,
    /// the zero page in %rsi.
    Linux64 { entry: GuestAddress },
}

/// An E820 memory type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MemKind {
    Ram = 1,
    Reserved = 2,
}

/// One entry of the guest's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: MemKind,
}

/// Why the guest could not be set up for boot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the kernel command line is longer than {} bytes: shorten --cmdline", CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong,
    #[error("invalid kernel command line: {0} (use printable ASCII)")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("writing the kernel command line into guest memory")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    #[error("writing the boot information into guest memory")]
    BootInfo(#[source] linux_loader::configurator::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error("vCPU {id}: KVM refused its CPUID")]
    Cpuid {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: setting its MSRs")]
    Msrs {
        id: u8,
        #[source]
        source: msr::Error,
    },
    #[error("vCPU {id}: setting its registers")]
    Regs {
        id: u8,
        #[source]
        source: regs::Error,
    },
}

/// The guest's memory map for `mem_mib` MiB: conventional memory, the EBDA reserved for the MP
/// table, RAM from 1 MiB to the MMIO gap and RAM above 4 GiB.
pub fn memmap(mem_mib: u64) -> Vec<MemmapEntry> {
    let end = mem_mib << 20;
    let mut map = vec![
        MemmapEntry {
            addr: 0,
            size: EBDA_START,
            kind: MemKind::Ram,
        },
        MemmapEntry {
            addr: EBDA_START,
            size: 0xa0000 - EBDA_START,
            kind: MemKind::Reserved,
        },
    ];
    let low_end = end.min(memory::MMIO_GAP_START);
    if low_end > HIMEM_START {
        map.push(MemmapEntry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: MemKind::Ram,
        });
    }
    if end > memory::MMIO_GAP_START {
        map.push(MemmapEntry {
            addr: memory::MMIO_GAP_END,
            size: end - memory::MMIO_GAP_START,
            kind: MemKind::Ram,
        });
    }
    map
}

/// The command line as the kernel gets it, checked against the size limit.
pub fn cmdline(text: &str) -> Result<Cmdline, Error> {
    if text.len() >= CMDLINE_MAX_SIZE {
        return Err(Error::CmdlineTooLong);
    }
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(Error::Cmdline)?;
    let text = text.trim();
    if !text.is_empty() {
        cmdline.insert_str(text).map_err(|e| match e {
            linux_loader::cmdline::Error::TooLarge => Error::CmdlineTooLong,
            e => Error::Cmdline(e),
        })?;
    }
    Ok(cmdline)
}

/// Writes `cmdline` at [`CMDLINE_START`]; returns its length without the NUL.
pub fn write_cmdline(mem: &GuestMemory, cmdline: &Cmdline) -> Result<usize, Error> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(Error::CmdlineWrite)?;
    let len = cmdline
        .as_cstring()
        .map_err(Error::Cmdline)?
        .as_bytes()
        .len();
    Ok(len)
}

/// Where an initrd of `size` bytes goes: page-aligned at the top of memory below the MMIO gap
/// and `addr_max`, above the kernel. `None` when it does not fit.
pub fn initrd_addr(
    mem_mib: u64,
    kernel_end: u64,
    size: u64,
    addr_max: u64,
) -> Option<GuestAddress> {
    let top = (mem_mib << 20)
        .min(memory::MMIO_GAP_START)
        .min(addr_max.saturating_add(1));
    let addr = top.checked_sub(size)? & !0xfff;
    (addr >= kernel_end && size > 0).then_some(GuestAddress(addr))
}

/// What the kernel is told at boot.
pub struct BootInfo {
    pub entry: BootEntry,
    pub mem_mib: u64,
    /// Length of the command line at [`CMDLINE_START`], without the NUL.
    pub cmdline_len: usize,
    /// Where the initrd was loaded, and its size.
    pub initrd: Option<(GuestAddress, u64)>,
    /// A bzImage's setup header, to pass back in the zero page.
    pub setup_header: Option<setup_header>,
}

/// Writes the boot information for `info.entry`'s protocol, and the MP table for `vcpus`.
pub fn write_boot_info(mem: &GuestMemory, info: &BootInfo, vcpus: u8) -> Result<(), Error> {
    mptable::write(mem, vcpus)?;
    match info.entry {
        BootEntry::Pvh { .. } => write_start_info(mem, info),
        BootEntry::Linux64 { .. } => write_zero_page(mem, info),
    }
}

fn write_start_info(mem: &GuestMemory, info: &BootInfo) -> Result<(), Error> {
    let memmap: Vec<hvm_memmap_table_entry> = memmap(info.mem_mib)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = info
        .initrd
        .iter()
        .map(|(addr, size)| hvm_modlist_entry {
            paddr: addr.raw_value(),
            size: *size,
            ..Default::default()
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_START },
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(Error::BootInfo)
}

fn write_zero_page(mem: &GuestMemory, info: &BootInfo) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(header) = info.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some((addr, size)) = info.initrd {
        // initrd_addr kept both below 4 GiB.
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = memmap(info.mem_mib);
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    let params = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&params, mem).map_err(Error::BootInfo)
}

/// Sets up vCPU `id` of `count` for `entry`: CPUID from `supported`, MSRs, registers, FPU, LAPIC.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemory,
    supported: &CpuId,
    id: u8,
    count: u8,
    entry: &BootEntry,
) -> Result<(), Error> {
    let mut cpuid = supported.clone();
    cpuid::filter(cpuid.as_mut_slice(), id, count);
    vcpu.set_cpuid2(&cpuid)
        .map_err(|source| Error::Cpuid { id, source })?;
    msr::setup(vcpu).map_err(|source| Error::Msrs { id, source })?;
    let regs = |source| Error::Regs { id, source };
    regs::setup_regs(vcpu, entry).map_err(regs)?;
    regs::setup_fpu(vcpu).map_err(regs)?;
    regs::setup_sregs(mem, vcpu, entry).map_err(regs)?;
    regs::setup_lint(vcpu).map_err(regs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(map: &[MemmapEntry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == MemKind::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn memmap_of_a_small_guest() {
        let map = memmap(64);
        assert_eq!(
            map,
            vec![
                MemmapEntry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: MemKind::Ram
                },
                MemmapEntry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: MemKind::Reserved
                },
                MemmapEntry {
                    addr: 0x10_0000,
                    size: (64 << 20) - 0x10_0000,
                    kind: MemKind::Ram
                },
            ]
        );
        // What the tiny guest prints: RAM rounded up to MiB is the configured size.
        assert_eq!(ram(&map).div_ceil(1 << 20), 64);
    }

    #[test]
    fn memmap_skips_the_mmio_gap() {
        let map = memmap(4096);
        let high = map.last().unwrap();
        assert_eq!(high.addr, 1 << 32);
        assert_eq!(high.size, (4096 << 20) - memory::MMIO_GAP_START);
        assert_eq!(ram(&map).div_ceil(1 << 20), 4096);
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{map:?}");
        }
    }

    #[test]
    fn cmdline_limits() {
        assert!(cmdline("").is_ok());
        assert!(cmdline("console=ttyS0 reboot=k panic=1").is_ok());
        let longest = "a".repeat(CMDLINE_MAX_SIZE - 1);
        assert!(cmdline(&longest).is_ok());
        let too_long = "a".repeat(CMDLINE_MAX_SIZE);
        let err = cmdline(&too_long).unwrap_err().to_string();
        assert!(err.contains("shorten --cmdline"), "{err}");
        assert!(cmdline("caf\u{e9}").is_err());
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let addr = initrd_addr(64, 0x20_0000, 0x1800, u64::MAX).unwrap();
        assert_eq!(addr.raw_value(), (64 << 20) - 0x2000);
        // Capped by the kernel's initrd_addr_max and by the MMIO gap.
        let addr = initrd_addr(64, 0x20_0000, 0x1000, 0x1ff_ffff).unwrap();
        assert_eq!(addr.raw_value(), 0x200_0000 - 0x1000);
        let addr = initrd_addr(8192, 0x20_0000, 0x1000, u64::MAX).unwrap();
        assert_eq!(addr.raw_value(), memory::MMIO_GAP_START - 0x1000);
        // Too big to fit above the kernel.
        assert!(initrd_addr(64, 0x20_0000, 63 << 20, u64::MAX).is_none());
        assert!(initrd_addr(64, 0x20_0000, 0, u64::MAX).is_none());
    }
}
