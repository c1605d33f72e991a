//! A vCPU's register state at boot: general registers, segment and control registers (PVH's
//! 32-bit protected mode or 64-bit long mode on identity page tables), the FPU, and the local
//! APIC's LINT0/LINT1 wiring.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress};

use super::gdt;
use super::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDE_START, PDPTE_START, PML4_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use super::BootEntry;
use crate::vm::memory::GuestMemory;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 0x2;

/// Local APIC register offsets and the delivery modes of the LVT entries.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Why a vCPU's registers could not be set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setting the general registers")]
    Regs(#[source] kvm_ioctls::Error),
    #[error("reading the special registers")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("setting the special registers")]
    Sregs(#[source] kvm_ioctls::Error),
    #[error("setting the FPU state")]
    Fpu(#[source] kvm_ioctls::Error),
    #[error("reading the local APIC")]
    GetLapic(#[source] kvm_ioctls::Error),
    #[error("setting the local APIC")]
    Lapic(#[source] kvm_ioctls::Error),
    #[error("writing the {0} into guest memory")]
    Write(&'static str),
}

/// The general registers for `entry`.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    match *entry {
        // PVH: %ebx points at hvm_start_info; nothing else is defined.
        BootEntry::Pvh { entry } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry.raw_value(),
            rbx: PVH_INFO_START,
            ..Default::default()
        },
        // Linux 64-bit boot protocol: %rsi points at the zero page.
        BootEntry::Linux64 { entry } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry.raw_value(),
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
    }
}

/// Sets the general registers.
pub fn setup_regs(vcpu: &VcpuFd, entry: &BootEntry) -> Result<(), Error> {
    vcpu.set_regs(&boot_regs(entry)).map_err(Error::Regs)
}

/// Sets the FPU to its power-on state with SSE exceptions masked.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::Fpu)
}

/// The GDT for `entry`: null, code, data, TSS.
pub fn gdt_for(entry: &BootEntry) -> [u64; 4] {
    match entry {
        BootEntry::Pvh { .. } => [
            0,
            gdt::gdt_entry(gdt::CODE32, 0, 0xfffff),
            gdt::gdt_entry(gdt::DATA, 0, 0xfffff),
            gdt::gdt_entry(gdt::TSS32, 0, 0x67),
        ],
        BootEntry::Linux64 { .. } => [
            0,
            gdt::gdt_entry(gdt::CODE64, 0, 0xfffff),
            gdt::gdt_entry(gdt::DATA, 0, 0xfffff),
            gdt::gdt_entry(gdt::TSS64, 0, 0xfffff),
        ],
    }
}

/// Writes the GDT, an empty IDT and (for long mode) the identity page tables, then points the
/// special registers at them.
pub fn setup_sregs(mem: &GuestMemory, vcpu: &VcpuFd, entry: &BootEntry) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(Error::GetSregs)?;
    write_descriptor_tables(mem, entry)?;
    apply_segments(&mut sregs, entry);
    if let BootEntry::Linux64 { .. } = entry {
        write_page_tables(mem)?;
        sregs.cr3 = PML4_START;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    vcpu.set_sregs(&sregs).map_err(Error::Sregs)
}

fn write_descriptor_tables(mem: &GuestMemory, entry: &BootEntry) -> Result<(), Error> {
    for (i, descriptor) in gdt_for(entry).iter().enumerate() {
        mem.write_obj(*descriptor, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|_| Error::Write("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|_| Error::Write("IDT"))
}

/// Segment and control registers for `entry` (the descriptor tables' contents must match).
pub fn apply_segments(sregs: &mut kvm_sregs, entry: &BootEntry) {
    let gdt = gdt_for(entry);
    let code = gdt::segment(gdt[1], 1);
    let data = gdt::segment(gdt[2], 2);
    let tss = gdt::segment(gdt[3], 3);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match entry {
        // PVH: protected mode, paging off, CR4 clear.
        BootEntry::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootEntry::Linux64 { .. } => {
            sregs.cr0 |= X86_CR0_PE;
            sregs.efer |= EFER_LME;
        }
    }
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the 64-bit entry of a kernel,
/// which sets up its own tables at once.
fn write_page_tables(mem: &GuestMemory) -> Result<(), Error> {
    let write = |value: u64, at: u64| {
        mem.write_obj(value, GuestAddress(at))
            .map_err(|_| Error::Write("page tables"))
    };
    write(PDPTE_START | 0x03, PML4_START)?;
    write(PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        write((i << 21) | 0x83, PDE_START + i * 8)?;
    }
    Ok(())
}

/// Sets LINT0 to ExtINT and LINT1 to NMI, the virtual-wire mode the MP table announces.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut lapic = vcpu.get_lapic().map_err(Error::GetLapic)?;
    set_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(Error::Lapic)
}

/// The LINT programming of [`setup_lint`] on a LAPIC register page.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let value = lapic_reg(lapic, reg);
        set_lapic_reg(lapic, reg, (value & !0x700) | (mode << 8));
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: Vec<u8> = lapic.regs[offset..offset + 4]
        .iter()
        .map(|b| *b as u8)
        .collect();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (slot, byte) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *slot = byte as _;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_starts_in_flat_protected_mode_with_ebx_at_start_info() {
        let entry = BootEntry::Pvh {
            entry: GuestAddress(0x10_0000),
        };
        let regs = boot_regs(&entry);
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags),
            (0x10_0000, PVH_INFO_START, 2)
        );
        let mut sregs = kvm_sregs::default();
        apply_segments(&mut sregs, &entry);
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (8, 1, 0));
        assert_eq!((sregs.ss.selector, sregs.tr.selector), (16, 24));
        assert_eq!(sregs.tr.limit, 0x67);
    }

    #[test]
    fn linux64_starts_in_long_mode_with_rsi_at_the_zero_page() {
        let entry = BootEntry::Linux64 {
            entry: GuestAddress(0x100_0000),
        };
        let regs = boot_regs(&entry);
        assert_eq!((regs.rip, regs.rsi), (0x100_0000, ZERO_PAGE_START));
        let mut sregs = kvm_sregs::default();
        apply_segments(&mut sregs, &entry);
        assert_eq!((sregs.cs.l, sregs.cs.db), (1, 0));
        assert_ne!(sregs.efer & EFER_LME, 0);
    }

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi_keeping_the_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x1_0000 | 0x700);
        set_lint(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x1_0000 | 0x700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x400);
    }
}
