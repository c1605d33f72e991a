//! Images: references, the content store, archive load, layer unpacking.
//!
//! - [`reference`]: Docker reference grammar and normalisation
//!   (`busybox` -> `docker.io/library/busybox:latest`).
//! - [`store`]: the content-addressed store (`blobs/sha256/<hex>`, `images.json`)
//!   and the API the engine uses: [`ImageStore::load_archive`],
//!   [`ImageStore::list`], [`ImageStore::resolve`].
//! - `archive`: reading `docker save` / `podman save` / OCI archives into the store.
//! - [`manage`]: `tag`, `rmi` (with blob clean-up), `image inspect`, `history`.
//! - [`registry`]: `pull`, `push`, `login`, `logout` and the registry settings.
//! - [`save`]: writing docker-archive and oci-archive files (`berth save`).
//! - [`unpack`]: applying one layer to a directory, safely and rootless, with
//!   OCI whiteouts turned into overlayfs whiteouts.

mod archive;
mod commit;
mod compression;
pub mod manage;
pub mod reference;
pub mod registry;
pub mod save;
pub mod store;
pub mod unpack;

#[cfg(test)]
mod testutil;

pub use commit::NewLayer;
pub use manage::{ContainerUse, HistoryEntry, ImageInspect, ImageRemoval, PruneReport};
pub use reference::{Reference, ReferenceError};
pub use save::ArchiveFormat;
pub use store::{ImageError, ImageStore, ImageSummary, LayerRef, LoadedImage, ResolvedImage};
pub use unpack::{is_whiteout, unpack_layer, UnpackError, UnpackReport, OPAQUE_XATTR};
