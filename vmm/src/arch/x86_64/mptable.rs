//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI finds its vCPUs,
//! the I/O APIC and the legacy interrupt wiring.
//!
//! The floating pointer and the configuration table sit together at [`MPTABLE_START`], in the
//! last KiB of conventional memory (the EBDA), which is where guests look for them and which
//! the memory map reserves.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemory;

/// Where the table starts in guest memory.
pub const MPTABLE_START: u64 = 0x9fc00;
/// The table must end below the legacy BIOS area at 1 MiB.
const MPTABLE_LIMIT: u64 = 0x10_0000;
/// The local APIC's address, as every vCPU sees it.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// The I/O APIC's address.
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// The most vCPUs the table can describe: APIC ids 0..=253, the I/O APIC takes the next one.
pub const MAX_VCPUS: u8 = 254;
/// The I/O APIC's inputs: KVM's in-kernel I/O APIC has 24.
const IOAPIC_PINS: u8 = 24;

const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_LEN: usize = 20;
const ENTRY_LEN: usize = 8;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// Family 6, and the FPU and APIC feature bits.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
const BUS_ISA: u8 = 0;

/// Why the table could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0} vCPUs do not fit the MP table: pick --cpus between 1 and {MAX_VCPUS}")]
    TooManyVcpus(u16),
    #[error("the MP table does not fit below 1 MiB")]
    TooBig,
    #[error("guest memory does not cover the MP table at {MPTABLE_START:#x}")]
    Write,
}

/// The MP table bytes for `vcpus` vCPUs, to be placed at `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, Error> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(Error::TooManyVcpus(u16::from(vcpus)));
    }
    let ioapic_id = vcpus + 1;
    let other_entries = 2 + usize::from(IOAPIC_PINS) + 2;
    let mut entries =
        Vec::with_capacity(usize::from(vcpus) * PROCESSOR_LEN + other_entries * ENTRY_LEN);
    let mut count: u16 = 0;
    for id in 0..vcpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[MP_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[MP_BUS, BUS_ISA]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // ISA IRQ n is I/O APIC pin n, with the bus's default polarity and trigger.
        entries.extend_from_slice(&[MP_INTSRC, MP_IRQ_INT, 0, 0, BUS_ISA, pin, ioapic_id, pin]);
        count += 1;
    }
    // LINT0 of every local APIC takes the 8259's ExtINT, LINT1 NMIs (the virtual-wire mode the
    // LAPIC set-up programs too).
    entries.extend_from_slice(&[MP_LINTSRC, MP_IRQ_EXTINT, 0, 0, BUS_ISA, 0, 0xff, 0]);
    entries.extend_from_slice(&[MP_LINTSRC, MP_IRQ_NMI, 0, 0, BUS_ISA, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let total = FLOATING_LEN + table_len;
    if base + total as u64 > MPTABLE_LIMIT {
        return Err(Error::TooBig);
    }
    let table_addr = u32::try_from(base + FLOATING_LEN as u64).map_err(|_| Error::TooBig)?;

    let mut floating = Vec::with_capacity(FLOATING_LEN);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length/16, spec 1.4, checksum, features
    floating[10] = checksum(&floating);

    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]); // spec 1.4, checksum
    table.extend_from_slice(b"BERTH   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length and checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    floating.extend_from_slice(&table);
    Ok(floating)
}

/// The byte that makes `bytes` sum to zero (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Writes the table for `vcpus` vCPUs at [`MPTABLE_START`].
pub fn write(mem: &GuestMemory, vcpus: u8) -> Result<(), Error> {
    let bytes = build(vcpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn floating_pointer_points_at_the_table_and_sums_to_zero() {
        let bytes = build(2, MPTABLE_START).unwrap();
        assert_eq!(&bytes[0..4], b"_MP_");
        let ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(u64::from(ptr), MPTABLE_START + 16);
        assert_eq!((bytes[8], bytes[9]), (1, 4));
        assert_eq!(sum(&bytes[..16]), 0);
    }

    #[test]
    fn configuration_table_sums_to_zero_and_counts_its_entries() {
        for vcpus in [1u8, 2, 7, MAX_VCPUS] {
            let bytes = build(vcpus, MPTABLE_START).unwrap();
            let table = &bytes[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "{vcpus} vCPUs");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(vcpus) + 2 + 24 + 2);
            assert_eq!(
                u32::from_le_bytes(table[36..40].try_into().unwrap()),
                APIC_DEFAULT_PHYS_BASE
            );
        }
    }

    /// Walks the entries as a guest does and returns (enabled cpus, BSP ids, I/O APIC ids).
    fn walk(table: &[u8]) -> (usize, Vec<u8>, Vec<u8>) {
        let count = u16::from_le_bytes([table[34], table[35]]);
        let mut at = HEADER_LEN;
        let (mut cpus, mut bsps, mut ioapics) = (0, Vec::new(), Vec::new());
        for _ in 0..count {
            match table[at] {
                MP_PROCESSOR => {
                    if table[at + 3] & CPU_ENABLED != 0 {
                        cpus += 1;
                    }
                    if table[at + 3] & CPU_BOOTPROCESSOR != 0 {
                        bsps.push(table[at + 1]);
                    }
                    at += PROCESSOR_LEN;
                }
                kind => {
                    if kind == MP_IOAPIC {
                        ioapics.push(table[at + 1]);
                    }
                    at += ENTRY_LEN;
                }
            }
        }
        assert_eq!(at, table.len());
        (cpus, bsps, ioapics)
    }

    #[test]
    fn describes_each_vcpu_once_with_vcpu_0_as_the_bsp() {
        let bytes = build(4, MPTABLE_START).unwrap();
        assert_eq!(walk(&bytes[16..]), (4, vec![0], vec![5]));
    }

    #[test]
    fn refuses_zero_and_too_many_vcpus() {
        assert_eq!(build(0, MPTABLE_START), Err(Error::TooManyVcpus(0)));
        assert_eq!(build(255, MPTABLE_START), Err(Error::TooManyVcpus(255)));
        assert_eq!(build(200, 0xffc00), Err(Error::TooBig));
    }
}
