//! Test images built from the host's static busybox, written as the archives
//! `berth load` reads: an oci-archive and a docker-archive.
//!
//! Two layers, so that the second can delete from the first:
//!   layer 1: /bin/busybox with a symlink per applet, /etc/passwd and
//!            /etc/group, /etc/owned-by-1000 (1000:1000), /data/remove-me,
//!            /data/dir/keep-a;
//!   layer 2: a whiteout for /data/remove-me, an opaque /data/dir holding only
//!            new-b, and /data/added.
//! The layers are deterministic (fixed mtimes), so every test process writes
//! the same bytes and the image ids are stable.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The plain test image: `Cmd ["sh"]`, `Env` with PATH and IMAGE_VAR.
pub const IMAGE: &str = "localhost/berth-test:latest";
/// The same image (same config, same id) as written to the docker-archive.
pub const DOCKER_IMAGE: &str = "localhost/berth-test-docker:latest";
/// A variant with Entrypoint, Cmd, WorkingDir, User and ExposedPorts (8080/tcp, 5353/udp) set.
pub const CONFIG_IMAGE: &str = "localhost/berth-test-config:latest";

/// The config image's entrypoint prints its arguments, user and directory.
pub const CONFIG_ENTRYPOINT: &[&str] = &[
    "/bin/sh",
    "-c",
    "echo \"args:$*\"; echo \"user:$(id -un)\"; echo \"cwd:$(pwd)\"",
    "entrypoint",
];

const BUSYBOX: &str = "/bin/busybox";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// 2023-11-14T22:13:20Z: any fixed time keeps the layers reproducible.
const MTIME: u64 = 1_700_000_000;

/// Where the archives of this test process are.
pub struct TestImages {
    /// oci-archive of [`IMAGE`] (layer 1 gzip, layer 2 uncompressed).
    pub oci: PathBuf,
    /// docker-archive of [`DOCKER_IMAGE`].
    pub docker: PathBuf,
    /// oci-archive of [`CONFIG_IMAGE`].
    pub config_oci: PathBuf,
    /// The image id (`sha256:` + config digest) of [`IMAGE`] and [`DOCKER_IMAGE`].
    pub id: String,
}

/// Builds the archives once per test process, in a directory every user can read.
pub fn test_images() -> &'static TestImages {
    static IMAGES: OnceLock<TestImages> = OnceLock::new();
    IMAGES.get_or_init(|| build().unwrap_or_else(|e| panic!("cannot build the test images: {e}")))
}

/// The directory the archives are written to (readable by the test user).
pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-test-images")
}

fn build() -> Result<TestImages, String> {
    let busybox = fs::read(BUSYBOX)
        .map_err(|e| format!("{BUSYBOX}: {e}; install busybox-static (scripts/setup-host does)"))?;
    if is_dynamic(&busybox) {
        return Err(format!(
            "{BUSYBOX} is dynamically linked and cannot run in a bare image; \
             install busybox-static (scripts/setup-host does)"
        ));
    }
    let applets = applets()?;

    let layer1 = base_layer(&busybox, &applets)?;
    let layer2 = whiteout_layer()?;
    let diff_ids = [sha256(&layer1), sha256(&layer2)];
    let layer1_gz = gzip(&layer1)?;

    let plain = config(
        &diff_ids,
        json!({ "Env": [PATH_ENV, "IMAGE_VAR=from-image"], "Cmd": ["sh"] }),
    );
    let configured = config(
        &diff_ids,
        json!({
            "Env": [PATH_ENV, "IMAGE_VAR=from-image"],
            "Entrypoint": CONFIG_ENTRYPOINT,
            "Cmd": ["default-cmd"],
            "WorkingDir": "/data",
            "User": "user",
            "ExposedPorts": { "8080/tcp": {}, "5353/udp": {} },
        }),
    );

    let dir = images_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", dir.display()))?;

    let layers = [
        Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", layer1_gz),
        Blob::new("application/vnd.oci.image.layer.v1.tar", layer2.clone()),
    ];
    let oci = dir.join("test-oci.tar");
    write_atomically(&oci, &oci_archive(IMAGE, &plain, &layers)?)?;
    let config_oci = dir.join("config-oci.tar");
    write_atomically(
        &config_oci,
        &oci_archive(CONFIG_IMAGE, &configured, &layers)?,
    )?;
    let docker = dir.join("test-docker.tar");
    write_atomically(
        &docker,
        &docker_archive(
            DOCKER_IMAGE,
            &plain,
            &[(&diff_ids[0], &layer1), (&diff_ids[1], &layer2)],
        )?,
    )?;

    Ok(TestImages {
        oci,
        docker,
        config_oci,
        id: format!("sha256:{}", sha256(&plain)),
    })
}

/// One entry of an extra layer for [`archive_with_layer`].
pub enum Entry<'a> {
    /// A directory, 0755 root's (or `tmp`-like 01777 when the name ends in `tmp`).
    Dir(&'a str),
    /// A directory only uid 1000 may enter (0700), which the host user cannot.
    Private(&'a str),
    /// A regular file, 0644 root's.
    File(&'a str, &'a [u8]),
    /// A symbolic link and its target, written as given.
    Symlink(&'a str, &'a str),
}

/// An oci-archive of `name`: [`IMAGE`]'s two layers and config with a third layer of
/// `entries` on top (a hostile image, for example).
pub fn archive_with_layer(name: &str, entries: &[Entry]) -> Result<Vec<u8>, String> {
    let busybox = fs::read(BUSYBOX).map_err(|e| format!("{BUSYBOX}: {e}"))?;
    let layer1 = base_layer(&busybox, &applets()?)?;
    let layer2 = whiteout_layer()?;
    let mut layer3 = Layer::new();
    for entry in entries {
        match entry {
            Entry::Dir(p) if p.ends_with("tmp") => layer3.dir(p, 0o1777, 0, 0)?,
            Entry::Dir(p) => layer3.dir(p, 0o755, 0, 0)?,
            Entry::Private(p) => layer3.dir(p, 0o700, 1000, 1000)?,
            Entry::File(p, data) => layer3.file(p, 0o644, 0, 0, data)?,
            Entry::Symlink(p, target) => layer3.symlink(p, target)?,
        }
    }
    let layer3 = layer3.finish()?;
    let diff_ids = [sha256(&layer1), sha256(&layer2), sha256(&layer3)];
    let config = config(&diff_ids, json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }));
    let layers = [
        Blob::new("application/vnd.oci.image.layer.v1.tar", layer1),
        Blob::new("application/vnd.oci.image.layer.v1.tar", layer2),
        Blob::new("application/vnd.oci.image.layer.v1.tar", layer3),
    ];
    oci_archive(name, &config, &layers)
}

/// A static binary has no PT_INTERP; its path sits near the start of the file.
fn is_dynamic(elf: &[u8]) -> bool {
    let head = &elf[..elf.len().min(4096)];
    head.windows(8).any(|w| w == b"/lib64/l") || head.windows(7).any(|w| w == b"/lib/ld")
}

fn applets() -> Result<Vec<String>, String> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| format!("{BUSYBOX} --list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{BUSYBOX} --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect())
}

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

const GROUP: &str = "\
root:x:0:
audio:x:29:user
staff:x:50:
user:x:1000:
nogroup:x:65534:
";

fn base_layer(busybox: &[u8], applets: &[String]) -> Result<Vec<u8>, String> {
    let mut layer = Layer::new();
    for dir in [
        "bin", "dev", "etc", "home", "mnt", "proc", "sys", "usr", "var", "data", "data/dir",
    ] {
        layer.dir(dir, 0o755, 0, 0)?;
    }
    layer.dir("root", 0o700, 0, 0)?;
    layer.dir("tmp", 0o1777, 0, 0)?;
    layer.dir("var/tmp", 0o1777, 0, 0)?;
    layer.dir("home/user", 0o755, 1000, 1000)?;
    layer.file("bin/busybox", 0o755, 0, 0, busybox)?;
    for applet in applets {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    layer.file("etc/passwd", 0o644, 0, 0, PASSWD.as_bytes())?;
    layer.file("etc/group", 0o644, 0, 0, GROUP.as_bytes())?;
    layer.file("etc/owned-by-1000", 0o644, 1000, 1000, b"owned by user\n")?;
    layer.file("data/remove-me", 0o644, 0, 0, b"layer 2 deletes this\n")?;
    layer.file(
        "data/dir/keep-a",
        0o644,
        0,
        0,
        b"hidden by layer 2's opaque dir\n",
    )?;
    layer.finish()
}

fn whiteout_layer() -> Result<Vec<u8>, String> {
    let mut layer = Layer::new();
    layer.dir("data", 0o755, 0, 0)?;
    layer.file("data/.wh.remove-me", 0o644, 0, 0, b"")?;
    layer.dir("data/dir", 0o755, 0, 0)?;
    layer.file("data/dir/.wh..wh..opq", 0o644, 0, 0, b"")?;
    layer.file("data/dir/new-b", 0o644, 0, 0, b"new-b\n")?;
    layer.file("data/added", 0o644, 0, 0, b"added by layer 2\n")?;
    layer.finish()
}

fn config(diff_ids: &[String], container_config: Value) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let history: Vec<Value> = ["busybox", "whiteouts", "extra layer"]
        .iter()
        .take(diff_ids.len())
        .map(|what| {
            json!({
                "created": "2023-11-14T22:13:20Z",
                "created_by": format!("berth tests: {what}"),
            })
        })
        .collect();
    let config = json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": arch,
        "os": "linux",
        "config": container_config,
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>(),
        },
        "history": history,
    });
    serde_json::to_vec(&config).expect("serialising a JSON value cannot fail")
}

struct Blob {
    media_type: &'static str,
    data: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        let digest = sha256(&data);
        Blob {
            media_type,
            data,
            digest,
        }
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": format!("sha256:{}", self.digest),
            "size": self.data.len(),
        })
    }
}

/// An OCI image layout in a tar, as `skopeo copy ... oci-archive:` writes it.
fn oci_archive(name: &str, config: &[u8], layers: &[Blob]) -> Result<Vec<u8>, String> {
    let config = Blob::new("application/vnd.oci.image.config.v1+json", config.to_vec());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest).expect("serialising a JSON value cannot fail"),
    );
    let mut descriptor = manifest.descriptor();
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": name });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    });

    let mut archive = Layer::new();
    archive.file(
        "oci-layout",
        0o644,
        0,
        0,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    archive.file(
        "index.json",
        0o644,
        0,
        0,
        &serde_json::to_vec(&index).unwrap_or_default(),
    )?;
    archive.dir("blobs", 0o755, 0, 0)?;
    archive.dir("blobs/sha256", 0o755, 0, 0)?;
    for blob in layers.iter().chain([&config, &manifest]) {
        archive.file(
            &format!("blobs/sha256/{}", blob.digest),
            0o644,
            0,
            0,
            &blob.data,
        )?;
    }
    archive.finish()
}

/// A `docker save` archive: manifest.json with RepoTags, config, layer.tar per layer.
fn docker_archive(
    name: &str,
    config: &[u8],
    layers: &[(&String, &Vec<u8>)],
) -> Result<Vec<u8>, String> {
    let config_name = format!("{}.json", sha256(config));
    let layer_names: Vec<String> = layers
        .iter()
        .map(|(id, _)| format!("{id}/layer.tar"))
        .collect();
    let manifest = json!([{ "Config": config_name, "RepoTags": [name], "Layers": layer_names }]);
    let (repo, tag) = name.rsplit_once(':').expect("test image names have a tag");
    let top = layers.last().map(|(id, _)| id.as_str()).unwrap_or_default();
    let repositories = json!({ repo: { tag: top } });

    let mut archive = Layer::new();
    for ((id, data), path) in layers.iter().zip(&layer_names) {
        archive.dir(id, 0o755, 0, 0)?;
        archive.file(&format!("{id}/VERSION"), 0o644, 0, 0, b"1.0")?;
        archive.file(path, 0o644, 0, 0, data)?;
    }
    archive.file(&config_name, 0o644, 0, 0, config)?;
    archive.file(
        "manifest.json",
        0o644,
        0,
        0,
        &serde_json::to_vec(&manifest).unwrap_or_default(),
    )?;
    archive.file(
        "repositories",
        0o644,
        0,
        0,
        &serde_json::to_vec(&repositories).unwrap_or_default(),
    )?;
    archive.finish()
}

/// A tar stream with explicit owners, modes and a fixed mtime.
struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(
        path: &str,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
    ) -> Result<Header, String> {
        let mut header = Header::new_ustar();
        header
            .set_path(path)
            .map_err(|e| format!("tar path {path}: {e}"))?;
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(MTIME);
        header.set_size(size);
        Ok(header)
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<(), String> {
        let mut header = Self::header(path, EntryType::Directory, mode, uid, gid, 0)?;
        header.set_cksum();
        self.tar
            .append(&header, std::io::empty())
            .map_err(|e| format!("tar {path}: {e}"))
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> Result<(), String> {
        let mut header = Self::header(path, EntryType::Regular, mode, uid, gid, data.len() as u64)?;
        header.set_cksum();
        self.tar
            .append(&header, data)
            .map_err(|e| format!("tar {path}: {e}"))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), String> {
        let mut header = Self::header(path, EntryType::Symlink, 0o777, 0, 0, 0)?;
        header
            .set_link_name(target)
            .map_err(|e| format!("tar link {path}: {e}"))?;
        header.set_cksum();
        self.tar
            .append(&header, std::io::empty())
            .map_err(|e| format!("tar {path}: {e}"))
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        self.tar
            .into_inner()
            .map_err(|e| format!("finishing tar: {e}"))
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).map_err(|e| format!("gzip: {e}"))?;
    encoder.finish().map_err(|e| format!("gzip: {e}"))
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Readers in other test processes never see a half-written archive.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
