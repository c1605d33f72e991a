//! `docker system df`: what the images, containers and volumes take on disk.

use std::path::{Path, PathBuf};

use super::{Engine, EngineError};
use crate::image::ImageInspect;
use crate::state::volumes::VolumeRecord;
use crate::state::ContainerRecord;

/// Disk use, by kind.
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
}

pub struct ImageUsage {
    pub image: ImageInspect,
    /// Containers made from it.
    pub containers: usize,
}

pub struct ContainerUsage {
    pub record: ContainerRecord,
    /// Bytes of its writable layer.
    pub size_rw: u64,
}

pub struct VolumeUsage {
    pub record: VolumeRecord,
    pub mountpoint: PathBuf,
    pub size: u64,
    /// Containers that mount it.
    pub users: usize,
}

/// Bytes of the files under `path` (not following links). Best effort: a directory the
/// container's ids keep from berth's own user is not counted.
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

impl Engine {
    /// `GET /system/df`.
    pub fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        let containers = self.containers();
        let images = self
            .images_matching(&[])?
            .into_iter()
            .map(|image| ImageUsage {
                containers: containers.iter().filter(|c| c.image_id == image.id).count(),
                image,
            })
            .collect();
        let volumes = self
            .volumes()
            .into_iter()
            .map(|record| {
                let mountpoint = self.volumes.data_dir(&record.name);
                VolumeUsage {
                    size: tree_size(&mountpoint),
                    users: containers
                        .iter()
                        .filter(|c| {
                            c.mounts
                                .iter()
                                .any(|m| m.name.as_deref() == Some(record.name.as_str()))
                        })
                        .count(),
                    mountpoint,
                    record,
                }
            })
            .collect();
        let containers = containers
            .into_iter()
            .map(|record| ContainerUsage {
                size_rw: record.writable.iter().map(|p| tree_size(p)).sum(),
                record,
            })
            .collect();
        Ok(DiskUsage {
            images,
            containers,
            volumes,
        })
    }
}
