//! Managing stored images: `tag`, `rmi`, `image prune`, `image inspect`, `history`.
//!
//! Every change goes through [`ImageStore::update_index`], so it happens under
//! the store lock and replaces `images.json` atomically. Removing an image
//! deletes the blobs no remaining image refers to while the lock is held; the
//! unpacked layers it frees are returned to the caller (the engine), which
//! owns the layer store and the id mapping needed to delete them.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;

use super::reference::{self, Reference};
use super::store::{find_image, ImageError, ImageRecord, ImageStore};

/// A container as `rmi` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    /// The container's id (64 hex).
    pub id: String,
    /// `sha256:<hex>` of the image it was created from.
    pub image_id: String,
    /// Whether it is running now.
    pub running: bool,
}

/// What removing one reference did, in the order Docker prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRemoval {
    /// Names taken off the image, in familiar form (`busybox:latest`).
    pub untagged: Vec<String>,
    /// The image id, when the image itself was deleted.
    pub deleted: Option<String>,
    /// Diff ids of unpacked layers that no remaining image uses.
    pub unused_layers: Vec<String>,
}

/// What `berth image prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Ids of the images deleted.
    pub deleted: Vec<String>,
    /// Names those images had, in familiar form (with `all`).
    pub untagged: Vec<String>,
    /// Bytes of the images deleted (compressed layers and configs).
    pub reclaimed: u64,
    /// Diff ids of unpacked layers that no remaining image uses.
    pub unused_layers: Vec<String>,
}

/// `berth image inspect`: the fields of Docker's `ImageInspect`, in its order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: InspectConfig,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: u64,
    #[serde(rename = "RootFS")]
    pub root_fs: InspectRootFs,
}

/// The container config part of [`ImageInspect`], with Docker's nulls.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// `RootFS` of [`ImageInspect`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectRootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

/// One row of `berth history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The image id on the newest row; `None` (shown `<missing>`) below it.
    pub id: Option<String>,
    /// RFC 3339 time the step ran, if recorded.
    pub created: Option<String>,
    /// The command that made the step.
    pub created_by: String,
    /// Bytes the step's layer adds (0 for a step without a layer).
    pub size: u64,
    /// The step's comment.
    pub comment: String,
    /// The step made no layer (`ENV`, `CMD`, ...).
    pub empty_layer: bool,
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn familiar(canonical: &str) -> String {
    reference::parse(canonical)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| canonical.to_string())
}

/// A name as stored: canonical, with a tag and no digest.
pub(crate) fn canonical_tag(r: &Reference) -> String {
    Reference {
        digest: None,
        tag: r.tag.clone().or_else(|| Some("latest".into())),
        ..r.clone()
    }
    .to_string()
}

impl ImageStore {
    /// Gives the image `source` names the additional name `target`
    /// (`NAME[:TAG]`, `latest` by default); the name leaves any image that had it.
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let r = reference::parse(target)?;
        if r.digest.is_some() {
            return Err(ImageError::Usage(format!(
                "refusing to create a tag with a digest reference: {target}; give NAME[:TAG]"
            )));
        }
        let name = canonical_tag(&r);
        self.update_index(|index| {
            let id = find_image(&index.images, source)?.0.id.clone();
            for rec in index.images.iter_mut() {
                if rec.id == id {
                    if !rec.names.contains(&name) {
                        rec.names.push(name.clone());
                    }
                } else {
                    rec.names.retain(|n| n != &name);
                }
            }
            Ok(())
        })
    }

    /// Removes `reference` as `docker rmi` does: a name that is one of several
    /// is only untagged; the last name, or the id, deletes the image with the
    /// blobs no other image uses. An image a container uses is refused unless
    /// `force` (and always when that container runs).
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        containers: &[ContainerUse],
    ) -> Result<ImageRemoval, ImageError> {
        // `NAME[:TAG]` removes a name; an id or `NAME@DIGEST` removes the image.
        let by_name = match reference::parse(reference) {
            Ok(r) if r.digest.is_none() => Some(canonical_tag(&r)),
            _ => None,
        };
        self.update_index(|index| {
            let (record, matched) = find_image(&index.images, reference)?;
            let record = record.clone();
            let using = |running: bool| {
                containers
                    .iter()
                    .find(|c| c.image_id == record.id && c.running == running)
            };
            let mut removal = ImageRemoval::default();
            match by_name.filter(|_| matched.is_some()) {
                Some(name) => {
                    if record.names.len() > 1 {
                        untag(index, &record.id, &name);
                        removal.untagged.push(familiar(&name));
                        return Ok(removal);
                    }
                    if !force {
                        if let Some(c) = using(true).or_else(|| using(false)) {
                            return Err(ImageError::Conflict(format!(
                                "unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
                                short(&c.id),
                                short(&record.id)
                            )));
                        }
                    }
                }
                None => {
                    if record.names.len() > 1 && !force {
                        return Err(ImageError::Conflict(format!(
                            "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                            short(&record.id)
                        )));
                    }
                }
            }
            if let Some(c) = using(true) {
                return Err(ImageError::Conflict(format!(
                    "unable to delete {} (cannot be forced) - image is being used by running container {}",
                    short(&record.id),
                    short(&c.id)
                )));
            }
            if let (false, Some(c)) = (force, using(false)) {
                return Err(ImageError::Conflict(format!(
                    "unable to delete {} (must be forced) - image is being used by stopped container {}",
                    short(&record.id),
                    short(&c.id)
                )));
            }
            removal.untagged = record.names.iter().map(|n| familiar(n)).collect();
            index.images.retain(|r| r.id != record.id);
            removal.unused_layers = self.delete_unused_blobs(&record, &index.images)?;
            removal.deleted = Some(record.id.clone());
            Ok(removal)
        })
    }

    /// `berth image prune`: deletes the images without a name (every image
    /// with `all`) that no container uses, and that are among `only` when given,
    /// with the blobs no other image needs.
    pub fn prune(
        &self,
        all: bool,
        containers: &[ContainerUse],
        only: Option<&BTreeSet<String>>,
    ) -> Result<PruneReport, ImageError> {
        self.update_index(|index| {
            let (doomed, kept): (Vec<ImageRecord>, Vec<ImageRecord>) =
                std::mem::take(&mut index.images)
                    .into_iter()
                    .partition(|r| {
                        (all || r.names.is_empty())
                            && !containers.iter().any(|c| c.image_id == r.id)
                            && only.is_none_or(|o| o.contains(&r.id))
                    });
            index.images = kept;
            let mut report = PruneReport::default();
            for rec in &doomed {
                for d in self.delete_unused_blobs(rec, &index.images)? {
                    if !report.unused_layers.contains(&d) {
                        report.unused_layers.push(d);
                    }
                }
                report
                    .untagged
                    .extend(rec.names.iter().map(|n| familiar(n)));
                report.deleted.push(rec.id.clone());
                report.reclaimed += rec.size;
            }
            Ok(report)
        })
    }

    /// Deletes the blobs of `gone` that no image of `remaining` refers to, and
    /// returns the diff ids of `gone` that no remaining image has. When a
    /// remaining image cannot be read, nothing is deleted (it might share them).
    fn delete_unused_blobs(
        &self,
        gone: &ImageRecord,
        remaining: &[ImageRecord],
    ) -> Result<Vec<String>, ImageError> {
        let mut kept_blobs = BTreeSet::new();
        let mut kept_layers = BTreeSet::new();
        for rec in remaining {
            let Ok((blobs, diff_ids)) = self.image_parts(rec) else {
                return Ok(Vec::new());
            };
            kept_blobs.extend(blobs);
            kept_layers.extend(diff_ids);
        }
        let (blobs, diff_ids) = match self.image_parts(gone) {
            Ok(parts) => parts,
            // Its manifest or config is gone already: delete what is named.
            Err(_) => (vec![gone.manifest_digest.clone(), gone.id.clone()], vec![]),
        };
        for digest in blobs.iter().filter(|d| !kept_blobs.contains(*d)) {
            if let Some(path) = self.blob_path(digest) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io("remove blob", &path)(e)),
                }
            }
        }
        let mut unused: Vec<String> = Vec::new();
        for d in diff_ids {
            if !kept_layers.contains(&d) && !unused.contains(&d) {
                unused.push(d);
            }
        }
        Ok(unused)
    }

    /// The blobs (manifest, config, layers) and diff ids of an image.
    fn image_parts(&self, rec: &ImageRecord) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let manifest = self.manifest_of(rec)?;
        let config = self.config_of(rec)?;
        let mut blobs = vec![rec.manifest_digest.clone(), rec.id.clone()];
        blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        Ok((blobs, config.rootfs().diff_ids().clone()))
    }

    /// Diff ids of every stored image's layers.
    pub fn diff_ids_in_use(&self) -> Result<BTreeSet<String>, ImageError> {
        let mut used = BTreeSet::new();
        for rec in self.read_index()?.images {
            used.extend(self.config_of(&rec)?.rootfs().diff_ids().iter().cloned());
        }
        Ok(used)
    }

    fn manifest_of(&self, rec: &ImageRecord) -> Result<ImageManifest, ImageError> {
        let bytes = self.read_blob_json(&rec.manifest_digest)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::MalformedJson {
            what: format!("stored manifest {}", rec.manifest_digest),
            source,
        })
    }

    fn config_of(&self, rec: &ImageRecord) -> Result<ImageConfiguration, ImageError> {
        let bytes = self.read_blob_json(&rec.id)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::MalformedJson {
            what: format!("stored config {}", rec.id),
            source,
        })
    }

    /// The image record `reference` names (by name or id).
    pub(crate) fn find_record(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let index = self.read_index()?;
        Ok(find_image(&index.images, reference)?.0.clone())
    }

    /// `berth image inspect`: Docker's view of one image.
    pub fn inspect(&self, reference: &str) -> Result<ImageInspect, ImageError> {
        let rec = self.find_record(reference)?;
        let config = self.config_of(&rec)?;
        let raw: serde_json::Value = serde_json::from_slice(&self.read_blob_json(&rec.id)?)
            .map_err(|source| ImageError::MalformedJson {
                what: format!("stored config {}", rec.id),
                source,
            })?;
        let text = |key: &str| {
            raw.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let names: Vec<Reference> = rec
            .names
            .iter()
            .filter_map(|n| reference::parse(n).ok())
            .collect();
        let mut repo_digests = Vec::new();
        for r in &names {
            let d = format!("{}@{}", r.familiar_name(), rec.manifest_digest);
            if !repo_digests.contains(&d) {
                repo_digests.push(d);
            }
        }
        let set = |v: &Option<Vec<String>>| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|k| (k.clone(), serde_json::json!({})))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let c = config.config().clone().unwrap_or_default();
        Ok(ImageInspect {
            id: rec.id.clone(),
            repo_tags: names.iter().map(Reference::familiar).collect(),
            repo_digests,
            parent: String::new(),
            comment: text("comment"),
            created: config
                .created()
                .clone()
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            docker_version: text("docker_version"),
            author: config.author().clone().unwrap_or_default(),
            config: InspectConfig {
                user: c.user().clone().unwrap_or_default(),
                exposed_ports: set(c.exposed_ports()),
                env: c.env().clone(),
                cmd: c.cmd().clone(),
                volumes: set(c.volumes()),
                working_dir: c.working_dir().clone().unwrap_or_default(),
                entrypoint: c.entrypoint().clone(),
                labels: c
                    .labels()
                    .as_ref()
                    .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                stop_signal: c.stop_signal().clone(),
            },
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
            os: config.os().to_string(),
            size: self.layers_size(&rec),
            root_fs: InspectRootFs {
                kind: config.rootfs().typ().clone(),
                layers: config.rootfs().diff_ids().clone(),
            },
        })
    }

    /// `berth history`: the config's history, newest first, each step that
    /// made a layer paired with that layer's size.
    pub fn history(&self, reference: &str) -> Result<Vec<HistoryEntry>, ImageError> {
        let rec = self.find_record(reference)?;
        let config = self.config_of(&rec)?;
        let manifest = self.manifest_of(&rec)?;
        let mut sizes = manifest.layers().iter().map(|l| l.size());
        let mut rows = Vec::new();
        for h in config.history().iter().flatten() {
            let empty = h.empty_layer().unwrap_or(false);
            rows.push(HistoryEntry {
                id: None,
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size: if empty { 0 } else { sizes.next().unwrap_or(0) },
                comment: h.comment().clone().unwrap_or_default(),
                empty_layer: empty,
            });
        }
        // Layers the history does not account for still show, as Docker shows them.
        for size in sizes {
            rows.push(HistoryEntry {
                id: None,
                created: None,
                created_by: String::new(),
                size,
                comment: String::new(),
                empty_layer: false,
            });
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            top.id = Some(rec.id.clone());
        }
        Ok(rows)
    }
}

fn untag(index: &mut super::store::ImageIndexFile, id: &str, name: &str) {
    if let Some(rec) = index.images.iter_mut().find(|r| r.id == id) {
        rec.names.retain(|n| n != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{gzip, layer_one, layer_two, oci_image};

    fn store_with_two_images() -> (tempfile::TempDir, ImageStore, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (l1, l2) = (layer_one(), layer_two());
        let a = dir.path().join("a.tar");
        oci_image(
            &[gzip(&l1)],
            std::slice::from_ref(&l1),
            Some("localhost/a:1"),
        )
        .0
        .write(&a);
        let b = dir.path().join("b.tar");
        oci_image(&[gzip(&l1), gzip(&l2)], &[l1, l2], Some("localhost/b:1"))
            .0
            .write(&b);
        let a_id = store.load_archive(&a).unwrap()[0].id.clone();
        let b_id = store.load_archive(&b).unwrap()[0].id.clone();
        (dir, store, a_id, b_id)
    }

    fn blob_count(store: &ImageStore) -> usize {
        std::fs::read_dir(store.blob_dir()).unwrap().count()
    }

    #[test]
    fn tag_then_untag_then_delete() {
        let (_dir, store, a_id, _) = store_with_two_images();
        store.tag("localhost/a:1", "copy").unwrap();
        assert_eq!(store.resolve("copy:latest").unwrap().id, a_id);
        assert!(matches!(
            store.tag("localhost/a:1", &format!("x@sha256:{}", "0".repeat(64))),
            Err(ImageError::Usage(_)) | Err(ImageError::Reference(_))
        ));
        // By id with two names: refused without force.
        let err = store.remove(&a_id, false, &[]).unwrap_err();
        assert!(err.to_string().contains("multiple repositories"), "{err}");
        // By name: only untagged.
        let r = store.remove("copy", false, &[]).unwrap();
        assert_eq!(r.untagged, ["copy:latest"]);
        assert_eq!(r.deleted, None);
        assert!(store.resolve("copy").is_err());
        assert_eq!(store.resolve("localhost/a:1").unwrap().id, a_id);
    }

    #[test]
    fn remove_keeps_shared_blobs_and_reports_unused_layers() {
        let (_dir, store, a_id, b_id) = store_with_two_images();
        let before = blob_count(&store);
        let b = store.resolve(&b_id).unwrap();
        let shared = store.resolve(&a_id).unwrap().layers[0].clone();
        let r = store.remove("localhost/b:1", false, &[]).unwrap();
        assert_eq!(r.untagged, ["localhost/b:1"]);
        assert_eq!(r.deleted.as_deref(), Some(b_id.as_str()));
        assert_eq!(r.unused_layers, [b.layers[1].diff_id.clone()]);
        // b's manifest, config and second layer go; the shared layer stays.
        assert_eq!(blob_count(&store), before - 3);
        assert!(shared.blob_path.is_file());
        assert!(!b.layers[1].blob_path.exists());
        store.resolve(&a_id).unwrap();
        assert_eq!(
            store
                .diff_ids_in_use()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [shared.diff_id]
        );
    }

    #[test]
    fn containers_block_removal_unless_forced() {
        let (_dir, store, a_id, _) = store_with_two_images();
        let stopped = ContainerUse {
            id: "c".repeat(64),
            image_id: a_id.clone(),
            running: false,
        };
        let err = store
            .remove("localhost/a:1", false, std::slice::from_ref(&stopped))
            .unwrap_err();
        assert!(
            err.to_string().contains("must force") && err.to_string().contains("cccccccccccc"),
            "{err}"
        );
        let err = store
            .remove(&a_id, false, std::slice::from_ref(&stopped))
            .unwrap_err();
        assert!(err.to_string().contains("stopped container"), "{err}");
        let running = ContainerUse {
            running: true,
            ..stopped.clone()
        };
        let err = store
            .remove("localhost/a:1", true, std::slice::from_ref(&running))
            .unwrap_err();
        assert!(err.to_string().contains("cannot be forced"), "{err}");
        let r = store.remove("localhost/a:1", true, &[stopped]).unwrap();
        assert_eq!(r.deleted.as_deref(), Some(a_id.as_str()));
        // Its layer is b's too: not unused.
        assert!(r.unused_layers.is_empty());
    }

    #[test]
    fn prune_removes_untagged_images_no_container_uses() {
        let (_dir, store, a_id, b_id) = store_with_two_images();
        assert_eq!(
            store.prune(false, &[], None).unwrap(),
            PruneReport::default()
        );
        // Both lose their names; a container uses a.
        store
            .update_index(|i| {
                i.images.iter_mut().for_each(|r| r.names.clear());
                Ok(())
            })
            .unwrap();
        let user = ContainerUse {
            id: "c".repeat(64),
            image_id: a_id.clone(),
            running: false,
        };
        let b = store.resolve(&b_id).unwrap();
        let r = store
            .prune(false, std::slice::from_ref(&user), None)
            .unwrap();
        assert_eq!(r.deleted, std::slice::from_ref(&b_id));
        assert_eq!(r.unused_layers, [b.layers[1].diff_id.clone()]);
        assert!(!b.layers[1].blob_path.exists());
        assert!(b.layers[0].blob_path.exists(), "a still uses layer 1");
        store.resolve(&a_id).unwrap();
        let r = store.prune(true, &[], None).unwrap();
        assert_eq!(r.deleted, [a_id]);
        assert_eq!(blob_count(&store), 0);
    }

    #[test]
    fn inspect_and_history() {
        let (_dir, store, _, b_id) = store_with_two_images();
        let i = store.inspect("localhost/b:1").unwrap();
        assert_eq!(i.id, b_id);
        assert_eq!(i.repo_tags, ["localhost/b:1"]);
        assert_eq!(i.root_fs.kind, "layers");
        assert_eq!(i.root_fs.layers.len(), 2);
        let json = serde_json::to_value(&i).unwrap();
        for key in [
            "Id",
            "RepoTags",
            "RepoDigests",
            "Created",
            "Config",
            "RootFS",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        let h = store.history(&b_id).unwrap();
        // No history in the config: one row per layer, the newest first.
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].id.as_deref(), Some(b_id.as_str()));
        assert!(h[1..].iter().all(|r| r.id.is_none()));
    }
}
