//! Root filesystem drivers and the unpacked-layer store.
