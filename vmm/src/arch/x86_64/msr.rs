//! The model-specific registers a vCPU boots with: syscall and sysenter state cleared, the
//! TSC at zero, fast string operations on (as Firecracker and QEMU set them).

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// Why the boot MSRs could not be set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the MSR list: {0}")]
    List(vmm_sys_util::fam::Error),
    #[error("KVM_SET_MSRS failed")]
    Set(#[source] kvm_ioctls::Error),
    /// KVM stops at the first MSR it refuses and reports how many it set.
    #[error(
        "KVM refused MSR {index:#x} (set {set} of {total}): this host's KVM does not support it"
    )]
    Refused {
        index: u32,
        set: usize,
        total: usize,
    },
}

/// The (index, value) pairs every vCPU boots with.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// Sets [`boot_msrs`] on `vcpu`.
pub fn setup(vcpu: &VcpuFd) -> Result<(), Error> {
    let pairs = boot_msrs();
    let entries: Vec<kvm_msr_entry> = pairs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(Error::List)?;
    let set = vcpu.set_msrs(&msrs).map_err(Error::Set)?;
    if set != pairs.len() {
        return Err(Error::Refused {
            index: pairs[set].0,
            set,
            total: pairs.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_are_unique_and_enable_fast_strings() {
        let msrs = boot_msrs();
        let mut indices: Vec<u32> = msrs.iter().map(|m| m.0).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), msrs.len());
        assert!(msrs.contains(&(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING)));
    }
}
