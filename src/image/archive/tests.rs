use std::fs;
use std::path::Path;

use super::*;
use crate::image::testutil::{
    config_json, gzip, hex_of, layer_one, layer_two, oci_image, sha256, zstd, ArchiveFiles,
    TarWriter,
};
use crate::image::{unpack_layer, ImageStore, OPAQUE_XATTR};

fn store_in(dir: &Path) -> ImageStore {
    ImageStore::open(&dir.join("data")).unwrap()
}

/// Every blob file in the store (temporaries included).
fn blob_files(store: &ImageStore) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(store.blob_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The store is as it was before a failed load: no blob, no image, no scratch.
fn assert_untouched(store: &ImageStore) {
    assert!(blob_files(store).is_empty(), "{:?}", blob_files(store));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn oci_archive_load_list_resolve_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one(), layer_two()];
    let stored: Vec<_> = plain.iter().map(|l| gzip(l)).collect();
    let (files, config_digest) = oci_image(&stored, &plain, Some("localhost:5000/test:1"));
    let tar = dir.path().join("img.tar");
    files.write(&tar);

    let loaded = store.load_archive(&tar).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, config_digest);
    assert_eq!(loaded[0].names, vec!["localhost:5000/test:1".to_string()]);

    let rows = store.list().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].repository, "localhost:5000/test");
    assert_eq!(rows[0].tag, "1");
    assert_eq!(rows[0].id, config_digest);
    assert_eq!(rows[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));
    // SIZE is Docker's: the layers uncompressed, not the gzip blobs stored.
    assert_eq!(
        rows[0].size,
        plain.iter().map(|l| l.len() as u64).sum::<u64>()
    );

    let by_name = store.resolve("localhost:5000/test:1").unwrap();
    assert_eq!(by_name.name, "localhost:5000/test:1");
    let short = &config_digest[7..19];
    let by_id = store.resolve(short).unwrap();
    assert_eq!(by_id.id, config_digest);
    assert_eq!(store.resolve(&config_digest).unwrap().id, config_digest);
    assert!(matches!(
        store.resolve("test:2"),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(by_name.layers.len(), 2);
    assert_eq!(by_name.layers[0].diff_id, sha256(&plain[0]));
    assert_eq!(
        by_name
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap()[0],
        "/bin/sh"
    );

    // Loading again deduplicates: same blobs, same single image.
    let before = blob_files(&store);
    store.load_archive(&tar).unwrap();
    assert_eq!(blob_files(&store), before);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);

    // Both layers apply; the second carries a whiteout and an opaque dir.
    let l1 = dir.path().join("l1");
    let l2 = dir.path().join("l2");
    fs::create_dir(&l1).unwrap();
    fs::create_dir(&l2).unwrap();
    unpack_layer(&by_name.layers[0], &l1).unwrap();
    unpack_layer(&by_name.layers[1], &l2).unwrap();
    assert_eq!(fs::read(l1.join("etc/hostname")).unwrap(), b"berth\n");
    assert!(crate::image::is_whiteout(
        &fs::symlink_metadata(l2.join("etc/gone")).unwrap()
    ));
    assert_eq!(
        crate::image::testutil::get_xattr(&l2.join("opq"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn oci_bare_tag_is_untagged_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one()];
    let (files, id) = oci_image(&plain, &plain, Some("latest"));
    let tar = dir.path().join("img.tar");
    files.write(&tar);
    let loaded = store.load_archive(&tar).unwrap();
    assert!(loaded[0].names.is_empty());
    let rows = store.list().unwrap();
    assert_eq!(
        (rows[0].repository.as_str(), rows[0].tag.as_str()),
        ("<none>", "<none>")
    );
    assert_eq!(store.resolve(&id[7..15]).unwrap().name, id);

    let loaded = store.load_archive_as(&tar, "myimage").unwrap();
    assert_eq!(loaded[0].names, vec!["myimage:latest".to_string()]);
    assert_eq!(store.resolve("myimage").unwrap().id, id);
    assert_eq!(
        store
            .resolve("docker.io/library/myimage:latest")
            .unwrap()
            .id,
        id
    );
}

#[test]
fn nested_index_picks_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one()];
    let (mut files, id) = oci_image(&plain, &plain, None);
    let index: serde_json::Value = serde_json::from_slice(&files.0["index.json"]).unwrap();
    let mut host = index["manifests"][0].clone();
    let (os, arch) = host_platform();
    host["platform"] = serde_json::json!({"os": os, "architecture": arch});
    let other_arch = if arch == "amd64" { "s390x" } else { "amd64" };
    // The other platform's manifest is not in the archive, as with a partial save.
    let other = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(b"not here"),
        "size": 8,
        "platform": {"os": "linux", "architecture": other_arch},
    });
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [other, host],
    }))
    .unwrap();
    let nested_digest = files.blob(&nested);
    files.0.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest,
            "size": nested.len(),
            "annotations": {"io.containerd.image.name": "docker.io/library/multi:2", "org.opencontainers.image.ref.name": "2"},
        }]}))
        .unwrap(),
    );
    let tar = dir.path().join("img.tar");
    files.write(&tar);
    let loaded = store.load_archive(&tar).unwrap();
    assert_eq!(loaded[0].id, id);
    assert_eq!(loaded[0].names, vec!["multi:2".to_string()]);

    // Without a variant for this machine the error says which ones exist.
    let mut files2 = ArchiveFiles(files.0.clone());
    let only_other = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(b"x"), "size": 1,
            "platform": {"os": "linux", "architecture": other_arch}}],
    }))
    .unwrap();
    let d = files2.blob(&only_other);
    files2.0.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": only_other.len()}]}))
        .unwrap(),
    );
    let store2 = ImageStore::open(&dir.path().join("data2")).unwrap();
    files2.write(&tar);
    let err = store2.load_archive(&tar).unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(other_arch));
    assert_untouched(&store2);
}

/// A docker-archive in the legacy layout: `<id>/layer.tar`, a symlinked
/// duplicate layer, `<hex>.json` config; layers plain, gzip and zstd.
fn docker_archive(corrupt_diff_id: bool) -> (ArchiveFiles, Vec<(String, String)>, String) {
    let plain = [
        layer_one(),
        layer_two(),
        TarWriter::new().file("z", b"zstd layer", 0o644).finish(),
    ];
    let mut diff_ids: Vec<String> = plain.iter().map(|p| sha256(p)).collect();
    if corrupt_diff_id {
        diff_ids[1] = sha256(b"something else");
    }
    diff_ids.push(diff_ids[0].clone());
    let config = config_json(&diff_ids);
    let config_hex = hex_of(&config);
    let mut files = ArchiveFiles::default();
    files.0.insert(format!("{config_hex}.json"), config);
    files.0.insert("aaa/layer.tar".into(), plain[0].clone());
    files.0.insert("bbb/layer.tar".into(), gzip(&plain[1]));
    files.0.insert("ccc/layer.tar".into(), zstd(&plain[2]));
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["busybox:latest", "localhost:5000/bb:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar", "ddd/layer.tar"],
    }]);
    files.0.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    let links = vec![("ddd/layer.tar".to_string(), "../aaa/layer.tar".to_string())];
    (files, links, format!("sha256:{config_hex}"))
}

fn write_with_links(files: &ArchiveFiles, links: &[(String, String)], path: &Path) {
    let mut t = TarWriter::new();
    for (name, data) in &files.0 {
        t = t.file(name, data, 0o644);
    }
    for (name, target) in links {
        t = t.symlink(name, target);
    }
    fs::write(path, t.finish()).unwrap();
}

#[test]
fn docker_archive_converts_to_oci() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (files, links, id) = docker_archive(false);
    let tar = dir.path().join("docker.tar");
    write_with_links(&files, &links, &tar);
    let loaded = store.load_archive(&tar).unwrap();
    assert_eq!(loaded[0].id, id);
    assert_eq!(
        loaded[0].names,
        vec![
            "busybox:latest".to_string(),
            "localhost:5000/bb:1".to_string()
        ]
    );
    let rows = store.list().unwrap();
    assert_eq!(rows.len(), 2);

    let img = store.resolve("busybox").unwrap();
    assert_eq!(img.name, "busybox:latest");
    let types: Vec<_> = img.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar",
        ]
    );
    assert_eq!(img.layers[0].blob_path, img.layers[3].blob_path);
    for (i, layer) in img.layers.iter().enumerate() {
        let out = dir.path().join(format!("u{i}"));
        fs::create_dir(&out).unwrap();
        unpack_layer(layer, &out).unwrap();
    }
    assert_eq!(fs::read(dir.path().join("u2/z")).unwrap(), b"zstd layer");

    // The generated manifest is a stored, valid OCI manifest.
    let index = store.read_index().unwrap();
    let manifest_path = store.blob_path(&index.images[0].manifest_digest).unwrap();
    let manifest: ImageManifest =
        serde_json::from_slice(&fs::read(manifest_path).unwrap()).unwrap();
    assert_eq!(manifest.config().digest().to_string(), id);
    assert_eq!(manifest.media_type(), &Some(MediaType::ImageManifest));
}

#[test]
fn docker_layer_with_wrong_diff_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (files, links, _) = docker_archive(true);
    let tar = dir.path().join("docker.tar");
    write_with_links(&files, &links, &tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("uncompressed layer 2"), "{err}");
    assert_untouched(&store);
}

#[test]
fn malformed_manifest_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (mut files, links, _) = docker_archive(false);
    files
        .0
        .insert("manifest.json".into(), b"[{\"Config\": 3".to_vec());
    let tar = dir.path().join("docker.tar");
    write_with_links(&files, &links, &tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::MalformedJson { .. }), "{err}");
    assert!(
        err.to_string().starts_with("manifest.json is malformed"),
        "{err}"
    );
    assert_untouched(&store);
}

#[test]
fn docker_config_digest_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (mut files, links, id) = docker_archive(false);
    let name = format!("{}.json", &id[7..]);
    let mut config = files.0[&name].clone();
    config.push(b' ');
    files.0.insert(name, config);
    let tar = dir.path().join("docker.tar");
    write_with_links(&files, &links, &tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_untouched(&store);
}

#[test]
fn oci_blob_digest_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one(), layer_two()];
    let (mut files, _) = oci_image(&plain, &plain, Some("x:1"));
    // Same size, different bytes, under the original digest.
    let key = format!("blobs/sha256/{}", hex_of(&plain[1]));
    let mut tampered = plain[1].clone();
    tampered[600] ^= 0xff;
    files.0.insert(key, tampered);
    let tar = dir.path().join("img.tar");
    files.write(&tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sha256(&plain[1])));
    assert_untouched(&store);
}

#[test]
fn oci_truncated_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one()];
    let stored = vec![gzip(&plain[0])];
    let (mut files, _) = oci_image(&stored, &plain, Some("x:1"));
    let key = format!("blobs/sha256/{}", hex_of(&stored[0]));
    files
        .0
        .insert(key, stored[0][..stored[0].len() / 2].to_vec());
    let tar = dir.path().join("img.tar");
    files.write(&tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    assert_untouched(&store);
}

#[test]
fn oci_missing_blob_and_layer_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let plain = vec![layer_one()];
    let (mut files, _) = oci_image(&plain, &plain, Some("x:1"));
    files
        .0
        .remove(&format!("blobs/sha256/{}", hex_of(&plain[0])));
    let tar = dir.path().join("img.tar");
    files.write(&tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert_untouched(&store);

    // A config whose diff_ids disagree with the manifest's layers.
    let (files, _) = oci_image(&plain, &[layer_one(), layer_two()], Some("x:1"));
    files.write(&tar);
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("2 layer diff_ids but the image has 1"),
        "{err}"
    );
    assert_untouched(&store);
}

#[test]
fn hostile_archive_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("a/b/data")).unwrap();
    let tar = dir.path().join("evil.tar");
    let plain = vec![layer_one()];
    let (files, _) = oci_image(&plain, &plain, Some("x:1"));
    let mut t = TarWriter::new();
    for (name, data) in &files.0 {
        t = t.file(name, data, 0o644);
    }
    fs::write(&tar, t.file("../../etc/x", b"pwned", 0o644).finish()).unwrap();
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::HostileEntry { .. }), "{err}");
    for walk in walk(dir.path()) {
        assert!(!walk.ends_with("etc/x"), "{walk:?} written");
    }
    assert_untouched(&store);

    // A blob that is a symlink to a host file is not found, never read.
    let mut t = TarWriter::new();
    for (name, data) in &files.0 {
        if name.ends_with(&hex_of(&plain[0])) {
            t = t.symlink(name, "/etc/passwd");
        } else {
            t = t.file(name, data, 0o644);
        }
    }
    fs::write(&tar, t.finish()).unwrap();
    let err = store.load_archive(&tar).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert_untouched(&store);

    // Not an archive at all.
    fs::write(&tar, TarWriter::new().file("hello", b"hi", 0o644).finish()).unwrap();
    assert!(matches!(
        store.load_archive(&tar),
        Err(ImageError::NotAnArchive { .. })
    ));
}

#[test]
fn archive_link_resolution_stays_inside() {
    let mut links = HashMap::new();
    links.insert(
        PathBuf::from("up"),
        Link::Symbolic(PathBuf::from("../../../..")),
    );
    links.insert(PathBuf::from("abs"), Link::Symbolic(PathBuf::from("/d")));
    links.insert(PathBuf::from("loop"), Link::Symbolic(PathBuf::from("loop")));
    links.insert(PathBuf::from("hard"), Link::Hard(PathBuf::from("d/f")));
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    fs::write(dir.path().join("d/f"), b"x").unwrap();
    let tree = Extracted {
        root: dir.path().to_path_buf(),
        links,
    };
    assert_eq!(tree.resolve("up/d/f"), Some(dir.path().join("d/f")));
    assert_eq!(tree.resolve("abs/f"), Some(dir.path().join("d/f")));
    assert_eq!(tree.resolve("hard"), Some(dir.path().join("d/f")));
    assert_eq!(tree.resolve("loop/f"), None);
    assert_eq!(tree.resolve("../d/f"), None);
    assert_eq!(tree.resolve("d"), None);
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
    }
    out
}
