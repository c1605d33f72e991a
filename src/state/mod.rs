//! Container records on disk.
