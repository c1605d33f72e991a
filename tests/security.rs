//! The walls inside the container: capabilities, no_new_privs, seccomp,
//! masked and read-only paths, --privileged.

mod common;

use std::fs;

use common::{cap_mask, code, describe, status_field, stderr, Berth, IMAGE};

/// Docker's default capability set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
/// SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
/// AUDIT_WRITE SETFCAP.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

fn default_caps() -> Vec<u32> {
    let mask = u64::from_str_radix(DOCKER_DEFAULT_CAPS, 16).unwrap_or_default();
    (0..64).filter(|c| mask & (1 << c) != 0).collect()
}

/// The container's view of /proc/self/status.
fn status(berth: &Berth, flags: &[&str]) -> String {
    let mut args = flags.to_vec();
    args.extend_from_slice(&[IMAGE, "cat", "/proc/self/status"]);
    berth.container_ok(&args)
}

fn field(status: &str, key: &str) -> String {
    status_field(status, key).unwrap_or_else(|| panic!("no {key} in /proc/self/status:\n{status}"))
}

#[test]
fn root_gets_dockers_default_capabilities() {
    let Some(berth) = Berth::new() else { return };
    let status = status(&berth, &[]);
    assert_eq!(field(&status, "CapEff"), DOCKER_DEFAULT_CAPS);
    assert_eq!(
        field(&status, "CapBnd"),
        DOCKER_DEFAULT_CAPS,
        "the bounding set is the default set too"
    );
}

#[test]
fn a_non_root_user_has_no_effective_capabilities() {
    let Some(berth) = Berth::new() else { return };
    let status = status(&berth, &["-u", "user"]);
    assert_eq!(field(&status, "CapEff"), "0000000000000000");
}

#[test]
fn cap_add_and_cap_drop() {
    let Some(berth) = Berth::new() else { return };
    let mut caps = default_caps();
    caps.retain(|c| *c != CAP_CHOWN);
    let dropped = status(&berth, &["--cap-drop", "CHOWN"]);
    assert_eq!(field(&dropped, "CapEff"), cap_mask(&caps));

    caps.push(CAP_NET_ADMIN);
    let both = status(
        &berth,
        &["--cap-drop", "chown", "--cap-add", "CAP_NET_ADMIN"],
    );
    assert_eq!(
        field(&both, "CapEff"),
        cap_mask(&caps),
        "names are case-insensitive, CAP_ prefix optional"
    );

    let none = status(&berth, &["--cap-drop", "ALL"]);
    assert_eq!(field(&none, "CapEff"), "0000000000000000");
    let only = status(&berth, &["--cap-drop", "ALL", "--cap-add", "SYS_ADMIN"]);
    assert_eq!(field(&only, "CapEff"), cap_mask(&[CAP_SYS_ADMIN]));
}

#[test]
fn dropping_chown_makes_chown_fail() {
    let Some(berth) = Berth::new() else { return };
    let script = "touch /tmp/f && chown 1000 /tmp/f";
    berth.container_ok(&[IMAGE, "sh", "-c", script]);
    let args = [
        "run",
        "--rm",
        "--cap-drop",
        "CHOWN",
        IMAGE,
        "sh",
        "-c",
        script,
    ];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn no_new_privileges_and_seccomp_are_on_by_default() {
    let Some(berth) = Berth::new() else { return };
    let status = status(&berth, &[]);
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(
        field(&status, "Seccomp"),
        "2",
        "a seccomp filter is installed"
    );
    let unconfined = self::status(&berth, &["--security-opt", "seccomp=unconfined"]);
    assert_eq!(field(&unconfined, "Seccomp"), "0");
}

/// Docker's profile refuses new user namespaces (unshare/clone with
/// CLONE_NEWUSER) to a container without CAP_SYS_ADMIN.
#[test]
fn default_seccomp_profile_blocks_unshare() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", IMAGE, "unshare", "-U", "true"];
    let out = berth.cmd(&args);
    assert_ne!(
        code(&out),
        0,
        "unshare -U must fail under the default profile: {}",
        describe(&args, &out)
    );
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        describe(&args, &out)
    );

    berth.container_ok(&[
        "--security-opt",
        "seccomp=unconfined",
        IMAGE,
        "unshare",
        "-U",
        "true",
    ]);
}

/// mount(2) needs CAP_SYS_ADMIN (the profile allows it only then).
#[test]
fn mount_needs_cap_sys_admin() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", IMAGE, "mount", "-t", "tmpfs", "none", "/mnt"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).to_lowercase().contains("permission denied")
            || stderr(&out).contains("not permitted"),
        "{}",
        describe(&args, &out)
    );

    let script = "mount -t tmpfs none /mnt && grep ' /mnt ' /proc/mounts";
    let out = berth.container_ok(&["--cap-add", "SYS_ADMIN", IMAGE, "sh", "-c", script]);
    assert!(out.contains("tmpfs"), "{out}");
}

#[test]
fn masked_paths_are_empty_or_unreadable() {
    let Some(berth) = Berth::new() else { return };
    for path in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        // Absent when the kernel lacks it (no CONFIG_PROC_KCORE): nothing to mask.
        let script = format!("test -e {path} || {{ echo 0; exit 0; }}; wc -c < {path}");
        let args = ["run", "--rm", IMAGE, "sh", "-c", &script];
        let out = berth.cmd(&args);
        let text = common::stdout(&out);
        assert!(
            code(&out) != 0 || text.trim() == "0",
            "{path} is not masked: {}",
            describe(&args, &out)
        );
    }
    let firmware =
        berth.container_ok(&[IMAGE, "sh", "-c", "ls -A /sys/firmware 2>/dev/null | wc -l"]);
    assert_eq!(firmware.trim(), "0", "/sys/firmware is masked");
}

#[test]
fn proc_sys_and_sys_are_read_only() {
    let Some(berth) = Berth::new() else { return };
    let mounts = berth.container_ok(&[IMAGE, "cat", "/proc/mounts"]);
    for target in ["/proc/sys", "/proc/sysrq-trigger", "/sys"] {
        // Kernels built without a feature (here: no sysrq) have nothing to protect.
        if !std::path::Path::new(target).exists() {
            continue;
        }
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("{target} is not a mount of its own:\n{mounts}"));
        let options = line.split(' ').nth(3).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{target} is not read-only: {line}"
        );
    }
    let args = [
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/domainname",
    ];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
}

#[test]
fn privileged_gets_every_capability_and_no_filter() {
    let Some(berth) = Berth::new() else { return };
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let all: Vec<u32> = (0..=last).collect();
    let status = status(&berth, &["--privileged"]);
    assert_eq!(field(&status, "CapEff"), cap_mask(&all));
    assert_eq!(field(&status, "Seccomp"), "0");
    // Masking binds /dev/null over /proc/keys; --privileged leaves the real file.
    let masked = berth.container(&[IMAGE, "test", "-c", "/proc/keys"]);
    assert_eq!(code(&masked), 0, "/proc/keys is masked by default");
    let keys = berth.container(&["--privileged", IMAGE, "test", "-c", "/proc/keys"]);
    assert_ne!(code(&keys), 0, "--privileged unmasks /proc/keys");
}

#[test]
fn minimal_dev() {
    let Some(berth) = Berth::new() else { return };
    let script = "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done; \
                  test -d /dev/pts && test -d /dev/shm && test -d /dev/mqueue || echo missing dirs; \
                  for l in stdin stdout stderr fd; do test -L /dev/$l || echo missing $l; done; \
                  head -c 4 /dev/zero | wc -c; echo x > /dev/null; ls /dev | wc -l";
    let out = berth.container_ok(&[IMAGE, "sh", "-c", script]);
    let rows = common::lines(&out);
    assert!(!out.contains("missing"), "{out}");
    assert_eq!(rows[0], "4", "{out}");
    let entries: usize = rows[1].parse().unwrap_or(usize::MAX);
    assert!(entries < 25, "/dev is minimal, not the host's:\n{out}");
}
