//! A vCPU's register state at boot: general registers, segment and control registers (PVH's
//! 32-bit protected mode or 64-bit long mode on identity page tables), the FPU, and the local
//! APIC's LINT0/LINT1 wiring; and, when a vCPU stops on a fault, a report of its paging state.

use std::fmt::Write as _;

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress};

use super::gdt;
use super::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDE_START, PDPTE_START, PML4_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use super::BootEntry;
use crate::memory::GuestMemory;

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

/// A vCPU's RIP and CS base after a reset (the first instruction at 0xffff_fff0).
const RESET_RIP: u64 = 0xfff0;
const RESET_CS_BASE: u64 = 0xffff_0000;
/// CR4: 5-level paging.
const X86_CR4_LA57: u64 = 1 << 12;
/// A page table entry: present, and (in a PDPTE or PDE) mapping a large page.
const PTE_PRESENT: u64 = 1;
const PTE_LARGE: u64 = 1 << 7;
/// The physical address bits of a CR3 or a page table entry.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Where a vCPU that stopped on a fault was, and what it had for paging: its control registers
/// and how its page tables, as they are in guest memory now, map that RIP. Whoever reads a
/// triple fault's report can tell a kernel whose page tables lost their own text from a CPU
/// that stopped seeing them. No RIP where KVM reset the vCPU at the fault (AMD SVM does: the
/// VMCB is undefined after a shutdown), since the reset state says nothing of the fault.
pub fn fault_report(vcpu: &VcpuFd, mem: &GuestMemory) -> (Option<u64>, String) {
    let rip = match vcpu.get_regs() {
        Ok(regs) => regs.rip,
        Err(e) => return (None, format!("its registers could not be read ({e})")),
    };
    match vcpu.get_sregs() {
        Err(e) => (Some(rip), format!("its control registers could not be read ({e})")),
        Ok(sregs) if rip == RESET_RIP && sregs.cs.base == RESET_CS_BASE => (
            None,
            "KVM put the vCPU through INIT at the fault (it does on AMD), so its registers are gone".to_string(),
        ),
        Ok(sregs) => (Some(rip), paging_walk(mem, &sregs, rip)),
    }
}

fn paging_walk(mem: &GuestMemory, sregs: &kvm_sregs, addr: u64) -> String {
    let mut text = format!(
        "cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer
    );
    if sregs.cr0 & X86_CR0_PG == 0 || sregs.efer & EFER_LMA == 0 {
        text.push_str("; not in long mode with paging, no walk");
        return text;
    }
    // Each level: the address bits that index it, its entry's name, whether that entry can
    // map a large page.
    let mut levels: &[(u32, &str, bool)] = &[
        (48, "pml5e", false),
        (39, "pml4e", false),
        (30, "pdpte", true),
        (21, "pde", true),
        (12, "pte", false),
    ];
    if sregs.cr4 & X86_CR4_LA57 == 0 {
        levels = &levels[1..];
    }
    let _ = write!(text, "; {addr:#x} through");
    let mut table = sregs.cr3 & PTE_ADDR;
    for &(shift, name, may_be_large) in levels {
        let at = table + ((addr >> shift) & 0x1ff) * 8;
        let Ok(entry) = mem.read_obj::<u64>(GuestAddress(at)) else {
            let _ = write!(text, " {name} at {at:#x}, outside guest memory");
            return text;
        };
        let _ = write!(text, " {name} {entry:#x}");
        if entry & PTE_PRESENT == 0 {
            text.push_str(" (not present)");
            return text;
        }
        if may_be_large && entry & PTE_LARGE != 0 {
            text.push_str(" (large page)");
            return text;
        }
        table = entry & PTE_ADDR;
    }
    text
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

    #[test]
    fn a_walk_follows_the_tables_in_guest_memory_and_stops_where_they_do() {
        let mem = crate::memory::create(crate::memory::MIN_MEM_MIB).unwrap();
        let sregs = kvm_sregs {
            cr0: X86_CR0_PE | X86_CR0_PG,
            cr3: 0x1000 | 0x5, // PCID bits are not part of the address
            cr4: X86_CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        };
        let addr = 0xffff_ffff_8120_0000u64;
        let index = |shift: u32| (addr >> shift) & 0x1ff;
        mem.write_obj(0x2003u64, GuestAddress(0x1000 + index(39) * 8))
            .unwrap();
        mem.write_obj(0x3003u64, GuestAddress(0x2000 + index(30) * 8))
            .unwrap();
        // A 2 MiB page: the walk ends at the PDE.
        mem.write_obj(
            0x8000_0000_0120_0083u64,
            GuestAddress(0x3000 + index(21) * 8),
        )
        .unwrap();
        let text = paging_walk(&mem, &sregs, addr);
        assert!(
            text.ends_with("through pml4e 0x2003 pdpte 0x3003 pde 0x8000000001200083 (large page)"),
            "{text}"
        );
        // The same address with the PDE gone.
        mem.write_obj(0u64, GuestAddress(0x3000 + index(21) * 8))
            .unwrap();
        assert!(paging_walk(&mem, &sregs, addr).ends_with("pde 0x0 (not present)"));
        // A table outside guest memory.
        mem.write_obj(0x7000_0003u64, GuestAddress(0x2000 + index(30) * 8))
            .unwrap();
        assert!(paging_walk(&mem, &sregs, addr).ends_with("outside guest memory"));
        // Without paging there is nothing to walk.
        let real = kvm_sregs::default();
        assert!(paging_walk(&mem, &real, addr).ends_with("no walk"));
    }
}
