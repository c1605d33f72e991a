//! `berth save`: write stored images as an archive that `docker load`,
//! `podman load`, `skopeo` and `berth load` read.
//!
//! - docker-archive (the default, as `docker save`): `manifest.json` with
//!   `Config`, `RepoTags` and `Layers`, the config as `<hex>.json` and each
//!   layer uncompressed as `<diff id hex>.tar` (the layout skopeo and podman
//!   write), so a layer's digest in the archive is its diff id.
//! - oci-archive: an OCI image layout (`oci-layout`, `index.json`,
//!   `blobs/sha256/`) with the stored manifest, config and layer blobs as they
//!   are, each name as `org.opencontainers.image.ref.name` and
//!   `io.containerd.image.name` annotations.
//!
//! The image id (the config's digest) never changes: the config is written
//! byte for byte.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

use oci_spec::image::ImageManifest;
use serde_json::json;

use super::compression::Compression;
use super::reference::{self, Reference};
use super::store::{
    create_temp, find_image, sync_dir, HashingReader, ImageError, ImageRecord, ImageStore,
    RemoveOnDrop,
};

/// Which archive `berth save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format.
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker-archive" | "docker" => Ok(ArchiveFormat::DockerArchive),
            "oci-archive" | "oci" => Ok(ArchiveFormat::OciArchive),
            other => Err(ImageError::Usage(format!(
                "unknown archive format {other:?}: use docker-archive or oci-archive"
            ))),
        }
    }
}

/// One image to save and the names it is saved under (canonical form).
struct Selected {
    record: ImageRecord,
    names: Vec<String>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl ImageStore {
    /// Writes the images `refs` name to `path` as one archive: through a
    /// temporary file in the same directory, renamed into place when complete.
    pub fn save_to_file(
        &self,
        refs: &[String],
        format: ArchiveFormat,
        path: &Path,
    ) -> Result<(), ImageError> {
        let selected = self.select(refs)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let (tmp, file) = create_temp(&dir, ".berth-save")?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut out = io::BufWriter::new(file);
        self.write_archive(&selected, format, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| ImageError::io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(ImageError::io("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(ImageError::io("write archive", path))?;
        guard.disarm();
        sync_dir(&dir)
    }

    /// Writes the images `refs` name as one archive to `out` (e.g. stdout).
    pub fn save_to_writer(
        &self,
        refs: &[String],
        format: ArchiveFormat,
        out: &mut dyn Write,
    ) -> Result<(), ImageError> {
        let selected = self.select(refs)?;
        self.write_archive(&selected, format, out)
    }

    /// Each reference's image, with the name it was given by (none for an id),
    /// images given twice merged, in the order first given.
    fn select(&self, refs: &[String]) -> Result<Vec<Selected>, ImageError> {
        if refs.is_empty() {
            return Err(ImageError::Usage(
                "save needs at least one image: berth save -o FILE IMAGE...".into(),
            ));
        }
        let index = self.read_index()?;
        let mut out: Vec<Selected> = Vec::new();
        for r in refs {
            let (record, matched) = find_image(&index.images, r)?;
            let name = match (matched, reference::parse(r)) {
                (Some(_), Ok(parsed)) if parsed.digest.is_none() => Some(parsed.to_string()),
                _ => None,
            };
            let entry = match out.iter_mut().position(|s| s.record.id == record.id) {
                Some(i) => &mut out[i],
                None => {
                    out.push(Selected {
                        record: record.clone(),
                        names: Vec::new(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if let Some(n) = name {
                if !entry.names.contains(&n) {
                    entry.names.push(n);
                }
            }
        }
        Ok(out)
    }

    fn write_archive(
        &self,
        images: &[Selected],
        format: ArchiveFormat,
        out: &mut dyn Write,
    ) -> Result<(), ImageError> {
        let mut tar = tar::Builder::new(out);
        match format {
            ArchiveFormat::DockerArchive => self.write_docker(images, &mut tar)?,
            ArchiveFormat::OciArchive => self.write_oci(images, &mut tar)?,
        }
        tar.into_inner()
            .and_then(|w| w.flush())
            .map_err(ImageError::io("write", Path::new("the archive")))
    }

    fn write_docker(
        &self,
        images: &[Selected],
        tar: &mut tar::Builder<&mut dyn Write>,
    ) -> Result<(), ImageError> {
        let mut written = std::collections::BTreeSet::new();
        let mut manifest = Vec::new();
        for image in images {
            let resolved = self.resolve_record(&image.record, image.record.id.clone())?;
            let mut layers = Vec::new();
            for layer in &resolved.layers {
                let hex = layer.diff_id.trim_start_matches("sha256:");
                let name = format!("{hex}.tar");
                if written.insert(name.clone()) {
                    self.append_uncompressed(tar, &name, &layer.blob_path, &layer.diff_id)?;
                }
                layers.push(name);
            }
            let config_hex = image.record.id.trim_start_matches("sha256:");
            let config_name = format!("{config_hex}.json");
            if written.insert(config_name.clone()) {
                let bytes = self.read_blob_json(&image.record.id)?;
                append_bytes(tar, &config_name, &bytes)?;
            }
            let tags: Vec<String> = image.names.iter().map(|n| familiar(n)).collect();
            manifest.push(json!({
                "Config": config_name,
                "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) },
                "Layers": layers,
            }));
        }
        append_bytes(tar, "manifest.json", &to_json(&manifest)?)
    }

    fn write_oci(
        &self,
        images: &[Selected],
        tar: &mut tar::Builder<&mut dyn Write>,
    ) -> Result<(), ImageError> {
        append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_dir(tar, "blobs/")?;
        append_dir(tar, "blobs/sha256/")?;
        let mut written = std::collections::BTreeSet::new();
        let mut descriptors = Vec::new();
        for image in images {
            let rec = &image.record;
            let manifest_bytes = self.read_blob_json(&rec.manifest_digest)?;
            let manifest: ImageManifest =
                serde_json::from_slice(&manifest_bytes).map_err(|source| {
                    ImageError::MalformedJson {
                        what: format!("stored manifest {}", rec.manifest_digest),
                        source,
                    }
                })?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(String::from))
                .unwrap_or_else(|| OCI_MANIFEST.into());
            let mut blobs = vec![rec.id.clone()];
            blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
            for digest in blobs {
                if written.insert(digest.clone()) {
                    let path = self
                        .blob_path(&digest)
                        .ok_or_else(|| self.corrupt(format!("{digest} is not sha256")))?;
                    append_file(tar, &blob_name(&digest), &path)?;
                }
            }
            if written.insert(rec.manifest_digest.clone()) {
                append_bytes(tar, &blob_name(&rec.manifest_digest), &manifest_bytes)?;
            }
            let descriptor = |names: Option<&String>| {
                let mut d = json!({
                    "mediaType": media_type,
                    "digest": rec.manifest_digest,
                    "size": manifest_bytes.len(),
                });
                if let Some(n) = names {
                    d["annotations"] = json!({
                        "io.containerd.image.name": n,
                        "org.opencontainers.image.ref.name": familiar(n),
                    });
                }
                d
            };
            if image.names.is_empty() {
                descriptors.push(descriptor(None));
            }
            for n in &image.names {
                descriptors.push(descriptor(Some(n)));
            }
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descriptors,
        });
        append_bytes(tar, "index.json", &to_json(&index)?)
    }

    /// Appends a layer blob as its uncompressed tar, checking its diff id.
    fn append_uncompressed(
        &self,
        tar: &mut tar::Builder<&mut dyn Write>,
        name: &str,
        blob: &Path,
        diff_id: &str,
    ) -> Result<(), ImageError> {
        let file = File::open(blob).map_err(ImageError::io("read", blob))?;
        let mut reader = BufReader::new(file);
        let compression = Compression::sniff(&mut reader).map_err(ImageError::io("read", blob))?;
        // The tar header needs the size first: a compressed layer is
        // decompressed into the store's scratch space.
        let (tmp, mut plain) = create_temp(&self.tmp_dir(), "save-layer")?;
        let _guard = RemoveOnDrop(Some(tmp.clone()));
        let decoder = compression
            .decoder(reader)
            .map_err(ImageError::io("decompress layer", blob))?;
        let mut hashing = HashingReader::new(decoder);
        io::copy(&mut hashing, &mut plain).map_err(ImageError::io("decompress layer", blob))?;
        let actual = hashing.digest();
        if actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {}", blob.display()),
                expected: diff_id.to_string(),
                actual,
            });
        }
        plain
            .seek(io::SeekFrom::Start(0))
            .map_err(ImageError::io("read", &tmp))?;
        let size = plain
            .metadata()
            .map_err(ImageError::io("read", &tmp))?
            .len();
        let reopened = File::open(&tmp).map_err(ImageError::io("read", &tmp))?;
        append_reader(tar, name, size, reopened)
    }
}

fn familiar(canonical: &str) -> String {
    reference::parse(canonical)
        .map(|r: Reference| r.familiar())
        .unwrap_or_else(|_| canonical.to_string())
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn to_json(v: &impl serde::Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v).map_err(|e| ImageError::Invalid(format!("cannot encode JSON: {e}")))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_reader(
    tar: &mut tar::Builder<&mut dyn Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), ImageError> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    tar.append_data(&mut h, name, data)
        .map_err(ImageError::io("write archive entry", Path::new(name)))
}

fn append_bytes(
    tar: &mut tar::Builder<&mut dyn Write>,
    name: &str,
    data: &[u8],
) -> Result<(), ImageError> {
    append_reader(tar, name, data.len() as u64, data)
}

fn append_file(
    tar: &mut tar::Builder<&mut dyn Write>,
    name: &str,
    path: &Path,
) -> Result<(), ImageError> {
    let file = File::open(path).map_err(ImageError::io("read", path))?;
    let size = file.metadata().map_err(ImageError::io("read", path))?.len();
    append_reader(tar, name, size, file.take(size))
}

fn append_dir(tar: &mut tar::Builder<&mut dyn Write>, name: &str) -> Result<(), ImageError> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
        .map_err(ImageError::io("write archive entry", Path::new(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{gzip, layer_one, layer_two, oci_image};

    #[test]
    fn both_formats_load_back_as_the_same_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("a")).unwrap();
        let (l1, l2) = (layer_one(), layer_two());
        let src = dir.path().join("src.tar");
        oci_image(&[gzip(&l1), l2.clone()], &[l1, l2], Some("localhost/x:1"))
            .0
            .write(&src);
        let id = store.load_archive(&src).unwrap()[0].id.clone();
        let original = store.resolve(&id).unwrap();
        for (format, file) in [
            (ArchiveFormat::DockerArchive, "d.tar"),
            (ArchiveFormat::OciArchive, "o.tar"),
        ] {
            let out = dir.path().join(file);
            store
                .save_to_file(&["localhost/x:1".into()], format, &out)
                .unwrap();
            let other = ImageStore::open(&dir.path().join(file.replace(".tar", ""))).unwrap();
            let loaded = other.load_archive(&out).unwrap();
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded[0].id, id, "{format:?}");
            assert_eq!(loaded[0].names, ["localhost/x:1"], "{format:?}");
            let back = other.resolve(&id).unwrap();
            let diff = |r: &crate::image::ResolvedImage| {
                r.layers
                    .iter()
                    .map(|l| l.diff_id.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(diff(&back), diff(&original));
        }
        // No temporary file is left next to the archives.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(store
            .save_to_file(&[], ArchiveFormat::OciArchive, &dir.path().join("n"))
            .is_err());
        assert!(store
            .save_to_file(
                &["nothere".into()],
                ArchiveFormat::OciArchive,
                &dir.path().join("n")
            )
            .is_err());
        assert!(!dir.path().join("n").exists());
    }
}
