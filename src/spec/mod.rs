//! Image config + run request -> OCI runtime spec: the one backend-neutral description of a process.

pub mod caps;
pub mod seccomp;
