//! Capability sets: Docker's default, --cap-add/--cap-drop arithmetic.
//!
//! The rules are Docker's (moby `oci/caps.TweakCapabilities`): names are
//! case-insensitive and may omit the `CAP_` prefix; `ALL` in `--cap-add` grants every
//! capability the running kernel knows minus `--cap-drop`; `ALL` in `--cap-drop` starts
//! from nothing and keeps only `--cap-add`; otherwise the default set minus drops plus
//! adds (an explicit add wins over a drop of the same name). One deliberate difference:
//! names are validated even for `--privileged`, where Docker ignores them, so a typo is
//! reported instead of silently passing.

use std::collections::BTreeSet;
use std::str::FromStr;

use ::caps::Capability;

/// Docker's default capability set for an unprivileged container.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The keyword that stands for every capability in `--cap-add` / `--cap-drop`.
const ALL: &str = "ALL";

/// Why a `--cap-add` / `--cap-drop` list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    /// The name is not a Linux capability at all.
    #[error("unknown capability {0}: see capabilities(7) for valid names")]
    Unknown(String),
    /// The name is a capability, but the running kernel predates it.
    #[error(
        "capability {name} is not supported by the running kernel (its highest capability \
         number is {last_cap}): remove it from --cap-add/--cap-drop or use a newer kernel"
    )]
    NotInKernel {
        /// The canonical `CAP_*` name.
        name: String,
        /// The kernel's `/proc/sys/kernel/cap_last_cap`.
        last_cap: u8,
    },
}

/// The capability set a container gets, from Docker's default set and the user's
/// `--cap-add` / `--cap-drop` / `--privileged`.
///
/// Returns canonical `CAP_*` names, sorted, without duplicates.
pub fn effective_caps(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, CapsError> {
    resolve(add, drop, privileged, kernel_last_cap())
}

/// [`effective_caps`] for a kernel whose highest capability number is `last_cap`.
fn resolve(
    add: &[String],
    drop: &[String],
    privileged: bool,
    last_cap: u8,
) -> Result<Vec<String>, CapsError> {
    let add = CapList::parse(add, last_cap)?;
    let drop = CapList::parse(drop, last_cap)?;
    let kernel_caps = || {
        ::caps::all()
            .into_iter()
            .filter(|cap| cap.index() <= last_cap)
            .map(|cap| cap.to_string())
    };

    let set: BTreeSet<String> = if privileged {
        kernel_caps().collect()
    } else if add.all {
        // Checked before `drop.all`, as Docker does: `--cap-add ALL --cap-drop ALL` is ALL.
        kernel_caps()
            .filter(|cap| !drop.names.contains(cap))
            .collect()
    } else if drop.all {
        add.names
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|cap| cap.to_string())
            .filter(|cap| !drop.names.contains(cap))
            .chain(add.names)
            .collect()
    };
    Ok(set.into_iter().collect())
}

/// One side of the arithmetic (`--cap-add` or `--cap-drop`), validated.
struct CapList {
    /// The list contained `ALL`.
    all: bool,
    /// Canonical `CAP_*` names other than `ALL`.
    names: BTreeSet<String>,
}

impl CapList {
    fn parse(names: &[String], last_cap: u8) -> Result<Self, CapsError> {
        let mut list = CapList {
            all: false,
            names: BTreeSet::new(),
        };
        for name in names {
            let trimmed = name.trim();
            if trimmed.eq_ignore_ascii_case(ALL) {
                list.all = true;
                continue;
            }
            let cap = Capability::from_str(&::caps::to_canonical(trimmed))
                .map_err(|_| CapsError::Unknown(name.clone()))?;
            if cap.index() > last_cap {
                return Err(CapsError::NotInKernel {
                    name: cap.to_string(),
                    last_cap,
                });
            }
            list.names.insert(cap.to_string());
        }
        Ok(list)
    }
}

/// The highest capability number the running kernel knows.
///
/// `/proc/sys/kernel/cap_last_cap` is the authority; without procfs, probe the bounding
/// set (prctl accepts only numbers the kernel knows); failing both, trust the library.
fn kernel_last_cap() -> u8 {
    let from_procfs = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<u8>().ok());
    from_procfs
        .or_else(|| {
            ::caps::runtime::thread_all_supported()
                .iter()
                .map(Capability::index)
                .max()
        })
        .unwrap_or_else(|| {
            ::caps::all()
                .iter()
                .map(Capability::index)
                .max()
                .unwrap_or(0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CAP_CHECKPOINT_RESTORE` (40), the newest capability the library knows.
    const LAST_CAP: u8 = 40;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names = strings(names);
        names.sort();
        names
    }

    fn every_cap() -> Vec<String> {
        let set: BTreeSet<String> = ::caps::all().iter().map(|cap| cap.to_string()).collect();
        set.into_iter().collect()
    }

    #[test]
    fn no_flags_give_dockers_default_set_sorted() {
        let caps = resolve(&[], &[], false, LAST_CAP).unwrap();
        assert_eq!(caps, sorted(DEFAULT_CAPS));
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn names_are_case_insensitive_with_or_without_prefix() {
        let caps = resolve(
            &strings(&["net_admin", "Cap_Sys_Ptrace", "CAP_SYS_TIME"]),
            &strings(&["mknod", "cap_net_raw"]),
            false,
            LAST_CAP,
        )
        .unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(caps.contains(&"CAP_SYS_PTRACE".to_string()));
        assert!(caps.contains(&"CAP_SYS_TIME".to_string()));
        assert!(!caps.contains(&"CAP_MKNOD".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert_eq!(caps.len(), 14 + 3 - 2);
        let mut expected = caps.clone();
        expected.sort();
        assert_eq!(caps, expected, "output must be sorted");
    }

    #[test]
    fn adding_a_default_cap_twice_does_not_duplicate_it() {
        let caps = resolve(&strings(&["chown", "CHOWN"]), &[], false, LAST_CAP).unwrap();
        assert_eq!(caps, sorted(DEFAULT_CAPS));
    }

    #[test]
    fn an_add_wins_over_a_drop_of_the_same_cap() {
        let caps = resolve(&strings(&["kill"]), &strings(&["KILL"]), false, LAST_CAP).unwrap();
        assert!(caps.contains(&"CAP_KILL".to_string()));
    }

    #[test]
    fn add_all_grants_every_kernel_cap_minus_drops() {
        let caps = resolve(
            &strings(&["all"]),
            &strings(&["sys_admin"]),
            false,
            LAST_CAP,
        )
        .unwrap();
        let expected: Vec<String> = every_cap()
            .into_iter()
            .filter(|cap| cap != "CAP_SYS_ADMIN")
            .collect();
        assert_eq!(caps, expected);
    }

    #[test]
    fn add_all_stops_at_the_kernels_last_cap() {
        // A 5.8 kernel: CAP_BPF (39) is its last, CAP_CHECKPOINT_RESTORE (40) is unknown.
        let caps = resolve(&strings(&["ALL"]), &[], false, 39).unwrap();
        assert!(caps.contains(&"CAP_BPF".to_string()));
        assert!(!caps.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        assert_eq!(caps.len(), 40);
    }

    #[test]
    fn drop_all_keeps_only_the_adds() {
        let caps = resolve(
            &strings(&["NET_BIND_SERVICE", "chown"]),
            &strings(&["ALL"]),
            false,
            LAST_CAP,
        )
        .unwrap();
        assert_eq!(caps, strings(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]));
        assert!(resolve(&[], &strings(&["all"]), false, LAST_CAP)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn add_all_and_drop_all_is_all_as_in_docker() {
        let caps = resolve(&strings(&["ALL"]), &strings(&["ALL"]), false, LAST_CAP).unwrap();
        assert_eq!(caps, every_cap());
    }

    #[test]
    fn privileged_gets_every_cap_regardless_of_drops() {
        let caps = resolve(&[], &strings(&["ALL"]), true, LAST_CAP).unwrap();
        assert_eq!(caps, every_cap());
    }

    #[test]
    fn unknown_names_are_refused_with_a_pointer_to_the_man_page() {
        let err = resolve(&strings(&["NET_ADMN"]), &[], false, LAST_CAP).unwrap_err();
        assert_eq!(err, CapsError::Unknown("NET_ADMN".to_string()));
        assert_eq!(
            err.to_string(),
            "unknown capability NET_ADMN: see capabilities(7) for valid names"
        );
        // `CAP_ALL` is not the `ALL` keyword, as in Docker.
        assert!(resolve(&[], &strings(&["CAP_ALL"]), false, LAST_CAP).is_err());
        // Validated even when privileged.
        assert!(resolve(&strings(&["bogus"]), &[], true, LAST_CAP).is_err());
    }

    #[test]
    fn caps_newer_than_the_kernel_are_refused() {
        let err = resolve(&strings(&["perfmon"]), &[], false, 37).unwrap_err();
        assert_eq!(
            err,
            CapsError::NotInKernel {
                name: "CAP_PERFMON".to_string(),
                last_cap: 37
            }
        );
    }

    #[test]
    fn the_running_kernel_knows_at_least_the_default_set() {
        let caps = effective_caps(&strings(&["ALL"]), &[], false).unwrap();
        for cap in DEFAULT_CAPS {
            assert!(caps.contains(&cap.to_string()), "{cap} missing");
        }
        // CAP_AUDIT_READ (37) is in every kernel berth supports (5.11+).
        assert!(kernel_last_cap() >= 37);
    }
}
