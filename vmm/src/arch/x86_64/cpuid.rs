//! The CPUID a vCPU reports: what KVM supports on this host, adjusted so the guest sees a
//! virtual machine with `count` single-thread cores of one package, and its own APIC id.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1: version and feature information.
const LEAF_FEATURES: u32 = 0x1;
/// Leaf 0xb: extended topology enumeration.
const LEAF_TOPOLOGY: u32 = 0xb;

/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: the local APIC's TSC-deadline timer mode. KVM emulates it but leaves the bit
/// out of KVM_GET_SUPPORTED_CPUID (KVM_CAP_TSC_DEADLINE_TIMER says whether it can).
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 EDX: more than one logical processor per package (the count in EBX is valid).
const EDX_HTT: u32 = 1 << 28;
/// Leaf 1 EBX: CLFLUSH line size, in 8-byte units.
const EBX_CLFLUSH_SIZE: u32 = 8;

/// Leaf 0xb ECX level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Adjusts `entries` (from KVM_GET_SUPPORTED_CPUID) for vCPU `id` of `count`.
pub fn filter(entries: &mut [kvm_cpuid_entry2], id: u8, count: u8) {
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ecx |= ECX_HYPERVISOR;
                entry.ebx = (u32::from(id) << 24)
                    | (u32::from(count) << 16)
                    | (EBX_CLFLUSH_SIZE << 8)
                    | (entry.ebx & 0xff);
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_TOPOLOGY => {
                entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                // The x2APIC id of this logical processor, at every level.
                entry.edx = u32::from(id);
                match entry.index {
                    // One thread per core.
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (LEVEL_SMT << 8) | entry.index;
                    }
                    // `count` cores per package: the APIC id shifts past them.
                    1 => {
                        entry.eax = apic_id_shift(count);
                        entry.ebx = u32::from(count);
                        entry.ecx = (LEVEL_CORE << 8) | entry.index;
                    }
                    // No further levels.
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Offers the TSC-deadline timer. With it Linux programs its tick straight from the TSC (which
/// kvmclock calibrates) and never calibrates the APIC timer against another clock: that
/// calibration is slow, and on a loaded or nested host it can fail and leave the guest with
/// the APIC timer disabled.
pub fn enable_tsc_deadline(entries: &mut [kvm_cpuid_entry2]) {
    for entry in entries.iter_mut().filter(|e| e.function == LEAF_FEATURES) {
        entry.ecx |= ECX_TSC_DEADLINE;
    }
}

/// Bits of the APIC id that number the cores of a package: ceil(log2(count)).
fn apic_id_shift(count: u8) -> u32 {
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xdead_be00 | 0x42,
            edx: EDX_HTT,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_names_the_vcpu_and_the_count_and_sets_the_hypervisor_bit() {
        let mut entries = [entry(1, 0), entry(0x8000_0001, 0)];
        filter(&mut entries, 3, 4);
        let leaf1 = entries[0];
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(leaf1.ebx >> 24, 3, "initial APIC id");
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!((leaf1.ebx >> 8) & 0xff, 8, "CLFLUSH size");
        assert_eq!(leaf1.ebx & 0xff, 0x42, "brand index kept");
        assert_ne!(leaf1.edx & EDX_HTT, 0);
        assert_eq!(entries[1].ebx, 0xdead_be42, "other leaves untouched");
    }

    #[test]
    fn a_single_vcpu_clears_htt() {
        let mut entries = [entry(1, 0)];
        filter(&mut entries, 0, 1);
        assert_eq!(entries[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn tsc_deadline_is_offered_in_leaf_1_only() {
        let mut entries = vec![entry(LEAF_FEATURES, 0), entry(0x7, 0)];
        enable_tsc_deadline(&mut entries);
        assert_ne!(entries[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(entries[1].ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn leaf_0xb_describes_cores_of_one_package() {
        let mut entries = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        filter(&mut entries, 2, 3);
        let [smt, core, end] = entries;
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 2));
        assert!(entries
            .iter()
            .all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0));
    }

    #[test]
    fn apic_id_shift_rounds_up() {
        assert_eq!(apic_id_shift(1), 0);
        assert_eq!(apic_id_shift(2), 1);
        assert_eq!(apic_id_shift(3), 2);
        assert_eq!(apic_id_shift(8), 3);
        assert_eq!(apic_id_shift(9), 4);
    }
}
