//! berth run by a user without a subordinate id range: the single-id user
//! namespace (container root is the user and nothing else is mapped), the
//! warning that says so, and what does and does not work in it.
//!
//! berth runs as `berthnosub` (`scripts/setup-host` creates it with no
//! /etc/subuid or /etc/subgid entry), so the suite must run as root; a
//! developer run as an ordinary user skips these tests (CI=true fails them).

mod common;

use common::{assert_exit, code, describe, stderr, stdout, Berth, IMAGE, NOSUB_USER};

const WARNING: &str = "warning: no subordinate id range for ";

/// A fixture running berth as [`NOSUB_USER`], with [`IMAGE`] loaded.
fn nosub() -> Option<Berth> {
    let berth = Berth::options().user(NOSUB_USER).no_image().start()?;
    let id = &berth.identity;
    if id.subuids.is_some() || id.subgids.is_some() {
        common::skip(&format!(
            "{NOSUB_USER} has a subordinate id range in /etc/subuid or /etc/subgid; \
             rerun scripts/setup-host as root (it removes it)"
        ));
        return None;
    }
    berth.load(&common::test_images().oci);
    Some(berth)
}

/// Checks the single-id warning: exactly one line on stderr, for this user,
/// saying that chown fails and how to add a range.
#[track_caller]
fn assert_warning(args: &[&str], out: &std::process::Output) {
    let err = stderr(out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with(WARNING)).collect();
    assert_eq!(
        warnings.len(),
        1,
        "expected one single-id warning\n{}",
        describe(args, out)
    );
    let line = warnings[0];
    assert!(
        line.starts_with(&format!("{WARNING}{NOSUB_USER}")),
        "warning names another user: {line}"
    );
    assert!(
        line.contains("chown"),
        "warning does not mention chown: {line}"
    );
    let fix = format!("{NOSUB_USER}:100000:65536");
    for part in [fix.as_str(), "/etc/subuid", "/etc/subgid"] {
        assert!(line.contains(part), "warning lacks {part:?}: {line}");
    }
}

#[test]
fn container_root_is_the_user_and_berth_warns() {
    let Some(berth) = nosub() else { return };
    let args = ["run", "--rm", IMAGE, "id", "-u"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out).trim(), "0", "{}", describe(&args, &out));
    assert_warning(&args, &out);

    // Only the user's own id is mapped, to container root.
    let args = [
        "run",
        "--rm",
        IMAGE,
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    let maps: Vec<Vec<String>> = common::lines(&stdout(&out))
        .iter()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let want = |id: u32| vec!["0".to_string(), id.to_string(), "1".to_string()];
    assert_eq!(
        maps,
        vec![want(berth.identity.uid), want(berth.identity.gid)],
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn image_files_belong_to_container_root() {
    let Some(berth) = nosub() else { return };
    // /etc/owned-by-1000 is 1000:1000 in the image; with one id mapped the
    // unpack keeps it as the user, i.e. container root.
    let args = [
        "run",
        "--rm",
        IMAGE,
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
        "/etc/owned-by-1000",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(
        common::lines(&stdout(&out)),
        ["0:0", "0:0"],
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn chown_to_another_id_fails() {
    let Some(berth) = nosub() else { return };
    let args = [
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/f && chown 1000 /tmp/f",
    ];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "chown succeeded\n{}", describe(&args, &out));
    assert_warning(&args, &out);

    let script = "touch /tmp/f; chown 1000 /tmp/f 2>/dev/null; stat -c %u /tmp/f";
    let args = ["run", "--rm", IMAGE, "sh", "-c", script];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(
        stdout(&out).trim(),
        "0",
        "the file changed owner\n{}",
        describe(&args, &out)
    );
}

#[test]
fn user_outside_the_namespace_is_an_error() {
    let Some(berth) = nosub() else { return };
    let args = ["run", "--rm", "-u", "1000", IMAGE, "id", "-u"];
    let out = berth.cmd(&args);
    // 125: berth's own error, not the container's.
    assert_exit(&args, &out, 125);
    let err = stderr(&out);
    assert!(
        err.contains("user 1000 does not exist in this user namespace")
            && err.contains("/etc/subuid"),
        "the error does not say that user 1000 is unmapped and how to fix it\n{}",
        describe(&args, &out)
    );
    assert_eq!(stdout(&out), "", "{}", describe(&args, &out));
}

#[test]
fn exit_code_is_the_containers() {
    let Some(berth) = nosub() else { return };
    let args = ["run", "--rm", IMAGE, "sh", "-c", "exit 5"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 5);
    assert_warning(&args, &out);
}
