//! `berth --help`, `berth info` and `berth doctor` through the real binary.

mod common;

use common::{describe, stdout, Berth};

#[test]
fn help_lists_the_commands() {
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let out = berth.run_ok(&["--help"]);
    for command in ["run", "load", "images", "info", "doctor"] {
        assert!(
            out.contains(command),
            "`berth --help` does not mention {command}:\n{out}"
        );
    }
}

#[test]
fn info_names_the_rootfs_driver() {
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let out = berth.run_ok(&["info"]);
    let driver = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rootfs driver:"))
        .unwrap_or_else(|| panic!("`berth info` has no `Rootfs driver:` line:\n{out}"))
        .trim()
        .to_string();
    assert!(
        ["overlay", "fuse-overlayfs", "copy"].contains(&driver.as_str()),
        "unknown driver {driver:?}"
    );
    // Kernel 5.11+ allows overlayfs in a user namespace: the fastest driver must win there.
    if kernel_at_least(5, 11) {
        assert_eq!(
            driver, "overlay",
            "kernel overlayfs works here but berth picked {driver}:\n{out}"
        );
    }
}

#[test]
fn storage_driver_can_be_forced_by_option_and_env() {
    for driver in ["overlay", "fuse-overlayfs", "copy"] {
        let Some(by_flag) = Berth::options()
            .no_image()
            .global_arg("--storage-driver")
            .global_arg(driver)
            .start()
        else {
            return;
        };
        let out = by_flag.run_ok(&["info"]);
        assert!(
            out.contains(&format!("Rootfs driver: {driver}")),
            "--storage-driver {driver}:\n{out}"
        );
        drop(by_flag);

        let Some(by_env) = Berth::options()
            .no_image()
            .env("BERTH_STORAGE_DRIVER", driver)
            .start()
        else {
            return;
        };
        let out = by_env.run_ok(&["info"]);
        assert!(
            out.contains(&format!("Rootfs driver: {driver}")),
            "BERTH_STORAGE_DRIVER={driver}:\n{out}"
        );
    }
}

#[test]
fn doctor_passes_on_a_prepared_host_and_names_each_check() {
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let args = ["doctor"];
    let out = berth.cmd(&args);
    assert!(
        out.status.success(),
        "berth doctor failed on a host set up by scripts/setup-host:\n{}",
        describe(&args, &out)
    );
    // Checks may go to stdout or stderr; what matters is that each is named.
    let text = format!("{}{}", stdout(&out), common::stderr(&out)).to_lowercase();
    for check in [
        "newuidmap",
        "newgidmap",
        "subuid",
        "subgid",
        "user namespace",
        "overlay",
        "fuse",
        "kvm",
    ] {
        assert!(
            text.contains(check),
            "`berth doctor` says nothing about {check}:\n{text}"
        );
    }
    assert!(
        text.contains("slirp4netns") || text.contains("pasta"),
        "`berth doctor` does not check networking helpers:\n{text}"
    );
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
