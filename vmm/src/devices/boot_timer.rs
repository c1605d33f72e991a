//! The boot timer (as Firecracker's): the guest writes [`BOOT_COMPLETE`] to the first byte of
//! the boot-timer page when it has booted (the tiny test guest after its first output, the
//! guest agent once it runs), and berth records how long that took since the VMM started.
//!
//! Guest-physical address: [`BOOT_TIMER_ADDR`] (0xd0000000, the first page of the 32-bit MMIO
//! gap), one page long. Reads return zeros.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::BusDevice;

/// The boot timer's MMIO page.
pub const BOOT_TIMER_ADDR: u64 = crate::memory::MMIO_GAP_START;
pub const BOOT_TIMER_LEN: u64 = 0x1000;
/// The value that signals "booted" (Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE).
pub const BOOT_COMPLETE: u8 = 123;

/// Records the first boot-complete signal.
pub struct BootTimer {
    start: Instant,
    booted: Arc<OnceLock<Duration>>,
}

impl BootTimer {
    /// A timer counting from `start` (when the VMM started).
    pub fn new(start: Instant) -> BootTimer {
        BootTimer {
            start,
            booted: Arc::new(OnceLock::new()),
        }
    }

    /// Where the boot time appears once the guest signals it.
    pub fn boot_time(&self) -> Arc<OnceLock<Duration>> {
        self.booted.clone()
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_COMPLETE) {
            // Later signals (a guest that reboots into itself) keep the first boot's time.
            let _ = self.booted.set(self.start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_first_boot_complete_write_only() {
        let mut timer = BootTimer::new(Instant::now());
        let time = timer.boot_time();
        timer.write(0, &[1]);
        timer.write(8, &[BOOT_COMPLETE]);
        assert!(time.get().is_none());
        timer.write(0, &[BOOT_COMPLETE]);
        let first = *time.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        timer.write(0, &[BOOT_COMPLETE]);
        assert_eq!(*time.get().unwrap(), first);
    }
}
