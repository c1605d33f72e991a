//! Images: references, the content store, archive load/save, layer unpacking.
