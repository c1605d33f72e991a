use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::image::testutil::{get_xattr, gzip, sha256, zstd, TarWriter};

/// Writes `stored` as a layer blob whose diff_id is that of `plain`.
fn layer(dir: &Path, stored: &[u8], plain: &[u8]) -> LayerRef {
    let blob_path = dir.join(format!("blob-{}", &sha256(stored)[7..19]));
    fs::write(&blob_path, stored).unwrap();
    LayerRef {
        diff_id: sha256(plain),
        blob_path,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: stored.len() as u64,
    }
}

struct Case {
    _tmp: tempfile::TempDir,
    /// The directory that holds dest; nothing may appear here but `dest` and blobs.
    outside: PathBuf,
    dest: PathBuf,
}

fn case() -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let dest = outside.join("a/b/dest");
    fs::create_dir_all(&dest).unwrap();
    Case {
        outside,
        dest,
        _tmp: tmp,
    }
}

fn unpack(c: &Case, tar: &[u8]) -> Result<UnpackReport, UnpackError> {
    let l = layer(&c.outside, tar, tar);
    unpack_layer(&l, &c.dest)
}

/// Everything under `outside` that is not `dest`, its parents, or a blob.
fn strays(c: &Case) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![c.outside.clone()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.starts_with(&c.dest) {
                continue;
            }
            if c.dest.starts_with(&path) {
                stack.push(path);
                continue;
            }
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("blob-")
            {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn applies_files_dirs_links_and_metadata() {
    let c = case();
    let tar = TarWriter::new()
        .dir("bin/", 0o755)
        .file("bin/su", b"#!setuid", 0o4755)
        .file("bin/sh", b"shell", 0o755)
        .symlink("bin/ash", "sh")
        .symlink("abs", "/bin/sh")
        .hardlink("bin/sh2", "bin/sh")
        .fifo("run.fifo", 0o620)
        .char_device("null", 1, 3)
        .pax(&[
            ("SCHILY.xattr.user.note", b"hi"),
            ("SCHILY.xattr.user.overlay.redirect", b"/x"),
            ("mtime", b"1700000000.5"),
        ])
        .file("noted", b"n", 0o600)
        .dir("ro/", 0o555)
        .file("ro/child", b"c", 0o444)
        .file("deep/er/file", b"d", 0o644)
        .finish();
    let report = unpack(&c, &tar).unwrap();
    assert_eq!(report.entries, 12);
    let d = &c.dest;
    let su = fs::metadata(d.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(fs::read_link(d.join("bin/ash")).unwrap(), Path::new("sh"));
    assert_eq!(fs::read_link(d.join("abs")).unwrap(), Path::new("/bin/sh"));
    assert_eq!(
        fs::metadata(d.join("bin/sh2")).unwrap().ino(),
        fs::metadata(d.join("bin/sh")).unwrap().ino()
    );
    assert!(fs::symlink_metadata(d.join("run.fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::symlink_metadata(d.join("run.fifo")).unwrap().mode() & 0o7777,
        0o620
    );
    let null = fs::symlink_metadata(d.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(!is_whiteout(&null));
    assert_eq!(
        get_xattr(&d.join("noted"), "user.note").as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(get_xattr(&d.join("noted"), "user.overlay.redirect"), None);
    let noted = fs::metadata(d.join("noted")).unwrap();
    assert_eq!(
        (noted.mtime(), noted.mtime_nsec()),
        (1_700_000_000, 500_000_000)
    );
    assert!(report
        .skipped
        .iter()
        .any(|s| s.contains("user.overlay.redirect")));
    assert_eq!(
        fs::metadata(d.join("ro")).unwrap().permissions().mode() & 0o777,
        0o555
    );
    assert_eq!(fs::read(d.join("ro/child")).unwrap(), b"c");
    assert_eq!(
        fs::metadata(d.join("deep/er"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(strays(&c).is_empty());
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let c = case();
    let tar = TarWriter::new()
        .file("etc/gone", b"x", 0o644)
        .dir("etc/gonedir/", 0o755)
        .file("etc/gonedir/f", b"x", 0o644)
        .file("etc/.wh.gone", b"", 0o644)
        .file("etc/.wh.gonedir", b"", 0o644)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("opq/kept", b"k", 0o644)
        .finish();
    unpack(&c, &tar).unwrap();
    for name in ["etc/gone", "etc/gonedir"] {
        let m = fs::symlink_metadata(c.dest.join(name)).unwrap();
        assert!(is_whiteout(&m), "{name} is not a whiteout");
    }
    assert!(!c.dest.join("etc/.wh.gone").exists());
    assert_eq!(
        get_xattr(&c.dest.join("opq"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!c.dest.join("opq/.wh..wh..opq").exists());
    assert_eq!(fs::read(c.dest.join("opq/kept")).unwrap(), b"k");
    assert!(!is_whiteout(
        &fs::metadata(c.dest.join("opq/kept")).unwrap()
    ));
}

#[test]
fn replaces_existing_entries() {
    let c = case();
    let tar = TarWriter::new()
        .file("a", b"file", 0o644)
        .dir("a/", 0o700)
        .file("a/x", b"x", 0o644)
        .dir("b/", 0o755)
        .file("b/y", b"y", 0o644)
        .file("b", b"now a file", 0o600)
        .symlink("c", "/etc")
        .file("c", b"not a link", 0o644)
        .finish();
    unpack(&c, &tar).unwrap();
    assert_eq!(
        fs::metadata(c.dest.join("a")).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(fs::read(c.dest.join("a/x")).unwrap(), b"x");
    assert_eq!(fs::read(c.dest.join("b")).unwrap(), b"now a file");
    assert_eq!(fs::read(c.dest.join("c")).unwrap(), b"not a link");
    assert!(strays(&c).is_empty());
}

#[test]
fn dotdot_entry_is_refused() {
    let c = case();
    let tar = TarWriter::new()
        .file("../../etc/x", b"pwned", 0o644)
        .finish();
    let err = unpack(&c, &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
    assert!(strays(&c).is_empty(), "{:?}", strays(&c));
    let tar = TarWriter::new()
        .file("ok/../../x", b"pwned", 0o644)
        .finish();
    assert!(matches!(unpack(&c, &tar), Err(UnpackError::Hostile { .. })));
    let tar = TarWriter::new().file("../.wh.x", b"", 0o644).finish();
    assert!(matches!(unpack(&c, &tar), Err(UnpackError::Hostile { .. })));
    assert!(strays(&c).is_empty(), "{:?}", strays(&c));
}

#[test]
fn absolute_paths_become_relative() {
    let c = case();
    let tar = TarWriter::new().file("/abs/file", b"in", 0o644).finish();
    unpack(&c, &tar).unwrap();
    assert_eq!(fs::read(c.dest.join("abs/file")).unwrap(), b"in");
}

#[test]
fn symlinked_parents_stay_inside() {
    let c = case();
    let outside_file = c.outside.join("a/target");
    let tar = TarWriter::new()
        .symlink("evil", "/")
        .file("evil/etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)
        .symlink("up", "../../../../..")
        .file("up/a/target", b"contained", 0o644)
        .symlink("rel", "sub/../../..")
        .file("rel/x", b"x", 0o644)
        .symlink("evil2", "/")
        .file("evil2/.wh.passwd", b"", 0o644)
        .finish();
    unpack(&c, &tar).unwrap();
    assert_eq!(fs::read(c.dest.join("a/target")).unwrap(), b"contained");
    assert!(is_whiteout(
        &fs::symlink_metadata(c.dest.join("passwd")).unwrap()
    ));
    assert_eq!(
        fs::read(c.dest.join("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    assert_eq!(fs::read(c.dest.join("x")).unwrap(), b"x");
    assert!(!outside_file.exists());
    assert!(strays(&c).is_empty(), "{:?}", strays(&c));
    // The host's /etc/passwd was not touched.
    assert_ne!(fs::read("/etc/passwd").unwrap(), b"root::0:0::/:/bin/sh\n");
}

#[test]
fn symlink_loops_are_refused() {
    let c = case();
    let tar = TarWriter::new()
        .symlink("l1", "l2")
        .symlink("l2", "l1")
        .file("l1/x", b"x", 0o644)
        .finish();
    let err = unpack(&c, &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
}

#[test]
fn hardlinks_must_stay_inside() {
    let c = case();
    fs::write(c.outside.join("secret"), b"s").unwrap();
    let tar = TarWriter::new()
        .hardlink("h", "../../outside/secret")
        .finish();
    let err = unpack(&c, &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
    // Through a symlink to the host's /etc: resolved inside dest, where it does not exist.
    let tar = TarWriter::new()
        .symlink("hostetc", "/etc")
        .hardlink("h", "hostetc/passwd")
        .finish();
    let err = unpack(&c, &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
    assert!(!c.dest.join("h").exists());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), 1);
    // Through a symlink that points inside: fine.
    let tar = TarWriter::new()
        .file("real/f", b"f", 0o644)
        .symlink("via", "/real")
        .hardlink("h2", "via/f")
        .finish();
    unpack(&c, &tar).unwrap();
    assert_eq!(fs::read(c.dest.join("h2")).unwrap(), b"f");
}

#[test]
fn compressed_layers_and_diff_id() {
    let c = case();
    let plain = TarWriter::new().file("f", b"data", 0o644).finish();
    for stored in [gzip(&plain), zstd(&plain)] {
        let l = layer(&c.outside, &stored, &plain);
        unpack_layer(&l, &c.dest).unwrap();
        assert_eq!(fs::read(c.dest.join("f")).unwrap(), b"data");
    }
    let mut l = layer(&c.outside, &plain, &plain);
    l.diff_id = sha256(b"other");
    let err = unpack_layer(&l, &c.dest).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    // A truncated stream is a read error, not a partial success.
    let gz = gzip(&plain);
    let l = layer(&c.outside, &gz[..gz.len() / 2], &plain);
    assert!(unpack_layer(&l, &c.dest).is_err());
}

#[test]
fn pax_times() {
    let t = parse_pax_time("1700000000.25").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 250_000_000));
    let t = parse_pax_time("-1.5").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 500_000_000));
    assert_eq!(parse_pax_time("12").unwrap().tv_sec(), 12);
    assert!(parse_pax_time("x").is_none());
    assert!(parse_pax_time("1.x").is_none());
}
