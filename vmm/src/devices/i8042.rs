//! The i8042 keyboard controller, reduced to what a microVM needs: the CPU reset command
//! (0xfe written to port 0x64), which guests use to reboot and which berth turns into a clean
//! end of the VM.

use vm_superio::{I8042Device, Trigger};

use super::BusDevice;
use crate::{ExitReason, ExitSignal, VmEvent};

/// The controller's ports: data at 0x60, command/status at 0x64.
pub const I8042_BASE: u64 = 0x60;
pub const I8042_LEN: u64 = 5;

/// Ends the run with a reset: the vCPUs stop before the guest runs another instruction.
pub struct ResetTrigger(ExitSignal);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.end(VmEvent::Exit(ExitReason::Reset));
        Ok(())
    }
}

/// The i8042 as a bus device.
pub struct I8042 {
    device: I8042Device<ResetTrigger>,
}

impl I8042 {
    pub fn new(exit: ExitSignal) -> I8042 {
        I8042 {
            device: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) => *byte = self.device.read(offset),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(offset), [value]) = (u8::try_from(offset), data) {
            self.device
                .write(offset, *value)
                .unwrap_or_else(|never| match never {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn reset_command_ends_the_vm_with_a_reset() {
        let (tx, rx) = mpsc::channel();
        let exit = ExitSignal::new(tx);
        let mut i8042 = I8042::new(exit.clone());
        i8042.write(4, &[0x01]);
        assert!(rx.try_recv().is_err(), "other commands do nothing");
        assert!(!exit.stopping());
        i8042.write(4, &[0xfe]);
        assert!(exit.stopping(), "the vCPUs stop at once");
        assert!(matches!(
            rx.try_recv(),
            Ok(VmEvent::Exit(ExitReason::Reset))
        ));
    }
}
