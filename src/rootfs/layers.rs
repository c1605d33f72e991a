//! The unpacked-layer store: `layers/<hex of diff id>/` holds each layer exactly once,
//! unpacked inside the user namespace so ownership lands on the mapped ids.

use std::path::{Path, PathBuf};

use crate::container::idmap::IdMapping;
use crate::container::userns::run_in_userns;
use crate::image::{unpack_layer, LayerRef};

use super::RootfsError;

/// Where unpacked layers live.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    pub fn new(root: PathBuf) -> LayerStore {
        LayerStore { root }
    }

    /// The store of the same layers unpacked under another id map, named `name`.
    pub fn variant(&self, name: &str) -> LayerStore {
        LayerStore {
            root: self.root.join(name),
        }
    }

    /// The stores made with [`Self::variant`] so far.
    pub fn variants(&self) -> Vec<LayerStore> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("keep-id-"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| LayerStore { root: e.path() })
            .collect()
    }

    /// The directory of an unpacked layer.
    pub fn path(&self, diff_id: &str) -> PathBuf {
        self.root.join(diff_id.trim_start_matches("sha256:"))
    }

    /// Unpacks every layer not yet unpacked and returns their directories, bottom first.
    /// Concurrent callers wait for each other per layer (flock), so a layer is unpacked once.
    pub fn ensure(
        &self,
        layers: &[LayerRef],
        ids: &IdMapping,
    ) -> Result<Vec<PathBuf>, RootfsError> {
        std::fs::create_dir_all(&self.root).map_err(super::io("creating", &self.root))?;
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            let dest = self.path(&layer.diff_id);
            if !dest.exists() {
                self.unpack_locked(layer, &dest, ids)?;
            }
            out.push(dest);
        }
        Ok(out)
    }

    fn unpack_locked(
        &self,
        layer: &LayerRef,
        dest: &Path,
        ids: &IdMapping,
    ) -> Result<(), RootfsError> {
        let _lock = super::lock_exclusive(&dest.with_extension("lock"))?;
        if dest.exists() {
            return Ok(());
        }
        let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
        let stale = tmp.clone();
        let l = layer.clone();
        let d = dest.to_path_buf();
        let result = run_in_userns(ids, move || {
            let _ = std::fs::remove_dir_all(&stale);
            std::fs::create_dir(&stale)
                .map_err(|e| format!("creating {}: {e}", stale.display()))?;
            let report = unpack_layer(&l, &stale).map_err(|e| e.to_string())?;
            for warning in &report.skipped {
                eprintln!("warning: layer {}: {warning}", &l.diff_id);
            }
            std::fs::rename(&stale, &d)
                .map_err(|e| format!("moving the unpacked layer into place: {e}"))
        });
        if let Err(e) = result {
            let _ = super::remove_owned_tree(vec![tmp], ids);
            return Err(RootfsError::Unpack {
                diff_id: layer.diff_id.clone(),
                message: e.to_string(),
            });
        }
        Ok(())
    }
}
