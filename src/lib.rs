//! berth: a rootless developer sandbox. The library is the engine; `main.rs` is a thin CLI over it.
//!
//! Dependencies point down: `engine` -> {`image`, `rootfs`, `spec`, `state`, `net`} -> `container`.

pub mod api;
pub mod attach;
pub mod bench;
pub mod clock;
pub mod container;
pub mod engine;
pub mod image;
pub mod inroot;
pub mod monitor;
pub mod net;
pub mod paths;
pub mod rootfs;
pub mod spec;
pub mod state;
pub mod system;
pub mod term;
#[cfg(test)]
mod testing;
pub mod vm;
