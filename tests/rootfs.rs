//! The container's root filesystem: layers with whiteouts and opaque
//! directories under each rootfs driver, ownership through the id mapping.

mod common;

use common::{describe, lines, Berth, IMAGE};

/// What the two test layers must look like once stacked.
fn assert_layers_applied(berth: &Berth) {
    let out = berth.container_ok(&[
        IMAGE,
        "sh",
        "-c",
        "ls -A /data; echo --; ls -A /data/dir; echo --; cat /data/added",
    ]);
    assert_eq!(
        lines(&out),
        ["added", "dir", "--", "new-b", "--", "added by layer 2"],
        "whiteouts:\n{out}"
    );
    assert!(
        !out.contains(".wh."),
        "whiteout files must not be visible:\n{out}"
    );
}

fn with_driver(driver: &str) -> Option<Berth> {
    Berth::options()
        .global_arg("--storage-driver")
        .global_arg(driver)
        .start()
}

fn assert_driver(berth: &Berth, driver: &str) {
    let info = berth.run_ok(&["info"]);
    assert!(
        info.contains(&format!("Rootfs driver: {driver}")),
        "berth info:\n{info}"
    );
}

#[test]
fn whiteouts_and_opaque_dirs_default_driver() {
    let Some(berth) = Berth::new() else { return };
    assert_layers_applied(&berth);
}

#[test]
fn whiteouts_and_opaque_dirs_overlay() {
    let Some(berth) = with_driver("overlay") else {
        return;
    };
    assert_driver(&berth, "overlay");
    assert_layers_applied(&berth);
}

#[test]
fn whiteouts_and_opaque_dirs_fuse_overlayfs() {
    let Some(berth) = with_driver("fuse-overlayfs") else {
        return;
    };
    assert_driver(&berth, "fuse-overlayfs");
    assert_layers_applied(&berth);
    let writes = berth.container_ok(&[
        IMAGE,
        "sh",
        "-c",
        "rm /data/added && echo new > /data/dir/c && ls /data/dir",
    ]);
    assert_eq!(lines(&writes), ["c", "new-b"]);
}

#[test]
fn whiteouts_and_opaque_dirs_copy() {
    let Some(berth) = with_driver("copy") else {
        return;
    };
    assert_driver(&berth, "copy");
    assert_layers_applied(&berth);
    let writes = berth.container_ok(&[
        IMAGE,
        "sh",
        "-c",
        "rm /data/added && echo new > /data/dir/c && ls /data/dir",
    ]);
    assert_eq!(lines(&writes), ["c", "new-b"]);
    assert_layers_applied(&berth); // the copy belongs to the container, not to the layers
}

#[test]
fn driver_from_the_environment() {
    let Some(berth) = Berth::options().env("BERTH_STORAGE_DRIVER", "copy").start() else {
        return;
    };
    assert_driver(&berth, "copy");
    assert_layers_applied(&berth);
}

#[test]
fn image_files_keep_their_owners_inside() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&[
        IMAGE,
        "stat",
        "-c",
        "%n %u:%g",
        "/bin/busybox",
        "/etc/passwd",
        "/etc/owned-by-1000",
        "/home/user",
    ]);
    assert_eq!(
        lines(&out),
        [
            "/bin/busybox 0:0",
            "/etc/passwd 0:0",
            "/etc/owned-by-1000 1000:1000",
            "/home/user 1000:1000"
        ],
        "ownership seen inside the container"
    );
}

#[test]
fn chown_inside_works_across_the_mapped_range() {
    let Some(berth) = Berth::new() else { return };
    let script = "touch /tmp/f && chown 1000:50 /tmp/f && stat -c %u:%g /tmp/f && \
                  chown 65534:65534 /tmp/f && stat -c %u:%g /tmp/f && \
                  chown 1000 /etc/passwd && stat -c %u /etc/passwd";
    let out = berth.container_ok(&[IMAGE, "sh", "-c", script]);
    assert_eq!(lines(&out), ["1000:50", "65534:65534", "1000"]);
}

#[test]
fn user_1000_can_write_its_own_files_only() {
    let Some(berth) = Berth::new() else { return };
    berth.container_ok(&[
        "-u",
        "user",
        IMAGE,
        "sh",
        "-c",
        "echo mine > /home/user/f && echo again >> /etc/owned-by-1000",
    ]);
    let args = [
        "run",
        "--rm",
        "-u",
        "user",
        IMAGE,
        "sh",
        "-c",
        "echo no > /etc/passwd",
    ];
    let out = berth.cmd(&args);
    assert_ne!(
        common::code(&out),
        0,
        "user 1000 wrote root's /etc/passwd: {}",
        describe(&args, &out)
    );
}
