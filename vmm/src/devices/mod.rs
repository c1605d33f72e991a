//! The emulated devices of the microVM and the buses the vCPUs reach them through.

pub mod boot_timer;
pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

pub use boot_timer::BootTimer;
pub use bus::{Bus, BusDevice};
pub use i8042::I8042;
pub use serial::SerialConsole;
