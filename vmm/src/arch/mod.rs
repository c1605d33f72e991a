//! Architecture-specific boot state. Only x86_64 boots guests so far; aarch64 builds without it.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
