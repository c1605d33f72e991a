//! `berth doctor` and `berth info`: host checks.
//!
//! [`doctor::run_checks`] inspects what this machine offers a rootless container engine —
//! newuidmap/newgidmap, subordinate id ranges, unprivileged user namespaces (with a real
//! `unshare` probe), kernel overlayfs in a user namespace (a real mount probe), fuse-overlayfs,
//! slirp4netns/pasta, /dev/kvm (PVM recognised), the cgroup hierarchy and XDG_RUNTIME_DIR — and
//! returns one [`Check`] per item: what was found and, when it is not fine, the exact command
//! that fixes it. [`render`] prints them as `berth doctor` shows them; [`has_failures`] tells
//! whether berth can run containers at all here. [`kvm_status`] and [`cgroup_mode`] are the
//! short answers `berth info` prints.

pub mod doctor;

pub use doctor::{
    cgroup_mode, has_failures, kernel_at_least, kvm_status, parse_kernel_version, render,
    run_checks, CgroupMode, Check, KvmStatus, Level,
};
