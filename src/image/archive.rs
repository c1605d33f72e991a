//! `berth load`: import a `docker save`, `podman save` or OCI (`skopeo copy ...
//! oci-archive:`) tarball into the image store.
//!
//! The archive is hostile until proven otherwise. It is first extracted into a
//! private directory under the store's `tmp/`: only regular files and
//! directories are created there, links are kept in a table and resolved by
//! path arithmetic, and no entry may climb above the archive's root. Then
//! every blob an image needs is hashed and checked against its digest (and,
//! for Docker layers, its uncompressed diff_id) *before* anything moves into
//! the store, so a bad archive leaves the store as it was.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::compression::Compression;
use super::reference::{self, Reference};
use super::store::{
    is_sha256_hex, read_limited, unique_name, HashingReader, ImageError, ImageRecord, ImageStore,
    LoadedImage, RemoveOnDrop,
};
use super::unpack::normalize;

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;
/// How many links a path may pass through inside the archive.
const MAX_LINK_HOPS: usize = 40;

/// Loads every image in the archive at `tar_path`; `name` names its only image.
pub(crate) fn load(
    store: &ImageStore,
    tar_path: &Path,
    name: Option<Reference>,
) -> Result<Vec<LoadedImage>, ImageError> {
    let work = store.tmp_dir().join(unique_name("load"));
    fs::create_dir(&work).map_err(ImageError::io("create directory", &work))?;
    let _cleanup = RemoveOnDrop(Some(work.clone()));
    let tree = Extracted::extract(tar_path, &work.join("x"))?;

    let mut staged = Staged::default();
    let mut images = if tree.resolve("oci-layout").is_some() && tree.resolve("index.json").is_some()
    {
        load_oci(&tree, &mut staged)?
    } else if tree.resolve("manifest.json").is_some() {
        load_docker(&tree, &mut staged)?
    } else {
        return Err(ImageError::NotAnArchive {
            path: tar_path.to_path_buf(),
            reason: "it has neither `oci-layout` + `index.json` nor `manifest.json`".into(),
        });
    };
    if images.is_empty() {
        return Err(ImageError::NotAnArchive {
            path: tar_path.to_path_buf(),
            reason: "it lists no image".into(),
        });
    }
    if let Some(name) = name {
        if images.len() != 1 {
            return Err(ImageError::Invalid(format!(
                "the archive holds {} images, so one name cannot be given to it; load it without a name",
                images.len()
            )));
        }
        add_name(&mut images[0].names, &name);
    }

    // Everything is verified: move the blobs in, then publish the images.
    staged.commit(store)?;
    let loaded = images
        .iter()
        .map(|r| LoadedImage {
            id: r.id.clone(),
            names: r
                .names
                .iter()
                .filter_map(|n| reference::parse(n).ok())
                .map(|r| r.familiar())
                .collect(),
        })
        .collect();
    store.add_images(images)?;
    Ok(loaded)
}

/// Verified content waiting to move into the store, by hex digest.
#[derive(Default)]
struct Staged {
    blobs: BTreeMap<String, StagedBlob>,
    /// Files already hashed: hex digest and size by real path.
    hashed: HashMap<PathBuf, (String, u64)>,
}

enum StagedBlob {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Staged {
    fn add_file(&mut self, hex: &str, path: PathBuf) {
        self.blobs
            .entry(hex.to_string())
            .or_insert(StagedBlob::File(path));
    }

    fn commit(self, store: &ImageStore) -> Result<(), ImageError> {
        for (hex, blob) in self.blobs {
            match blob {
                StagedBlob::File(path) => store.commit_verified_file(&path, &hex)?,
                StagedBlob::Bytes(bytes) => {
                    store.write_blob(&bytes[..], &format!("sha256:{hex}"))?;
                }
            }
        }
        super::store::sync_dir(&store.blob_dir())
    }

    /// Hashes `path` once (sha256 hex and size).
    fn hash(&mut self, path: &Path) -> Result<(String, u64), ImageError> {
        if let Some(known) = self.hashed.get(path) {
            return Ok(known.clone());
        }
        let file = File::open(path).map_err(ImageError::io("read", path))?;
        let mut reader = HashingReader::new(file);
        io::copy(&mut reader, &mut io::sink()).map_err(ImageError::io("read", path))?;
        let size = reader.count();
        let digest = reader.digest();
        let hex = digest.trim_start_matches("sha256:").to_string();
        self.hashed.insert(path.to_path_buf(), (hex.clone(), size));
        Ok((hex, size))
    }
}

/// An archive unpacked into a private directory: files and directories on
/// disk, links as a table (never created, so nothing can point outside).
struct Extracted {
    root: PathBuf,
    links: HashMap<PathBuf, Link>,
}

enum Link {
    /// Target as stored, relative to the link's directory or absolute (from the archive root).
    Symbolic(PathBuf),
    /// Target path from the archive root, already normalised.
    Hard(PathBuf),
}

impl Extracted {
    fn extract(tar_path: &Path, root: &Path) -> Result<Extracted, ImageError> {
        fs::create_dir(root).map_err(ImageError::io("create directory", root))?;
        let file = File::open(tar_path).map_err(ImageError::io("open archive", tar_path))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let read_err = ImageError::io("read archive", tar_path);
        let entries = archive.entries().map_err(read_err)?;
        let mut links = HashMap::new();
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io("read archive", tar_path))?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let Some(rel) = normalize(Path::new(OsStr::from_bytes(&raw))) else {
                return Err(hostile(&shown, "its path climbs above the archive root"));
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory => {
                    let dir = root.join(&rel);
                    fs::create_dir_all(&dir)
                        .map_err(|_| hostile(&shown, "it conflicts with a file"))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    links.remove(&rel);
                    let path = root.join(&rel);
                    if let Some(parent) = path.parent() {
                        fs::create_dir_all(parent)
                            .map_err(|_| hostile(&shown, "a parent is not a directory"))?;
                    }
                    if path.is_dir() {
                        return Err(hostile(&shown, "it replaces a directory"));
                    }
                    let mut out = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o644)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&path)
                        .map_err(ImageError::io("extract", &path))?;
                    io::copy(&mut entry, &mut out)
                        .map_err(ImageError::io("extract archive entry to", &path))?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let Some(target) = entry.link_name_bytes() else {
                        return Err(hostile(&shown, "the link has no target"));
                    };
                    let target = PathBuf::from(OsStr::from_bytes(&target));
                    let link = if kind == tar::EntryType::Symlink {
                        Link::Symbolic(target)
                    } else {
                        match normalize(&target) {
                            Some(t) => Link::Hard(t),
                            None => {
                                return Err(hostile(
                                    &shown,
                                    "its link target climbs above the archive root",
                                ))
                            }
                        }
                    };
                    links.insert(rel, link);
                }
                // Device nodes, fifos and the like have no place in an image archive.
                _ => {}
            }
        }
        Ok(Extracted {
            root: root.to_path_buf(),
            links,
        })
    }

    /// The real path of the regular file at `archive_path`, following the
    /// archive's links inside the archive only.
    fn resolve(&self, archive_path: &str) -> Option<PathBuf> {
        let mut path = normalize(Path::new(archive_path))?;
        let mut hops = 0;
        'follow: loop {
            let comps: Vec<_> = path.components().collect();
            for i in 1..=comps.len() {
                let prefix: PathBuf = comps[..i].iter().collect();
                if let Some(link) = self.links.get(&prefix) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return None;
                    }
                    let rest: PathBuf = comps[i..].iter().collect();
                    let base = match link {
                        Link::Symbolic(t) => prefix.parent().unwrap_or(Path::new("")).join(t),
                        Link::Hard(t) => t.clone(),
                    };
                    path = normalize_lenient(&base.join(rest));
                    continue 'follow;
                }
            }
            break;
        }
        let full = self.root.join(&path);
        fs::symlink_metadata(&full).ok()?.is_file().then_some(full)
    }

    fn read_json<T: DeserializeOwned>(
        &self,
        archive_path: &str,
        what: &str,
    ) -> Result<T, ImageError> {
        let path = self
            .resolve(archive_path)
            .ok_or_else(|| ImageError::MissingBlob {
                what: what.into(),
                digest: archive_path.into(),
            })?;
        parse_json(&path, what)
    }
}

fn parse_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, ImageError> {
    let file = File::open(path).map_err(ImageError::io("read", path))?;
    let bytes = read_limited(file, path)?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::MalformedJson {
        what: what.into(),
        source,
    })
}

fn hostile(entry: &str, reason: &str) -> ImageError {
    ImageError::HostileEntry {
        entry: entry.into(),
        reason: reason.into(),
    }
}

/// Lexical normalisation where `..` at the root stays at the root, as in a chroot.
fn normalize_lenient(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------- OCI layout

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: String,
}

pub(crate) enum Kind {
    Manifest,
    Index,
    Other,
}

pub(crate) fn kind_of(media_type: &MediaType) -> Kind {
    match media_type {
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageIndex => Kind::Index,
        MediaType::Other(m) if m == DOCKER_MANIFEST => Kind::Manifest,
        MediaType::Other(m) if m == DOCKER_MANIFEST_LIST => Kind::Index,
        _ => Kind::Other,
    }
}

fn load_oci(tree: &Extracted, staged: &mut Staged) -> Result<Vec<ImageRecord>, ImageError> {
    let layout: OciLayout = tree.read_json("oci-layout", "oci-layout")?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(ImageError::Invalid(format!(
            "OCI layout version {} is not supported (berth reads 1.x)",
            layout.image_layout_version
        )));
    }
    let index: ImageIndex = tree.read_json("index.json", "index.json")?;
    let mut images: Vec<ImageRecord> = Vec::new();
    for desc in index.manifests() {
        let names = names_from_annotations(desc);
        let manifest = match kind_of(desc.media_type()) {
            Kind::Manifest => desc.clone(),
            Kind::Index => pick_from_index(tree, staged, desc, 1)?,
            // Attestations, signatures and other artifacts are not images.
            Kind::Other => continue,
        };
        let record = import_oci_manifest(tree, staged, &manifest, names)?;
        merge_record(&mut images, record);
    }
    Ok(images)
}

fn merge_record(images: &mut Vec<ImageRecord>, record: ImageRecord) {
    match images.iter_mut().find(|r| r.id == record.id) {
        Some(existing) => {
            for n in record.names {
                if !existing.names.contains(&n) {
                    existing.names.push(n);
                }
            }
        }
        None => images.push(record),
    }
}

/// Canonical names from a top-level descriptor's annotations. A bare
/// `ref.name` like `latest` names no repository, so it gives no name.
fn names_from_annotations(desc: &Descriptor) -> Vec<String> {
    let mut names = Vec::new();
    let Some(ann) = desc.annotations() else {
        return names;
    };
    let candidates = [
        ann.get(ANNOTATION_CONTAINERD_NAME),
        ann.get(ANNOTATION_REF_NAME)
            .filter(|n| n.contains(['/', ':'])),
    ];
    for name in candidates.into_iter().flatten() {
        if let Ok(r) = reference::parse(name) {
            add_name(&mut names, &r);
        }
    }
    names
}

fn add_name(names: &mut Vec<String>, r: &Reference) {
    if r.tag.is_none() {
        return;
    }
    let canonical = Reference {
        digest: None,
        ..r.clone()
    }
    .to_string();
    if !names.contains(&canonical) {
        names.push(canonical);
    }
}

/// The platform this machine runs, in OCI terms.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}

/// Follows an image index down to the manifest for this machine.
fn pick_from_index(
    tree: &Extracted,
    staged: &mut Staged,
    desc: &Descriptor,
    depth: usize,
) -> Result<Descriptor, ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::Invalid("image indexes nest too deeply".into()));
    }
    let path = verify_blob(tree, staged, desc, "image index")?;
    let index: ImageIndex = parse_json(&path, &format!("image index {}", desc.digest()))?;
    let (os, arch) = host_platform();
    let mut available = Vec::new();
    let mut chosen = None;
    for m in index.manifests() {
        let Some(p) = m.platform() else {
            continue;
        };
        let (m_os, m_arch) = (p.os().to_string(), p.architecture().to_string());
        let variant = p.variant().clone();
        available.push(match &variant {
            Some(v) => format!("{m_os}/{m_arch}/{v}"),
            None => format!("{m_os}/{m_arch}"),
        });
        let variant_ok = arch != "arm64" || matches!(variant.as_deref(), None | Some("v8"));
        if chosen.is_none() && m_os == os && m_arch == arch && variant_ok {
            chosen = Some(m.clone());
        }
    }
    if chosen.is_none() {
        // An index without platforms: take its only image.
        let images: Vec<_> = index
            .manifests()
            .iter()
            .filter(|m| !matches!(kind_of(m.media_type()), Kind::Other))
            .collect();
        if images.len() == 1 && images[0].platform().is_none() {
            chosen = Some(images[0].clone());
        }
    }
    let Some(chosen) = chosen else {
        return Err(ImageError::NoMatchingPlatform {
            wanted: format!("{os}/{arch}"),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        });
    };
    match kind_of(chosen.media_type()) {
        Kind::Manifest => Ok(chosen),
        Kind::Index => pick_from_index(tree, staged, &chosen, depth + 1),
        Kind::Other => Err(ImageError::UnsupportedMediaType {
            what: format!("index entry {}", chosen.digest()),
            media_type: chosen.media_type().to_string(),
        }),
    }
}

/// Checks that the blob a descriptor names is in the archive with the right
/// size and digest, stages it, and returns its extracted path.
fn verify_blob(
    tree: &Extracted,
    staged: &mut Staged,
    desc: &Descriptor,
    what: &str,
) -> Result<PathBuf, ImageError> {
    let digest = desc.digest().to_string();
    let what = format!("{what} {digest}");
    let hex = match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => hex,
        _ => {
            return Err(ImageError::Invalid(format!(
                "{what} does not use a sha256 digest, which berth requires"
            )))
        }
    };
    let path = tree
        .resolve(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| ImageError::MissingBlob {
            what: what.clone(),
            digest: digest.clone(),
        })?;
    let (actual, size) = staged.hash(&path)?;
    if size != desc.size() {
        return Err(ImageError::SizeMismatch {
            what,
            expected: desc.size(),
            actual: size,
        });
    }
    if actual != hex {
        return Err(ImageError::DigestMismatch {
            what,
            expected: digest,
            actual: format!("sha256:{actual}"),
        });
    }
    staged.add_file(hex, path.clone());
    Ok(path)
}

fn import_oci_manifest(
    tree: &Extracted,
    staged: &mut Staged,
    desc: &Descriptor,
    names: Vec<String>,
) -> Result<ImageRecord, ImageError> {
    let path = verify_blob(tree, staged, desc, "manifest")?;
    let manifest: ImageManifest = parse_json(&path, &format!("manifest {}", desc.digest()))?;
    let config_desc = manifest.config();
    if !supported_config(config_desc.media_type()) {
        return Err(ImageError::UnsupportedMediaType {
            what: format!("config of manifest {}", desc.digest()),
            media_type: config_desc.media_type().to_string(),
        });
    }
    let config_path = verify_blob(tree, staged, config_desc, "config")?;
    let config: ImageConfiguration =
        parse_json(&config_path, &format!("config {}", config_desc.digest()))?;
    check_diff_ids(&config, manifest.layers().len())?;
    let mut size = config_desc.size();
    for layer in manifest.layers() {
        if !supported_layer(layer.media_type()) {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("layer {}", layer.digest()),
                media_type: layer.media_type().to_string(),
            });
        }
        verify_blob(tree, staged, layer, "layer")?;
        size += layer.size();
    }
    Ok(ImageRecord {
        id: config_desc.digest().to_string(),
        manifest_digest: desc.digest().to_string(),
        names,
        created: config.created().clone(),
        size,
        layers_size: None,
    })
}

/// Layer media types berth can unpack (OCI and Docker, plain, gzip or zstd).
pub(crate) fn supported_layer(media_type: &MediaType) -> bool {
    matches!(
        media_type,
        MediaType::ImageLayer
            | MediaType::ImageLayerGzip
            | MediaType::ImageLayerZstd
            | MediaType::ImageLayerNonDistributable
            | MediaType::ImageLayerNonDistributableGzip
            | MediaType::ImageLayerNonDistributableZstd
    ) || matches!(media_type, MediaType::Other(m) if DOCKER_LAYERS.contains(&m.as_str()))
}

/// Image config media types (OCI and Docker).
pub(crate) fn supported_config(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageConfig)
        || matches!(media_type, MediaType::Other(m) if m == DOCKER_CONFIG)
}

pub(crate) fn check_diff_ids(config: &ImageConfiguration, layers: usize) -> Result<(), ImageError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers {
        return Err(ImageError::Invalid(format!(
            "the image config lists {} layer diff_ids but the image has {} layers",
            diff_ids.len(),
            layers
        )));
    }
    if let Some(bad) = diff_ids
        .iter()
        .find(|d| !d.strip_prefix("sha256:").is_some_and(is_sha256_hex))
    {
        return Err(ImageError::Invalid(format!(
            "the image config has diff_id \"{bad}\", which is not a sha256 digest"
        )));
    }
    Ok(())
}

// ------------------------------------------------------------ docker-archive

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn load_docker(tree: &Extracted, staged: &mut Staged) -> Result<Vec<ImageRecord>, ImageError> {
    let entries: Vec<DockerManifestEntry> = tree.read_json("manifest.json", "manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let record = import_docker_image(tree, staged, &entry)?;
        merge_record(&mut images, record);
    }
    Ok(images)
}

/// The digest a docker-archive path claims, if its file name is one
/// (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar`).
fn claimed_hex(archive_path: &str) -> Option<&str> {
    let name = archive_path.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    is_sha256_hex(stem).then_some(stem)
}

fn import_docker_image(
    tree: &Extracted,
    staged: &mut Staged,
    entry: &DockerManifestEntry,
) -> Result<ImageRecord, ImageError> {
    let config_path = tree
        .resolve(&entry.config)
        .ok_or_else(|| ImageError::MissingBlob {
            what: "config".into(),
            digest: entry.config.clone(),
        })?;
    let (config_hex, config_size) = staged.hash(&config_path)?;
    if let Some(claimed) = claimed_hex(&entry.config) {
        if claimed != config_hex {
            return Err(ImageError::DigestMismatch {
                what: format!("config {}", entry.config),
                expected: format!("sha256:{claimed}"),
                actual: format!("sha256:{config_hex}"),
            });
        }
    }
    let config: ImageConfiguration = parse_json(&config_path, &format!("config {}", entry.config))?;
    check_diff_ids(&config, entry.layers.len())?;
    staged.add_file(&config_hex, config_path);

    let mut layer_descs = Vec::with_capacity(entry.layers.len());
    let mut size = config_size;
    for (i, (layer, diff_id)) in entry
        .layers
        .iter()
        .zip(config.rootfs().diff_ids())
        .enumerate()
    {
        let what = format!("layer {} ({layer})", i + 1);
        let path = tree.resolve(layer).ok_or_else(|| ImageError::MissingBlob {
            what: format!("layer {}", i + 1),
            digest: layer.clone(),
        })?;
        let (hex, blob_size, compression, actual_diff_id) = hash_layer(&path)?;
        if let Some(claimed) = claimed_hex(layer) {
            if claimed != hex {
                return Err(ImageError::DigestMismatch {
                    what,
                    expected: format!("sha256:{claimed}"),
                    actual: format!("sha256:{hex}"),
                });
            }
        }
        if &actual_diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed {what}"),
                expected: diff_id.clone(),
                actual: actual_diff_id,
            });
        }
        staged.add_file(&hex, path);
        let media_type = match compression {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        };
        layer_descs.push(Descriptor::new(media_type, blob_size, oci_digest(&hex)?));
        size += blob_size;
    }

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            oci_digest(&config_hex)?,
        ))
        .layers(layer_descs)
        .build()
        .map_err(|e| ImageError::Invalid(format!("cannot build an OCI manifest: {e}")))?;
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Invalid(format!("cannot encode an OCI manifest: {e}")))?;
    let mut hashing = HashingReader::new(&bytes[..]);
    io::copy(&mut hashing, &mut io::sink())
        .map_err(ImageError::io("hash manifest", Path::new("-")))?;
    let manifest_digest = hashing.digest();
    staged.blobs.insert(
        manifest_digest.trim_start_matches("sha256:").to_string(),
        StagedBlob::Bytes(bytes),
    );

    let mut names = Vec::new();
    for tag in entry.repo_tags.iter().flatten() {
        add_name(&mut names, &reference::parse(tag)?);
    }
    Ok(ImageRecord {
        id: format!("sha256:{config_hex}"),
        manifest_digest,
        names,
        created: config.created().clone(),
        size,
        layers_size: None,
    })
}

fn oci_digest(hex: &str) -> Result<Digest, ImageError> {
    Digest::from_str(&format!("sha256:{hex}"))
        .map_err(|e| ImageError::Invalid(format!("bad digest {hex}: {e}")))
}

/// Hashes a layer blob as stored and as uncompressed tar, in one pass:
/// (blob hex, blob size, compression, `sha256:` diff_id).
fn hash_layer(path: &Path) -> Result<(String, u64, Compression, String), ImageError> {
    let file = File::open(path).map_err(ImageError::io("read", path))?;
    let mut raw = BufReader::new(HashingReader::new(file));
    let compression = Compression::sniff(&mut raw).map_err(ImageError::io("read", path))?;
    let diff_id = {
        let decoder = compression
            .decoder(&mut raw)
            .map_err(ImageError::io("decompress layer", path))?;
        let mut plain = HashingReader::new(decoder);
        io::copy(&mut plain, &mut io::sink()).map_err(ImageError::io("decompress layer", path))?;
        plain.digest()
    };
    // Trailing bytes after the compressed stream still belong to the blob.
    io::copy(&mut raw, &mut io::sink()).map_err(ImageError::io("read", path))?;
    let raw = raw.into_inner();
    let size = raw.count();
    let hex = raw.digest().trim_start_matches("sha256:").to_string();
    Ok((hex, size, compression, diff_id))
}

#[cfg(test)]
mod tests;
