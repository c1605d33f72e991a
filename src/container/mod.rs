//! The container backend: user namespace, namespaces, mounts, pivot_root, caps, seccomp, process.

pub mod seccomp;
