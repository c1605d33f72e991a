//! `berth push`: the blobs the registry lacks, then the manifest, byte for
//! byte as stored, so the image keeps its digest.
//!
//! For each blob: HEAD first (present: skip); else a cross-repository mount
//! from another repository of the same registry that the image was pulled
//! from or is named in; else an upload streamed from the store (one PUT).

use std::io::Read;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::Client;
use oci_spec::image::ImageManifest;

use super::progress::{short_digest, BlobProgress, Progress, ProgressMode};
use super::{
    attempts, block_on, classify, oci_reference, registry_auth, Endpoint, RegistriesConfig,
    RegistryError,
};
use crate::image::reference::{self, Reference};
use crate::image::store::{ImageError, ImageStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Verify TLS certificates (and use https for registries not marked insecure).
    pub tls_verify: bool,
    /// How much to report.
    pub progress: ProgressMode,
    /// The credentials to use (an API client's); the auth file's for the registry without.
    pub credentials: Option<super::Credentials>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            tls_verify: true,
            progress: ProgressMode::Auto,
            credentials: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Where it went (canonical).
    pub reference: String,
    /// The tag pushed.
    pub tag: String,
    /// The manifest digest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: usize,
    /// Blobs uploaded (not present, not mounted).
    pub uploaded: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
}

/// One blob to push.
struct Blob {
    digest: String,
    size: u64,
    path: std::path::PathBuf,
}

enum Outcome {
    Present,
    Mounted,
    Uploaded,
}

/// Pushes the stored image `source` to `destination` (default: `source` itself).
pub fn push(
    store: &ImageStore,
    config: &RegistriesConfig,
    source: &str,
    destination: Option<&str>,
    opts: &PushOptions,
) -> Result<PushedImage, RegistryError> {
    let record = store.find_record(source)?;
    let dest = config.qualify(destination.unwrap_or(source))?;
    let Some(tag) = dest.tag.clone() else {
        return Err(ImageError::Usage(format!(
            "cannot push to {dest}: name a tag (NAME:TAG), a digest alone cannot be pushed to"
        ))
        .into());
    };
    let manifest_bytes = store.read_blob_json(&record.manifest_digest)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| ImageError::MalformedJson {
            what: format!("stored manifest {}", record.manifest_digest),
            source,
        })?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let mut blobs: Vec<Blob> = Vec::new();
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let digest = d.digest().to_string();
        if blobs.iter().any(|b| b.digest == digest) {
            continue;
        }
        let path = store
            .blob_path(&digest)
            .filter(|p| p.is_file())
            .ok_or_else(|| ImageError::MissingBlob {
                what: format!("stored image {}", record.id),
                digest: digest.clone(),
            })?;
        blobs.push(Blob {
            digest,
            size: d.size(),
            path,
        });
    }
    let endpoint = config.push_endpoint(&dest);
    // Repositories on the same registry this image is known under: mount sources.
    let mount_from: Vec<Endpoint> = record
        .names
        .iter()
        .filter_map(|n| reference::parse(n).ok())
        .map(|r| config.push_endpoint(&r))
        .filter(|e| e.host == endpoint.host && e.repository != endpoint.repository)
        .collect();
    let progress = Progress::new(&opts.progress);
    let shown = Reference {
        digest: None,
        ..dest.clone()
    }
    .to_string();
    let job = Job {
        blobs: &blobs,
        manifest_bytes: &manifest_bytes,
        media_type: &media_type,
        digest: &record.manifest_digest,
        tag: &tag,
        shown: &shown,
        mount_from: &mount_from,
        progress: &progress,
        tls_verify: opts.tls_verify,
        credentials: opts.credentials.as_ref(),
    };
    block_on(async {
        let mut result = Err(RegistryError::NotFound {
            reference: shown.clone(),
            registry: endpoint.host.clone(),
        });
        for attempt in attempts(&endpoint, opts.tls_verify) {
            result = job.push_to(&attempt).await;
            if !matches!(result, Err(RegistryError::Unreachable { .. })) {
                break;
            }
        }
        result
    })?
}

/// Everything one push needs but the endpoint.
struct Job<'a> {
    blobs: &'a [Blob],
    manifest_bytes: &'a [u8],
    media_type: &'a str,
    digest: &'a str,
    tag: &'a str,
    shown: &'a str,
    mount_from: &'a [Endpoint],
    progress: &'a Progress,
    tls_verify: bool,
    credentials: Option<&'a super::Credentials>,
}

impl Job<'_> {
    async fn push_to(&self, endpoint: &Endpoint) -> Result<PushedImage, RegistryError> {
        let client = super::client(endpoint, self.tls_verify)?;
        let auth = registry_auth(endpoint, self.credentials)?;
        let target = oci_reference(endpoint, Some(self.tag), None);
        // Authenticate for push once, so the parallel requests share the token.
        client
            .auth(&target, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| classify(e, endpoint, self.shown, "authenticating"))?;
        self.progress.line(&format!("Pushing {}", self.shown));
        let pusher = Pusher {
            client: &client,
            target: &target,
            endpoint,
            mount_from: self.mount_from,
            progress: self.progress,
            shown: self.shown,
        };
        let outcomes: Vec<Outcome> = stream::iter(self.blobs)
            .map(|b| pusher.push_blob(b))
            .buffer_unordered(super::PARALLEL_BLOBS)
            .try_collect()
            .await?;
        let content_type = self.media_type.parse().map_err(|_| {
            ImageError::Invalid(format!(
                "manifest media type {} is not a valid header",
                self.media_type
            ))
        })?;
        client
            .push_manifest_raw(&target, self.manifest_bytes.to_vec(), content_type)
            .await
            .map_err(|e| classify(e, endpoint, self.shown, "writing the manifest"))?;
        let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
        Ok(PushedImage {
            reference: self.shown.to_string(),
            tag: self.tag.to_string(),
            digest: self.digest.to_string(),
            size: self.manifest_bytes.len(),
            uploaded: count(|o| matches!(o, Outcome::Uploaded)),
            mounted: count(|o| matches!(o, Outcome::Mounted)),
        })
    }
}

struct Pusher<'a> {
    client: &'a Client,
    target: &'a oci_client::Reference,
    endpoint: &'a Endpoint,
    mount_from: &'a [Endpoint],
    progress: &'a Progress,
    shown: &'a str,
}

impl Pusher<'_> {
    async fn push_blob(&self, blob: &Blob) -> Result<Outcome, RegistryError> {
        let action = format!("pushing blob {}", short_digest(&blob.digest));
        let fail = |e| classify(e, self.endpoint, self.shown, &action);
        if self
            .client
            .blob_exists(self.target, &blob.digest)
            .await
            .map_err(fail)?
        {
            self.progress
                .blob(&blob.digest, blob.size, "")
                .finish("Layer already exists");
            return Ok(Outcome::Present);
        }
        for source in self.mount_from {
            let from = oci_reference(source, None, None);
            if self
                .client
                .mount_blob(self.target, &from, &blob.digest)
                .await
                .is_ok()
            {
                self.progress
                    .blob(&blob.digest, blob.size, "")
                    .finish(&format!("Mounted from {}", source.repository));
                return Ok(Outcome::Mounted);
            }
        }
        let bar = self.progress.blob(&blob.digest, blob.size, "Pushing");
        let file =
            std::fs::File::open(&blob.path).map_err(ImageError::io("read blob", &blob.path))?;
        let result = self
            .client
            .push_blob_stream(
                self.target,
                file_stream(file, bar.clone()),
                &blob.digest,
                Some(blob.size),
            )
            .await;
        match result {
            Ok(_) => {
                bar.finish("Pushed");
                Ok(Outcome::Uploaded)
            }
            Err(e) => {
                bar.abandon("Failed");
                Err(fail(e))
            }
        }
    }
}

/// A file as a stream of 1 MiB chunks, counted on `bar`.
fn file_stream(
    file: std::fs::File,
    bar: BlobProgress,
) -> impl futures_util::Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static {
    stream::try_unfold((file, bar), |(mut file, bar)| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = loop {
            match file.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OciDistributionError::IoError(e)),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        bar.inc(n as u64);
        Ok(Some((Bytes::from(buf), (file, bar))))
    })
}
