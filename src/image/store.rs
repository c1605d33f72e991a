//! The content-addressed image store: verified blobs plus an index of images.
//!
//! Layout under the data directory (OCI image-layout compatible blobs):
//!
//! ```text
//! blobs/sha256/<hex>   every manifest, config and layer, named by its digest
//! images.json          the images: id (config digest), manifest digest, names, size
//! images.lock          flock'd while images.json is rewritten
//! tmp/                 private scratch space of loads in progress
//! ```
//!
//! A blob only ever appears under its name after its content was hashed and
//! matched, fsync'd and renamed into place, so a crash or a hostile archive
//! never leaves wrong bytes under a digest. `images.json` is replaced
//! atomically under an exclusive lock, so concurrent `berth` processes never
//! lose each other's updates.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::reference::{self, ReferenceError};

/// Largest JSON document (manifest, index, config) berth reads into memory.
pub(crate) const MAX_JSON_BYTES: u64 = 16 << 20;

/// What went wrong in the image store or while loading an archive.
#[derive(Debug, Error)]
pub enum ImageError {
    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What berth was doing.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The reference does not follow Docker's grammar.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image has this name or id.
    #[error(
        "image {0} not known: pull it with `berth pull {0}` or load it with `berth load -i FILE`"
    )]
    NotFound(String),
    /// A short id matches more than one image.
    #[error("short id {prefix} matches {count} images: give more characters of the id")]
    Ambiguous {
        /// The id prefix given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// The archive is not in a format berth knows.
    #[error("{} is not an image archive: {reason}; create one with `docker save`, `podman save` or `skopeo copy ... oci-archive:FILE`", path.display())]
    NotAnArchive {
        /// The archive.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The archive tries to write outside its own tree, or is otherwise unsafe.
    #[error("refusing archive entry \"{entry}\": {reason}; the archive is damaged or hostile, do not use it")]
    HostileEntry {
        /// The entry's path in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A JSON document in the archive or store is malformed.
    #[error("{what} is malformed: {source}; the archive is damaged or was written by a tool berth does not support, save the image again")]
    MalformedJson {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The archive's metadata is inconsistent.
    #[error("{0}; the archive is damaged, save the image again")]
    Invalid(String),
    /// A blob the metadata refers to is not in the archive.
    #[error("the archive refers to {what} {digest} but does not contain it: the archive is incomplete, save the image again")]
    MissingBlob {
        /// What the blob is (manifest, config, layer).
        what: String,
        /// Its digest or path.
        digest: String,
    },
    /// Content does not hash to its digest.
    #[error("{what} should have digest {expected} but has {actual}: the content is corrupt or was tampered with, get the image again")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest the metadata names.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// Content has a different size than its descriptor says.
    #[error("{what} should be {expected} bytes but is {actual}: the content is truncated or corrupt, get the image again")]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Size of the content.
        actual: u64,
    },
    /// A media type berth cannot use.
    #[error("{what} has media type {media_type}, which berth does not support (encrypted or foreign content?): convert the image to a plain OCI or Docker image")]
    UnsupportedMediaType {
        /// Which descriptor.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A multi-platform image has no variant for this machine.
    #[error("the image has no variant for {wanted} (it has: {available}): save the image for this platform, e.g. `--platform {wanted}`")]
    NoMatchingPlatform {
        /// This machine's platform.
        wanted: String,
        /// The platforms in the index.
        available: String,
    },
    /// The image cannot be removed or changed as asked (Docker's "conflict").
    #[error("conflict: {0}")]
    Conflict(String),
    /// A tag or save target that is not a plain `NAME[:TAG]`.
    #[error("{0}")]
    Usage(String),
    /// The store's own index is damaged.
    #[error("image index {} is damaged: {reason}; move it away and load the images again", path.display())]
    CorruptStore {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ImageError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.to_path_buf();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}

/// An image added by [`ImageStore::load_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// Names in familiar form (`busybox:latest`).
    pub names: Vec<String>,
}

/// One row of `berth images`: one per name, or one `<none>` row for an untagged image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Familiar repository (`busybox`, `localhost:5000/x`) or `<none>`.
    pub repository: String,
    /// Tag or `<none>`.
    pub tag: String,
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// `sha256:<hex>` of the image manifest (what `--digests` shows).
    pub digest: String,
    /// The config's `created` time (RFC 3339), if it has one.
    pub created: Option<String>,
    /// Compressed layers plus config, in bytes.
    pub size: u64,
}

/// An image ready to be turned into a root file system and a runtime spec.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// The familiar name it was found by (or its first name, or its id when untagged).
    pub name: String,
    /// The image configuration (env, entrypoint, cmd, user, ...).
    pub config: ImageConfiguration,
    /// Layers, lowest first.
    pub layers: Vec<LayerRef>,
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// The (possibly compressed) layer blob in the store.
    pub blob_path: PathBuf,
    /// The layer's media type as the manifest names it.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// The content-addressed image store.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

/// The on-disk index, `images.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ImageIndexFile {
    version: u32,
    pub(crate) images: Vec<ImageRecord>,
}

/// One image in `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// `sha256:<hex>` of the config.
    pub id: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Canonical full names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// The config's `created`.
    pub created: Option<String>,
    /// Compressed layers plus config: the space the image's blobs take.
    pub size: u64,
    /// The uncompressed size of its layers (Docker's SIZE, the same whichever way the image
    /// came: pulled compressed, loaded from an uncompressed docker-archive, committed); None
    /// until measured ([`ImageStore::layers_size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_size: Option<u64>,
}

const INDEX_VERSION: u32 = 1;

impl ImageStore {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: data_dir.to_path_buf(),
        };
        for dir in [store.blob_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create directory", &dir))?;
        }
        Ok(store)
    }

    /// Loads every image of a `docker save`, `podman save` or OCI archive.
    pub fn load_archive(&self, tar_path: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        super::archive::load(self, tar_path, None)
    }

    /// Like [`ImageStore::load_archive`], and names the archive's single image `name`
    /// (for archives that carry no name, e.g. an OCI archive tagged only `latest`).
    pub fn load_archive_as(
        &self,
        tar_path: &Path,
        name: &str,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let reference = reference::parse(name)?;
        super::archive::load(self, tar_path, Some(reference))
    }

    /// One row per image name, newest image first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let mut records = self.read_index()?.images;
        records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        let mut rows = Vec::new();
        for rec in records {
            let size = self.layers_size(&rec);
            let row = |repository: String, tag: String| ImageSummary {
                repository,
                tag,
                id: rec.id.clone(),
                digest: rec.manifest_digest.clone(),
                created: rec.created.clone(),
                size,
            };
            let named: Vec<_> = rec
                .names
                .iter()
                .filter_map(|n| reference::parse(n).ok())
                .collect();
            if named.is_empty() {
                rows.push(row("<none>".into(), "<none>".into()));
            }
            for r in named {
                let tag = r.tag.clone().unwrap_or_else(|| "<none>".into());
                rows.push(row(r.familiar_name(), tag));
            }
        }
        Ok(rows)
    }

    /// Finds an image by name (`busybox`, `busybox:1`, `repo@sha256:..`) or by id
    /// (full or a prefix of at least 4 hex characters, with or without `sha256:`).
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let index = self.read_index()?;
        let (record, name) = find_image(&index.images, reference)?;
        let name = name
            .or_else(|| {
                record
                    .names
                    .first()
                    .and_then(|n| reference::parse(n).ok())
                    .map(|r| r.familiar())
            })
            .unwrap_or_else(|| record.id.clone());
        self.resolve_record(record, name)
    }

    pub(crate) fn resolve_record(
        &self,
        record: &ImageRecord,
        name: String,
    ) -> Result<ResolvedImage, ImageError> {
        let manifest_bytes = self.read_blob_json(&record.manifest_digest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| {
                ImageError::MalformedJson {
                    what: format!("stored manifest {}", record.manifest_digest),
                    source,
                }
            })?;
        let config_bytes = self.read_blob_json(&record.id)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| ImageError::MalformedJson {
                what: format!("stored config {}", record.id),
                source,
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(self.corrupt(format!(
                "image {} has {} layers but {} diff_ids",
                record.id,
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = desc.digest().to_string();
            let blob_path = self
                .blob_path(&digest)
                .ok_or_else(|| self.corrupt(format!("layer digest {digest} is not sha256")))?;
            if !blob_path.is_file() {
                return Err(self.corrupt(format!("layer blob {digest} is missing")));
            }
            layers.push(LayerRef {
                diff_id: diff_id.clone(),
                blob_path,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
            });
        }
        Ok(ResolvedImage {
            id: record.id.clone(),
            name,
            config,
            layers,
        })
    }

    /// Streams `reader` into the store as the blob `expected` (`sha256:<hex>`),
    /// verifying the digest on the way; returns the size. On a mismatch nothing
    /// is left under the digest. An existing blob is kept and `reader` is not read.
    pub fn write_blob(&self, mut reader: impl Read, expected: &str) -> Result<u64, ImageError> {
        if let Some(size) = self.blob_size(expected) {
            return Ok(size);
        }
        let mut writer = self.blob_writer(expected, "blob", None)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io("read blob", &writer.tmp_path)(e)),
            };
            writer.write(&buf[..n])?;
        }
        writer.commit()
    }

    /// The size of blob `digest` when the store has it.
    pub fn blob_size(&self, digest: &str) -> Option<u64> {
        let meta = fs::metadata(self.blob_path(digest)?).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// A temporary file in the blob directory that becomes blob `expected`
    /// on [`BlobWriter::commit`], only if what was written hashes to it (and
    /// has `expected_size` bytes, when given). Dropped uncommitted, it leaves nothing.
    pub fn blob_writer(
        &self,
        expected: &str,
        what: &str,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter, ImageError> {
        let target = self
            .blob_path(expected)
            .ok_or_else(|| ImageError::Invalid(format!("{expected} is not a sha256 digest")))?;
        let dir = self.blob_dir();
        let (tmp_path, file) = create_temp(&dir, TEMP_BLOB_PREFIX)?;
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            guard: RemoveOnDrop(Some(tmp_path.clone())),
            tmp_path,
            target,
            dir,
            hasher: Sha256::new(),
            count: 0,
            expected: expected.to_string(),
            expected_size,
            what: what.to_string(),
        })
    }

    /// Removes temporary blobs that processes no longer running left behind
    /// (a pull killed half-way), so an interrupted pull restarts cleanly.
    pub fn remove_stale_temp_blobs(&self) {
        let Ok(entries) = fs::read_dir(self.blob_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(TEMP_BLOB_PREFIX))
                .and_then(|n| n.strip_prefix('-'))
            else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let alive =
                pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Moves a verified file into the store as blob `hex` (same file system).
    /// The caller must have hashed the file after its last write.
    pub(crate) fn commit_verified_file(&self, file: &Path, hex: &str) -> Result<(), ImageError> {
        let target = self.blob_dir().join(hex);
        if target.is_file() {
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(ImageError::io("sync blob", file))?;
        fs::rename(file, &target).map_err(ImageError::io("store blob", &target))
    }

    /// The path of blob `sha256:<hex>`, or `None` when the digest is not a sha256 one.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        is_sha256_hex(hex).then(|| self.blob_dir().join(hex))
    }

    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    pub(crate) fn corrupt(&self, reason: String) -> ImageError {
        ImageError::CorruptStore {
            path: self.index_path(),
            reason,
        }
    }

    pub(crate) fn read_blob_json(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| self.corrupt(format!("{digest} is not a sha256 digest")))?;
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.corrupt(format!("blob {digest} is missing"))
            } else {
                ImageError::Io {
                    action: "read blob",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        read_limited(file, &path)
    }

    pub(crate) fn read_index(&self) -> Result<ImageIndexFile, ImageError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ImageIndexFile::default()),
            Err(e) => return Err(ImageError::io("read", &path)(e)),
        };
        let index: ImageIndexFile = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("not valid JSON ({e})")))?;
        if index.version > INDEX_VERSION {
            return Err(self.corrupt(format!(
                "written by a newer berth (format {}); upgrade berth",
                index.version
            )));
        }
        Ok(index)
    }

    /// Adds `records` to the index under the store lock. A name moves from any
    /// image that had it to the new one, as `docker load` does.
    pub(crate) fn add_images(&self, records: Vec<ImageRecord>) -> Result<(), ImageError> {
        self.update_index(|index| {
            for new in records {
                for old in index.images.iter_mut() {
                    if old.id != new.id {
                        old.names.retain(|n| !new.names.contains(n));
                    }
                }
                match index.images.iter_mut().find(|r| r.id == new.id) {
                    Some(existing) => {
                        for n in new.names {
                            if !existing.names.contains(&n) {
                                existing.names.push(n);
                            }
                        }
                        existing.manifest_digest = new.manifest_digest;
                        existing.size = new.size;
                        existing.layers_size = existing.layers_size.or(new.layers_size);
                    }
                    None => index.images.push(new),
                }
            }
            Ok(())
        })?;
        // Measured now, while the layers are fresh in the page cache, rather than at the
        // next `berth images`.
        if let Ok(index) = self.read_index() {
            for rec in index.images.iter().filter(|r| r.layers_size.is_none()) {
                self.layers_size(rec);
            }
        }
        Ok(())
    }

    /// The uncompressed size of `rec`'s layers (each distinct layer once), measured by
    /// decompressing them the first time and kept in the index; the blobs' own size where
    /// they cannot be read (a damaged store says so elsewhere).
    pub(crate) fn layers_size(&self, rec: &ImageRecord) -> u64 {
        if let Some(size) = rec.layers_size {
            return size;
        }
        let Ok(measured) = self.measure_layers(rec) else {
            return rec.size;
        };
        let _ = self.update_index(|index| {
            if let Some(r) = index.images.iter_mut().find(|r| r.id == rec.id) {
                r.layers_size = Some(measured);
            }
            Ok(())
        });
        measured
    }

    fn measure_layers(&self, rec: &ImageRecord) -> Result<u64, ImageError> {
        let resolved = self.resolve_record(rec, rec.id.clone())?;
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for layer in resolved.layers {
            if !seen.insert(layer.diff_id.clone()) {
                continue;
            }
            let path = &layer.blob_path;
            let mut reader =
                io::BufReader::new(File::open(path).map_err(ImageError::io("read", path))?);
            let compression = super::compression::Compression::sniff(&mut reader)
                .map_err(ImageError::io("read", path))?;
            let mut plain = compression
                .decoder(reader)
                .map_err(ImageError::io("decompress layer", path))?;
            total += io::copy(&mut plain, &mut io::sink())
                .map_err(ImageError::io("decompress layer", path))?;
        }
        Ok(total)
    }

    /// Reads the index under the store lock, lets `change` edit it, and
    /// replaces the file atomically when `change` succeeds. The lock is held
    /// until this returns, so `change` may also delete blobs safely.
    pub(crate) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut ImageIndexFile) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let lock_path = self.root.join("images.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(ImageError::io("open lock file", &lock_path))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io("lock", &lock_path)(errno.into()))?;

        let mut index = self.read_index()?;
        index.version = INDEX_VERSION;
        let out = change(&mut index)?;
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| ImageError::Invalid(format!("cannot encode image index: {e}")))?;
        let (tmp_path, mut file) = create_temp(&self.root, ".images.json")?;
        let guard = RemoveOnDrop(Some(tmp_path.clone()));
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(ImageError::io("write", &tmp_path))?;
        drop(file);
        let path = self.index_path();
        fs::rename(&tmp_path, &path).map_err(ImageError::io("replace", &path))?;
        guard.disarm();
        sync_dir(&self.root)?;
        Ok(out)
    }
}

/// Finds the record a user's reference means, and the familiar name it matched.
pub(crate) fn find_image<'a>(
    images: &'a [ImageRecord],
    input: &str,
) -> Result<(&'a ImageRecord, Option<String>), ImageError> {
    let not_found = || ImageError::NotFound(input.to_string());
    if let Some(hex) = input.strip_prefix("sha256:") {
        return find_by_id(images, hex, input)?
            .map(|r| (r, None))
            .ok_or_else(not_found);
    }
    let looks_like_id = input.len() >= 4
        && input
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match reference::parse(input) {
        Ok(r) => {
            let found = match &r.digest {
                Some(digest) => {
                    let name = r.name();
                    let by_digest: Vec<_> = images
                        .iter()
                        .filter(|i| &i.manifest_digest == digest)
                        .collect();
                    by_digest
                        .iter()
                        .find(|i| {
                            i.names
                                .iter()
                                .any(|n| reference::parse(n).is_ok_and(|p| p.name() == name))
                        })
                        .or(by_digest.first())
                        .copied()
                }
                None => {
                    let canonical = r.to_string();
                    images.iter().find(|i| i.names.contains(&canonical))
                }
            };
            if let Some(rec) = found {
                return Ok((rec, Some(r.familiar())));
            }
            if looks_like_id {
                if let Some(rec) = find_by_id(images, input, input)? {
                    return Ok((rec, None));
                }
            }
            Err(not_found())
        }
        Err(_) if looks_like_id => find_by_id(images, input, input)?
            .map(|r| (r, None))
            .ok_or_else(not_found),
        Err(e) => Err(e.into()),
    }
}

fn find_by_id<'a>(
    images: &'a [ImageRecord],
    hex: &str,
    input: &str,
) -> Result<Option<&'a ImageRecord>, ImageError> {
    if hex.len() < 4
        || hex.len() > 64
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ImageError::NotFound(input.to_string()));
    }
    let matches: Vec<_> = images
        .iter()
        .filter(|i| {
            i.id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex))
        })
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(Some(matches[0])),
        count => Err(ImageError::Ambiguous {
            prefix: input.to_string(),
            count,
        }),
    }
}

pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads at most [`MAX_JSON_BYTES`] of a JSON document.
pub(crate) fn read_limited(file: File, path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io("read", path))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::Invalid(format!(
            "{} is larger than {} MiB, too large for a JSON document",
            path.display(),
            MAX_JSON_BYTES >> 20
        )));
    }
    Ok(bytes)
}

/// Creates a new file with a unique name in `dir` (same file system as the target).
pub(crate) fn create_temp(dir: &Path, prefix: &str) -> Result<(PathBuf, File), ImageError> {
    loop {
        let path = dir.join(unique_name(prefix));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ImageError::io("create temporary file in", dir)(e)),
        }
    }
}

/// A name no other process or thread picks at the same time.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io("sync directory", dir))
}

/// Removes a temporary file or directory unless disarmed.
pub(crate) struct RemoveOnDrop(pub(crate) Option<PathBuf>);

impl RemoveOnDrop {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir_all(&path);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
    }
}

/// Name prefix of blobs being written (`<prefix>-<pid>-...`).
const TEMP_BLOB_PREFIX: &str = ".tmp-blob";

/// A blob being written: hashed and counted as it goes, renamed under its
/// digest by [`BlobWriter::commit`] only when it matches. See [`ImageStore::blob_writer`].
pub struct BlobWriter {
    file: io::BufWriter<File>,
    guard: RemoveOnDrop,
    tmp_path: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    count: u64,
    expected: String,
    expected_size: Option<u64>,
    what: String,
}

impl BlobWriter {
    /// Appends `data`; more bytes than the expected size is an error at once,
    /// so a hostile server cannot fill the disk.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.count += data.len() as u64;
        if let Some(size) = self.expected_size.filter(|s| self.count > *s) {
            return Err(ImageError::SizeMismatch {
                what: format!("{} {}", self.what, self.expected),
                expected: size,
                actual: self.count,
            });
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .map_err(ImageError::io("write blob", &self.tmp_path))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.count
    }

    /// `sha256:<hex>` of what was written so far.
    pub fn digest_so_far(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Checks size and digest, then syncs and renames the file into place;
    /// returns the size. On any mismatch the temporary file is removed.
    pub fn commit(self) -> Result<u64, ImageError> {
        let what = format!("{} {}", self.what, self.expected);
        if let Some(size) = self.expected_size.filter(|s| *s != self.count) {
            return Err(ImageError::SizeMismatch {
                what,
                expected: size,
                actual: self.count,
            });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                what,
                expected: self.expected,
                actual,
            });
        }
        let file = self
            .file
            .into_inner()
            .map_err(|e| ImageError::io("write blob", &self.tmp_path)(e.into_error()))?;
        file.sync_all()
            .map_err(ImageError::io("sync blob", &self.tmp_path))?;
        drop(file);
        fs::rename(&self.tmp_path, &self.target)
            .map_err(ImageError::io("store blob", &self.target))?;
        self.guard.disarm();
        sync_dir(&self.dir)?;
        Ok(self.count)
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// `sha256:<hex>` of everything read.
    pub(crate) fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn record(id_byte: char, names: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_byte.to_string().repeat(64)),
            manifest_digest: format!("sha256:{}", "e".repeat(64)),
            names: names.iter().map(|s| s.to_string()).collect(),
            created: None,
            size: 1,
            layers_size: None,
        }
    }

    #[test]
    fn write_blob_verifies_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let data = b"hello blob";
        let digest = sha(data);
        assert_eq!(
            store.write_blob(&data[..], &digest).unwrap(),
            data.len() as u64
        );
        let path = store.blob_path(&digest).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        // Existing blob: kept, the reader is not consumed.
        assert_eq!(
            store.write_blob(&b"other"[..], &digest).unwrap(),
            data.len() as u64
        );

        let wrong = sha(b"something else");
        let err = store.write_blob(&data[..], &wrong).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!store.blob_path(&wrong).unwrap().exists());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(store.blob_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(store.write_blob(&data[..], "md5:abc").is_err());
    }

    #[test]
    fn index_names_move_between_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        store
            .add_images(vec![record('a', &["docker.io/library/x:latest"])])
            .unwrap();
        store
            .add_images(vec![record('b', &["docker.io/library/x:latest"])])
            .unwrap();
        let rows = store.list().unwrap();
        assert_eq!(rows.len(), 2);
        let a = rows.iter().find(|r| r.id.starts_with("sha256:a")).unwrap();
        assert_eq!(
            (a.repository.as_str(), a.tag.as_str()),
            ("<none>", "<none>")
        );
        let b = rows.iter().find(|r| r.id.starts_with("sha256:b")).unwrap();
        assert_eq!((b.repository.as_str(), b.tag.as_str()), ("x", "latest"));
    }

    #[test]
    fn find_by_name_and_id() {
        let images = vec![
            record('a', &["docker.io/library/busybox:latest"]),
            record('b', &["localhost:5000/x:1"]),
            ImageRecord {
                id: format!("sha256:ab{}", "0".repeat(62)),
                ..record('c', &[])
            },
        ];
        let (r, name) = find_image(&images, "busybox").unwrap();
        assert_eq!(
            (r.id.as_str(), name.as_deref()),
            (images[0].id.as_str(), Some("busybox:latest"))
        );
        assert_eq!(
            find_image(&images, "localhost:5000/x:1").unwrap().0.id,
            images[1].id
        );
        assert_eq!(find_image(&images, "bbbb").unwrap().0.id, images[1].id);
        assert_eq!(
            find_image(&images, &format!("sha256:{}", "b".repeat(64)))
                .unwrap()
                .0
                .id,
            images[1].id
        );
        assert!(matches!(
            find_image(&images, "abc"),
            Err(ImageError::NotFound(_))
        ));
        assert!(
            matches!(find_image(&images, "aaaa").map(|r| r.0.id.clone()), Ok(ref id) if id == &images[0].id)
        );
        assert!(matches!(
            find_image(&images, "sha256:ab"),
            Err(ImageError::NotFound(_))
        ));
        assert!(matches!(
            find_image(&images, "sha256:abab"),
            Err(ImageError::NotFound(_))
        ));
        let err = find_image(&images, "nothere").unwrap_err();
        assert_eq!(
            err.to_string(),
            "image nothere not known: pull it with `berth pull nothere` or load it with `berth load -i FILE`"
        );
        assert!(matches!(
            find_image(&images, "Bad"),
            Err(ImageError::Reference(_))
        ));
    }

    #[test]
    fn ambiguous_prefix() {
        let images = vec![
            ImageRecord {
                id: format!("sha256:abcd{}", "0".repeat(60)),
                ..record('a', &[])
            },
            ImageRecord {
                id: format!("sha256:abcd{}", "1".repeat(60)),
                ..record('b', &[])
            },
        ];
        assert!(matches!(
            find_image(&images, "abcd"),
            Err(ImageError::Ambiguous { count: 2, .. })
        ));
        assert!(find_image(&images, "abcd0").is_ok());
    }

    #[test]
    fn corrupt_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("images.json"), b"{nope").unwrap();
        assert!(matches!(store.list(), Err(ImageError::CorruptStore { .. })));
    }
}
