//! Paths taken from a hostile image never resolve on the host (issue 16, item 2): an image's
//! symlinks (`/v -> /abs/host/dir`, `/h -> ../../../..`, `/etc -> /abs/host/etc`) mean the
//! image's own root when berth fills a new volume or looks up `-u NAME`, so a file in the
//! user's 0700 directory is never copied into a volume nor read as the image's /etc/passwd,
//! and berth's /dev links are made in the image's tree, not in a host directory.
//! Run through the real binary as the unprivileged test user, against a canary directory of
//! that user.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::image::{archive_with_layer, Entry};
use common::{describe, stdout, Berth};

const HOSTILE: &str = "localhost/berth-hostile:latest";
const CANARY: &str = "CANARY-host-secret-7f3a";
/// A passwd line only the host's canary file has.
const CANARY_PASSWD: &str = "canary:x:4242:4242:canary:/:/bin/sh\n";
/// The passwd the image itself keeps behind its /etc symlink.
const IMAGE_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";

/// The canary: `DIR/secret/canary` and `DIR/etc/passwd`, in a 0700 directory of the user
/// berth runs as, and a hostile image whose symlinks point there from the host's view.
struct Attack {
    berth: Berth,
    dir: PathBuf,
}

impl Attack {
    fn new() -> Option<Attack> {
        Attack::with(Berth::options())
    }

    fn with(options: common::Options) -> Option<Attack> {
        let berth = options.start()?;
        let dir = berth.base.join("canary");
        for d in [
            dir.clone(),
            dir.join("secret"),
            dir.join("etc"),
            dir.join("dev"),
        ] {
            fs::create_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        }
        fs::write(dir.join("secret/canary"), CANARY).expect("writing the canary");
        fs::write(dir.join("etc/passwd"), CANARY_PASSWD).expect("writing the canary passwd");
        fs::write(dir.join("etc/group"), "canary:x:4242:\n").expect("writing the canary group");
        give_tree(&dir, &berth);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod canary");

        // The image: /v points at the canary directory by its host path, /h climbs to the
        // host's / from wherever the layer is unpacked, and /etc is moved under the canary
        // path, so it is a working /etc inside the container.
        let rel = dir.strip_prefix("/").expect("absolute").to_string_lossy();
        let mut entries = Vec::new();
        let mut prefix = PathBuf::new();
        let parts: Vec<String> = Path::new(&*rel)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mut dirs = Vec::new();
        for p in &parts {
            prefix.push(p);
            dirs.push(prefix.to_string_lossy().into_owned());
        }
        dirs.push(format!("{rel}/etc"));
        dirs.push(format!("{rel}/dev"));
        let passwd_path = format!("{rel}/etc/passwd");
        let group_path = format!("{rel}/etc/group");
        let up = "../".repeat(24);
        let dir_str = dir.to_string_lossy().into_owned();
        let etc_target = format!("{dir_str}/etc");
        entries.extend(dirs.iter().map(|d| Entry::Dir(d)));
        entries.push(Entry::File(&passwd_path, IMAGE_PASSWD.as_bytes()));
        entries.push(Entry::File(&group_path, b"root:x:0:\nuser:x:1000:\n"));
        entries.push(Entry::Symlink("v", &dir_str));
        entries.push(Entry::Symlink("h", up.trim_end_matches('/')));
        entries.push(Entry::Symlink("etc", &etc_target));
        let dev_target = format!("{dir_str}/dev");
        entries.push(Entry::Symlink("dev", &dev_target));
        let archive = archive_with_layer(HOSTILE, &entries).expect("building the hostile image");
        let path = berth.base.join("hostile.tar");
        fs::write(&path, archive).expect("writing the hostile image");
        give(&path, &berth);
        berth.load(&path);
        Some(Attack { berth, dir })
    }

    /// The canary's host path seen through `/h` (`../../..` to the host's /).
    fn via_h(&self, rest: &str) -> String {
        format!("/h{}/{rest}", self.dir.display())
    }

    /// The canary is as it was, and nothing was made in the host's `DIR/dev` (the image's /dev
    /// points there: berth's /dev links belong in the image's tree).
    fn assert_untouched(&self) {
        let made: Vec<_> = fs::read_dir(self.dir.join("dev"))
            .expect("reading the canary's dev")
            .map(|e| e.expect("dev entry").file_name())
            .collect();
        assert!(
            made.is_empty(),
            "berth wrote into the host's {}/dev: {made:?}",
            self.dir.display()
        );
        assert_eq!(
            fs::read_to_string(self.dir.join("secret/canary")).expect("the canary is still there"),
            CANARY
        );
    }
}

fn give(path: &Path, berth: &Berth) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(berth.identity.uid)),
        Some(nix::unistd::Gid::from_raw(berth.identity.gid)),
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn give_tree(dir: &Path, berth: &Berth) {
    give(dir, berth);
    for entry in fs::read_dir(dir).expect("reading the canary directory") {
        let p = entry.expect("canary entry").path();
        if p.is_dir() {
            give_tree(&p, berth);
        } else {
            give(&p, berth);
        }
    }
}

/// Runs `ls -A` and `cat canary` on the volume at `target` in a new container; a volume filled
/// from the host shows the canary.
fn volume_listing(attack: &Attack, volume: &str, target: &str) -> String {
    let spec = if volume.is_empty() {
        target.to_string()
    } else {
        format!("{volume}:{target}")
    };
    let script = format!("ls -A {target}; cat {target}/canary 2>/dev/null; true");
    let args = ["run", "--rm", "-v", &spec, HOSTILE, "sh", "-c", &script];
    let out = attack.berth.cmd(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    stdout(&out)
}

#[test]
fn a_new_named_volume_is_not_filled_through_an_absolute_image_symlink() {
    let Some(attack) = Attack::new() else { return };
    let seen = volume_listing(&attack, "stolen", "/v/secret");
    assert!(
        !seen.contains(CANARY) && !seen.contains("canary"),
        "the volume was filled from the host's {}/secret:\n{seen}",
        attack.dir.display()
    );
    assert_eq!(
        seen, "",
        "the image has nothing at /v/secret (its root's view)"
    );
    attack.assert_untouched();
}

#[test]
fn a_new_named_volume_is_not_filled_through_a_relative_image_symlink() {
    let Some(attack) = Attack::new() else { return };
    let target = attack.via_h("secret");
    let seen = volume_listing(&attack, "climbed", &target);
    assert!(
        !seen.contains(CANARY) && !seen.contains("canary"),
        "the volume was filled from the host through /h -> ../..:\n{seen}"
    );
    assert_eq!(seen, "");
    attack.assert_untouched();
}

#[test]
fn an_anonymous_volume_is_not_filled_from_the_host() {
    let Some(attack) = Attack::new() else { return };
    let seen = volume_listing(&attack, "", "/v/secret");
    assert!(
        !seen.contains(CANARY) && !seen.contains("canary"),
        "the anonymous volume was filled from the host:\n{seen}"
    );
    let target = attack.via_h("secret");
    let seen = volume_listing(&attack, "", &target);
    assert!(
        !seen.contains(CANARY) && !seen.contains("canary"),
        "the anonymous volume was filled from the host through /h:\n{seen}"
    );
    attack.assert_untouched();
}

#[test]
fn user_lookup_reads_the_images_passwd_not_the_hosts() {
    let Some(attack) = Attack::new() else { return };
    // The host's canary passwd has `canary`; the image's /etc (a symlink to the same path,
    // inside the image) does not.
    let args = ["run", "--rm", "-u", "canary", HOSTILE, "id", "-u"];
    let out = attack.berth.cmd(&args);
    assert!(
        !stdout(&out).contains("4242"),
        "-u canary was resolved through the host's {}/etc/passwd:\n{}",
        attack.dir.display(),
        describe(&args, &out)
    );
    assert!(
        !out.status.success(),
        "the image has no user canary: {}",
        describe(&args, &out)
    );
    // The image's own /etc, behind the same symlink, still resolves names.
    let args = ["run", "--rm", "-u", "user", HOSTILE, "id", "-u"];
    let out = attack.berth.cmd(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    assert_eq!(stdout(&out), "1000\n", "the image's /etc/passwd names user");
    attack.assert_untouched();
}

#[test]
fn commit_compares_the_containers_files_with_the_image_not_the_host() {
    // The copy driver's commit compares the container's tree with the image's layers: a
    // container that replaces /v (-> the canary directory) with a directory holding a copy of
    // the canary must get that file into the image, not have it compared with the host's file
    // through the layer's symlink and dropped as "unchanged" (an oracle for host files).
    let Some(attack) = Attack::with(Berth::options().env("BERTH_STORAGE_DRIVER", "copy")) else {
        return;
    };
    let script = format!("rm /v && mkdir -p /v/secret && printf %s {CANARY} > /v/secret/canary");
    attack
        .berth
        .run_ok(&["run", "--name", "guess", HOSTILE, "sh", "-c", &script]);
    attack
        .berth
        .run_ok(&["commit", "guess", "localhost/guessed:1"]);
    let args = [
        "run",
        "--rm",
        "localhost/guessed:1",
        "cat",
        "/v/secret/canary",
    ];
    let out = attack.berth.cmd(&args);
    assert!(
        out.status.success() && stdout(&out) == CANARY,
        "the committed image lost the container's /v/secret/canary (compared with the host's): {}",
        describe(&args, &out)
    );
    attack.berth.run_ok(&["rm", "guess"]);
    attack.assert_untouched();
}
