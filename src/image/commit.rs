//! `berth commit`: a new image made of an existing image's layers plus one more (a
//! container's writable layer), written to the store like any loaded image.

use std::io::Cursor;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageManifestBuilder, MediaType,
    SCHEMA_VERSION,
};
use sha2::{Digest as _, Sha256};

use super::reference;
use super::store::{ImageError, ImageRecord, ImageStore, ResolvedImage};

/// A layer blob written by the caller to a temporary file in the store's tmp directory.
#[derive(Debug, Clone)]
pub struct NewLayer {
    /// The gzip-compressed tar.
    pub file: PathBuf,
    /// `sha256:` of the file.
    pub digest: String,
    pub size: u64,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

fn digest(s: &str) -> Result<Digest, ImageError> {
    Digest::from_str(s).map_err(|e| ImageError::Invalid(format!("bad digest {s}: {e}")))
}

fn descriptor(media: MediaType, d: &str, size: u64) -> Result<Descriptor, ImageError> {
    DescriptorBuilder::default()
        .media_type(media)
        .digest(digest(d)?)
        .size(size)
        .build()
        .map_err(|e| ImageError::Invalid(format!("building a descriptor: {e}")))
}

impl ImageStore {
    /// The directory for temporary files that become blobs (same file system as the blobs).
    pub fn scratch_dir(&self) -> PathBuf {
        self.tmp_dir()
    }

    /// Stores the image `parent` + `layer` with `config` (whose diff_ids and history the
    /// caller has extended), named `name` when given, with Docker's top-level `comment`
    /// (what `image inspect` shows as `Comment`) when given; returns the new image id.
    pub fn add_committed(
        &self,
        parent: &ResolvedImage,
        layer: &NewLayer,
        config: &ImageConfiguration,
        name: Option<&str>,
        comment: Option<&str>,
    ) -> Result<String, ImageError> {
        let names = match name {
            Some(n) => {
                let r = reference::parse(n)?;
                if r.digest.is_some() {
                    return Err(ImageError::Usage(format!(
                        "cannot commit to a digest reference {n}: give NAME[:TAG]"
                    )));
                }
                vec![super::manage::canonical_tag(&r)]
            }
            None => vec![],
        };
        let hex = layer
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::Invalid(format!("{} is not sha256", layer.digest)))?;
        self.commit_verified_file(&layer.file, hex)?;

        let encoding =
            |e: serde_json::Error| ImageError::Invalid(format!("encoding the image config: {e}"));
        let mut doc = serde_json::to_value(config).map_err(encoding)?;
        if let (Some(c), Some(map)) = (comment, doc.as_object_mut()) {
            map.insert("comment".into(), serde_json::Value::String(c.to_string()));
        }
        let config_bytes = serde_json::to_vec(&doc).map_err(encoding)?;
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
        self.write_blob(Cursor::new(&config_bytes), &config_digest)?;

        let mut layers = Vec::with_capacity(parent.layers.len() + 1);
        let mut size = config_bytes.len() as u64 + layer.size;
        for l in &parent.layers {
            let name = l
                .blob_path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| self.corrupt(format!("layer blob {}", l.blob_path.display())))?;
            layers.push(descriptor(
                MediaType::from(l.media_type.as_str()),
                &format!("sha256:{name}"),
                l.size,
            )?);
            size += l.size;
        }
        layers.push(descriptor(
            MediaType::ImageLayerGzip,
            &layer.digest,
            layer.size,
        )?);
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_bytes.len() as u64,
            )?)
            .layers(layers)
            .build()
            .map_err(|e| ImageError::Invalid(format!("building the manifest: {e}")))?;
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Invalid(format!("encoding the manifest: {e}")))?;
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes)));
        self.write_blob(Cursor::new(&manifest_bytes), &manifest_digest)?;
        self.add_images(vec![ImageRecord {
            id: config_digest.clone(),
            manifest_digest,
            names,
            created: config.created().clone(),
            size,
            layers_size: None,
        }])?;
        Ok(config_digest)
    }
}
