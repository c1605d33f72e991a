//! The microVM wall, berth's half. The VMM itself (KVM, guest memory, vCPUs, devices) is the
//! `berth-vmm` crate (vmm/), whose program is the only process that runs a guest: [`jailed`]
//! starts it, jailed, with the descriptors of what it boots; [`sandbox`] runs an OCI spec's
//! process in such a VM through the guest agent, [`exec`] serves `berth exec` into it, and
//! [`passt`] is its user-mode network. berth links the crate for the types the two sides
//! share; the VMM core's modules are re-exported here under their old names.

pub mod exec;
pub mod guest;
pub mod jailed;
pub mod passt;
pub mod sandbox;

#[cfg(target_arch = "x86_64")]
pub use berth_vmm::{arch, vcpu, vm, KernelError};
pub use berth_vmm::{
    devices, kvm_is_pvm, launch, memory, DiskConfig, Error, ExitReason, NetBackend, RunReport,
    ShareConfig, VmConfig, DEFAULT_CMDLINE, DEFAULT_MEM_MIB, MAX_DEVICES,
};
