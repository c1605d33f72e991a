//! `berth pull`: a manifest (or an index and the manifest for one platform),
//! its config and layers, each blob streamed into the store and checked
//! against its descriptor's digest and size on the way.
//!
//! Order of work: manifest, platform choice, config (checked against the
//! manifest before any layer moves), layers in parallel, then the manifest
//! blob and finally the image record. A blob the store has is not fetched;
//! a failure leaves the store's images as they were (verified blobs that
//! arrived stay, under their true digest, for the next try).

use std::collections::BTreeSet;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::Client;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::progress::{short_digest, Progress, ProgressMode};
use super::{
    attempts, block_on, classify, oci_reference, registry_auth, Endpoint, RegistriesConfig,
    RegistryError,
};
use crate::image::archive::{
    check_diff_ids, host_platform, kind_of, supported_config, supported_layer, Kind,
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
};
use crate::image::reference::Reference;
use crate::image::store::{ImageError, ImageRecord, ImageStore, MAX_JSON_BYTES};

/// The manifest media types berth asks for.
const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `os/arch[/variant]` to pick from an index; the host's by default.
    pub platform: Option<String>,
    /// Verify TLS certificates (and use https for registries not marked insecure).
    pub tls_verify: bool,
    /// How much to report.
    pub progress: ProgressMode,
    /// The credentials to use (an API client's); the auth file's for the registry without.
    pub credentials: Option<super::Credentials>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            tls_verify: true,
            progress: ProgressMode::Auto,
            credentials: None,
        }
    }
}

/// What a pull brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// `sha256:` of the image config (the image id).
    pub id: String,
    /// The canonical reference pulled.
    pub reference: String,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// Blobs downloaded (0 when the store had everything).
    pub downloaded: usize,
}

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// OCI architecture (`amd64`, `arm64`, ...).
    pub arch: String,
    /// `v7`, `v8`, ... when given.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this machine runs.
    pub fn host() -> Platform {
        let (os, arch) = host_platform();
        Platform {
            os: os.into(),
            arch: arch.into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]` (Go's and Rust's names for the architecture both work).
    pub fn parse(text: &str) -> Result<Platform, RegistryError> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = (2..=3).contains(&parts.len())
            && parts.iter().all(|p| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !ok {
            return Err(RegistryError::Platform(text.to_string()));
        }
        let arch = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "i386" | "i686" => "386",
            a => a,
        };
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            arch: arch.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The variant an image without one is taken to have.
    fn default_variant(&self) -> Option<&'static str> {
        match self.arch.as_str() {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        }
    }

    /// Picks the manifest for this platform from an index: same os and
    /// arch, the variant asked for (an absent variant is the default one),
    /// preferring the default variant when none is asked for.
    pub(crate) fn select<'a>(&self, index: &'a ImageIndex) -> Result<&'a Descriptor, String> {
        let mut available = Vec::new();
        let mut fallback = None;
        let images: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|m| !matches!(kind_of(m.media_type()), Kind::Other))
            .collect();
        for m in &images {
            let Some(p) = m.platform() else { continue };
            let variant = p.variant().as_deref().filter(|v| !v.is_empty());
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            if os == "unknown" {
                continue;
            }
            available.push(match variant {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            });
            if os != self.os || arch != self.arch {
                continue;
            }
            let effective = variant.or(self.default_variant());
            match self.variant.as_deref() {
                Some(want) if Some(want) == effective || Some(want) == variant => return Ok(m),
                Some(_) => {}
                None if effective == self.default_variant() => return Ok(m),
                None => {
                    fallback.get_or_insert(*m);
                }
            }
        }
        if let Some(m) = fallback {
            return Ok(m);
        }
        // An index without platforms: take its only image.
        if images.len() == 1 && images[0].platform().is_none() {
            return Ok(images[0]);
        }
        Err(if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest document as the registry sent it.
enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or index, refusing schema 1 and unknown media types.
fn parse_document(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::Invalid(format!(
            "{what} is larger than {} MiB",
            MAX_JSON_BYTES >> 20
        )));
    }
    let malformed = |source| ImageError::MalformedJson {
        what: what.to_string(),
        source,
    };
    let v: Versioned = serde_json::from_slice(bytes).map_err(malformed)?;
    if v.schema_version != Some(2) {
        return Err(ImageError::UnsupportedMediaType {
            what: what.to_string(),
            media_type: format!(
                "schema version {} (Docker schema 1 is obsolete)",
                v.schema_version.map_or("none".into(), |n| n.to_string())
            ),
        });
    }
    let is_index = match v.media_type.as_deref() {
        Some(t) if ACCEPTED[..1].contains(&t) || t == DOCKER_MANIFEST => false,
        Some(t) if t == ACCEPTED[1] || t == DOCKER_MANIFEST_LIST => true,
        Some(other) => {
            return Err(ImageError::UnsupportedMediaType {
                what: what.to_string(),
                media_type: other.to_string(),
            })
        }
        None => v.manifests.is_some(),
    };
    Ok(if is_index {
        Document::Index(Box::new(serde_json::from_slice(bytes).map_err(malformed)?))
    } else {
        Document::Manifest(Box::new(serde_json::from_slice(bytes).map_err(malformed)?))
    })
}

/// Checks that berth can use what a manifest names.
fn check_manifest(manifest: &ImageManifest, what: &str) -> Result<(), ImageError> {
    let config = manifest.config();
    if !supported_config(config.media_type()) {
        return Err(ImageError::UnsupportedMediaType {
            what: format!("config of {what}"),
            media_type: config.media_type().to_string(),
        });
    }
    for layer in manifest.layers() {
        if !supported_layer(layer.media_type()) {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("layer {} of {what}", layer.digest()),
                media_type: layer.media_type().to_string(),
            });
        }
    }
    for d in std::iter::once(config).chain(manifest.layers()) {
        if d.digest().algorithm().to_string() != "sha256" {
            return Err(ImageError::Invalid(format!(
                "{what} names {} which is not a sha256 digest, which berth requires",
                d.digest()
            )));
        }
    }
    Ok(())
}

/// Pulls `reference` into `store`, from its mirrors first when it has some.
pub fn pull(
    store: &ImageStore,
    config: &RegistriesConfig,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PulledImage, RegistryError> {
    let platform = match &opts.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    store.remove_stale_temp_blobs();
    let progress = Progress::new(&opts.progress);
    let endpoints = config.pull_endpoints(reference);
    block_on(async {
        let mut result = Err(RegistryError::NotFound {
            reference: reference.to_string(),
            registry: reference.registry.clone(),
        });
        for endpoint in &endpoints {
            for attempt in attempts(endpoint, opts.tls_verify) {
                result = pull_from(store, &attempt, reference, &platform, opts, &progress).await;
                if !matches!(result, Err(RegistryError::Unreachable { .. })) {
                    break;
                }
            }
            match &result {
                Err(e) if endpoint.mirror => {
                    progress.line(&format!("mirror {} failed: {e}", endpoint.host));
                }
                _ => break,
            }
        }
        result
    })?
}

async fn pull_from(
    store: &ImageStore,
    endpoint: &Endpoint,
    reference: &Reference,
    platform: &Platform,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PulledImage, RegistryError> {
    let shown = reference.to_string();
    let client = super::client(endpoint, opts.tls_verify)?;
    let auth = registry_auth(endpoint, opts.credentials.as_ref())?;
    let top = oci_reference(
        endpoint,
        reference.tag.as_deref(),
        reference.digest.as_deref(),
    );
    if endpoint.mirror {
        progress.line(&format!(
            "Trying to pull {shown} from mirror {}...",
            endpoint.host
        ));
    } else {
        progress.line(&format!("Trying to pull {shown}..."));
    }
    let fail = |e, action: &str| classify(e, endpoint, &shown, action);
    let (bytes, digest) = client
        .pull_manifest_raw(&top, &auth, ACCEPTED)
        .await
        .map_err(|e| fail(e, "fetching the manifest"))?;
    let (bytes, manifest_digest, manifest) = match parse_document(
        &bytes,
        &format!("manifest of {shown}"),
    )? {
        Document::Manifest(m) => (bytes, digest, *m),
        Document::Index(index) => {
            let chosen =
                platform
                    .select(&index)
                    .map_err(|available| RegistryError::NoMatchingPlatform {
                        reference: shown.clone(),
                        wanted: platform.to_string(),
                        available,
                    })?;
            let chosen_digest = chosen.digest().to_string();
            let by_digest = top.clone_with_digest(chosen_digest.clone());
            // The client checks the body against the digest in the reference.
            let (bytes, digest) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                .await
                .map_err(|e| fail(e, "fetching the platform's manifest"))?;
            if bytes.len() as u64 != chosen.size() {
                return Err(ImageError::SizeMismatch {
                    what: format!("manifest {chosen_digest}"),
                    expected: chosen.size(),
                    actual: bytes.len() as u64,
                }
                .into());
            }
            match parse_document(&bytes, &format!("manifest {chosen_digest}"))? {
                    Document::Manifest(m) => (bytes, digest, *m),
                    Document::Index(_) => {
                        return Err(ImageError::Invalid(format!(
                            "the index of {shown} names another index for {platform}; berth follows one level"
                        ))
                        .into())
                    }
                }
        }
    };
    check_manifest(&manifest, &format!("manifest {manifest_digest}"))?;
    let config_desc = manifest.config();
    let id = config_desc.digest().to_string();
    let names = match &reference.tag {
        Some(_) => vec![Reference {
            digest: None,
            ..reference.clone()
        }
        .to_string()],
        None => Vec::new(),
    };

    // Config first: it must match the manifest before any layer is fetched.
    let fetcher = Fetcher {
        client: &client,
        reference: &top,
        store,
        progress,
        endpoint,
        shown: &shown,
    };
    let mut downloaded = fetcher.fetch(config_desc, "config", false).await? as usize;
    let config_bytes = store.read_blob_json(&id)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|source| ImageError::MalformedJson {
            what: format!("config {id}"),
            source,
        })?;
    check_diff_ids(&config, manifest.layers().len())?;

    let mut seen = BTreeSet::new();
    let layers: Vec<&Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| seen.insert(l.digest().to_string()))
        .collect();
    let fetched: Vec<bool> = stream::iter(layers)
        .map(|layer| fetcher.fetch(layer, "layer", true))
        .buffer_unordered(super::PARALLEL_BLOBS)
        .try_collect()
        .await?;
    downloaded += fetched.iter().filter(|f| **f).count();

    store.write_blob(&bytes[..], &manifest_digest)?;
    let size = config_desc.size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
    store.add_images(vec![ImageRecord {
        id: id.clone(),
        manifest_digest: manifest_digest.clone(),
        names,
        created: config.created().clone(),
        size,
        layers_size: None,
    }])?;
    progress.line(&format!("Digest: {manifest_digest}"));
    progress.line(&if downloaded == 0 {
        format!("Status: Image is up to date for {shown}")
    } else {
        format!("Status: Downloaded newer image for {shown}")
    });
    Ok(PulledImage {
        id,
        reference: shown,
        manifest_digest,
        downloaded,
    })
}

/// Streams blobs of one repository into the store.
struct Fetcher<'a> {
    client: &'a Client,
    reference: &'a oci_client::Reference,
    store: &'a ImageStore,
    progress: &'a Progress,
    endpoint: &'a Endpoint,
    shown: &'a str,
}

impl Fetcher<'_> {
    /// Fetches one blob unless the store has it; true when it was downloaded.
    async fn fetch(
        &self,
        desc: &Descriptor,
        what: &str,
        show: bool,
    ) -> Result<bool, RegistryError> {
        let digest = desc.digest().to_string();
        let size = desc.size();
        if self.store.blob_size(&digest) == Some(size) {
            if show {
                self.progress
                    .blob(&digest, size, "")
                    .finish("Already exists");
            }
            return Ok(false);
        }
        let bar = if show {
            Some(self.progress.blob(&digest, size, "Downloading"))
        } else {
            None
        };
        let result = self.download(&digest, size, what, bar.as_ref()).await;
        if let Some(bar) = &bar {
            match &result {
                Ok(()) => bar.finish("Pull complete"),
                Err(_) => bar.abandon("Failed"),
            }
        }
        result.map(|()| true)
    }

    async fn download(
        &self,
        digest: &str,
        size: u64,
        what: &str,
        bar: Option<&super::progress::BlobProgress>,
    ) -> Result<(), RegistryError> {
        let mut writer = self.store.blob_writer(digest, what, Some(size))?;
        let mut stream = self
            .client
            .pull_blob_stream(self.reference, digest)
            .await
            .map_err(|e| {
                classify(
                    e,
                    self.endpoint,
                    self.shown,
                    &format!("fetching {what} {}", short_digest(digest)),
                )
            })?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    writer.write(&bytes)?;
                    if let Some(bar) = bar {
                        bar.inc(bytes.len() as u64);
                    }
                }
                // The client checks digests too, and reports a mismatch as a
                // stream error at the end: say it in the store's words.
                Err(e) => {
                    let what = format!("{what} {digest}");
                    return Err(if writer.written() != size {
                        ImageError::SizeMismatch {
                            what,
                            expected: size,
                            actual: writer.written(),
                        }
                    } else if writer.digest_so_far() != digest {
                        ImageError::DigestMismatch {
                            what,
                            expected: digest.to_string(),
                            actual: writer.digest_so_far(),
                        }
                    } else {
                        ImageError::Io {
                            action: "download",
                            path: what.into(),
                            source: e,
                        }
                    }
                    .into());
                }
            }
        }
        writer.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", i.to_string().repeat(64)),
                    "size": 100,
                    "platform": p,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap()
    }

    fn pick(idx: &ImageIndex, platform: &str) -> Result<char, String> {
        Platform::parse(platform)
            .unwrap()
            .select(idx)
            .map(|d| d.digest().digest().chars().next().unwrap())
    }

    #[test]
    fn platforms_parse() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(
            (p.os.as_str(), p.arch.as_str(), p.variant.as_deref()),
            ("linux", "arm64", Some("v8"))
        );
        assert_eq!(Platform::parse("linux/x86_64").unwrap().arch, "amd64");
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_os_arch_and_variant() {
        let idx = index(&[
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v8")),
            ("unknown", "unknown", None),
        ]);
        assert_eq!(pick(&idx, "linux/amd64"), Ok('0'));
        assert_eq!(pick(&idx, "linux/arm"), Ok('2'));
        assert_eq!(pick(&idx, "linux/arm/v6"), Ok('1'));
        assert_eq!(pick(&idx, "linux/arm64"), Ok('3'));
        assert_eq!(pick(&idx, "linux/arm64/v8"), Ok('3'));
        let err = pick(&idx, "linux/s390x").unwrap_err();
        assert_eq!(
            err,
            "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8"
        );
        // An arm64 entry without a variant is v8.
        let idx = index(&[("linux", "arm64", None), ("linux", "arm", Some("v6"))]);
        assert_eq!(pick(&idx, "linux/arm64/v8"), Ok('0'));
        // Only a non-default variant: taken when no variant is asked for.
        assert_eq!(pick(&idx, "linux/arm"), Ok('1'));
        assert!(pick(&idx, "linux/arm/v7").is_err());
    }

    #[test]
    fn documents_by_media_type() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,
                      "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},
            "layers":[]}"#;
        assert!(matches!(parse_document(m, "m"), Ok(Document::Manifest(_))));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_document(i, "i"), Ok(Document::Index(_))));
        let odd = br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#;
        let err = parse_document(odd, "manifest of x").err().unwrap();
        assert!(
            err.to_string()
                .contains("application/vnd.example.thing+json"),
            "{err}"
        );
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(parse_document(v1, "m").is_err());
        assert!(parse_document(b"nope", "m").is_err());
    }

    #[test]
    fn manifests_with_foreign_layers_are_refused() {
        let m: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1,
                       "digest": format!("sha256:{}", "0".repeat(64))},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted", "size": 1,
                        "digest": format!("sha256:{}", "1".repeat(64))}],
        }))
        .unwrap();
        let err = check_manifest(&m, "manifest x").unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }
}
