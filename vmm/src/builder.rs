//! Wires a microVM together and boots it. Read top to bottom, [`boot`] is the boot story:
//! KVM and the VM, guest memory, the kernel, what the kernel is told, the devices, the vCPUs,
//! and the threads that run them; [`RunningVm::wait`] is the end of it.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, bzimage, elf, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress};

use super::arch::layout::HIMEM_START;
use super::arch::{self, BootEntry, BootInfo};
use super::devices::boot_timer::{BOOT_TIMER_ADDR, BOOT_TIMER_LEN};
use super::devices::i8042::{I8042_BASE, I8042_LEN};
use super::devices::serial::{COM1_BASE, COM1_IRQ, COM1_LEN};
use super::devices::virtio::net::Framing;
use super::devices::virtio::{
    self, Balloon, Block, Console, Interrupt, MmioTransport, Net, Share, VirtioDevice,
};
use super::devices::{BootTimer, Bus, SerialConsole, I8042};
use super::memory::{self, GuestMemory};
use super::vcpu::{self, Vcpu, VcpuContext};
use super::vm::{self, Vm};
use super::{Error, ExitSignal, Machine, NetBackend, OpenFile, RunReport, VmEvent, VmIo};

/// Where the virtio-mmio devices start: the page after the boot timer.
pub const VIRTIO_MMIO_BASE: u64 = BOOT_TIMER_ADDR + BOOT_TIMER_LEN;
/// The I/O APIC pins virtio devices interrupt on: 5..=23 (0-4 are the PIT, keyboard, cascade
/// and the serial ports). With more devices than pins, devices share pins; Linux's
/// virtio_mmio driver requests its interrupt as shared and reads each device's status.
const VIRTIO_IRQ_FIRST: u32 = 5;
const VIRTIO_IRQ_COUNT: u32 = 19;
/// The most virtio devices a VM gets (a 128-layer image plus its channel fits).
pub const MAX_VIRTIO_DEVICES: usize = 160;

/// The offset of the 64-bit entry point (startup_64) in a bzImage's protected-mode kernel.
const BZIMAGE_ENTRY_64: u64 = 0x200;

/// Why the kernel or initrd could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read it")]
    Open(#[source] std::io::Error),
    #[error("not a kernel: berth boots ELF kernels (PVH or 64-bit vmlinux) and bzImages")]
    NotAKernel,
    #[error("loading the ELF kernel failed ({0}): is it an x86_64 kernel that fits in --memory?")]
    Elf(loader::Error),
    #[error("loading the bzImage failed ({0}): does it fit in --memory?")]
    BzImage(loader::Error),
    #[error("the initrd is empty: pass an initramfs or drop --initrd")]
    EmptyInitrd,
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory above the kernel: raise --memory"
    )]
    InitrdTooBig { size: u64 },
    #[error("reading the initrd into guest memory failed")]
    InitrdRead(#[source] vm_memory::GuestMemoryError),
}

/// A kernel in guest memory.
struct LoadedKernel {
    entry: BootEntry,
    /// The first guest-physical address past the kernel.
    end: u64,
    /// A bzImage's setup header.
    setup_header: Option<setup_header>,
}

/// A booted VM: its vCPU threads run until [`RunningVm::wait`] sees the guest end.
pub struct RunningVm {
    // Kept alive while vCPUs run: the VM (and through it KVM's view of memory) and the memory.
    _vm: Vm,
    _mem: GuestMemory,
    events: Receiver<VmEvent>,
    exit: ExitSignal,
    vcpus: Vec<JoinHandle<()>>,
    boot_time: Arc<OnceLock<Duration>>,
    /// The host-input threads of the agent channel and the network, and the device's end of
    /// their streams, shut down to stop those threads when the VM ends.
    inputs: Vec<(JoinHandle<()>, UnixStream)>,
}

/// Boots `config`: every step in order, each one's failure reported as such. `start` is when
/// the VMM started, for the boot timer.
pub fn boot(config: Machine, io: VmIo, start: Instant) -> Result<RunningVm, Error> {
    let VmIo {
        console,
        channel,
        net,
    } = io;
    if config.vcpus == 0 {
        return Err(Error::NoVcpus);
    }

    // 1. KVM (opened and checked by berth), and a VM with its interrupt controllers (which
    //    must precede the vCPUs).
    let Machine {
        kvm,
        kernel: kernel_file,
        initrd: initrd_file,
        cmdline: config_cmdline,
        vcpus: config_vcpus,
        mem_mib,
        disks,
        shares,
        balloon,
    } = config;
    let vm = Vm::new(&kvm, config_vcpus)?;

    // 2. Guest memory, mapped lazily and handed to KVM.
    let mem = memory::create(mem_mib)?;
    vm.register_memory(&mem)?;

    // 3. The kernel (PVH ELF, ELF vmlinux or bzImage), the initrd, the command line.
    let kernel_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Kernel { path, source }
    };
    let OpenFile {
        file: mut kernel_file,
        path: kernel_path,
    } = kernel_file;
    let kernel = load_kernel(&mem, &mut kernel_file).map_err(kernel_error(&kernel_path))?;
    drop(kernel_file);
    // The loader copied the kernel's zero padding too (megabytes in an x86_64 vmlinux): give
    // it back before the guest runs, so that it is not counted against the guest.
    memory::release_zero_pages(&mem, GuestAddress(HIMEM_START), GuestAddress(kernel.end))?;
    let initrd = match initrd_file {
        Some(OpenFile { mut file, path }) => {
            Some(load_initrd(&mem, mem_mib, &kernel, &mut file).map_err(kernel_error(&path))?)
        }
        None => None,
    };
    let device_count = disks.len()
        + usize::from(channel.is_some())
        + usize::from(net.is_some())
        + shares.len()
        + usize::from(balloon);
    if device_count > MAX_VIRTIO_DEVICES {
        return Err(Error::TooManyDevices(device_count));
    }
    let mut cmdline_text = config_cmdline;
    for i in 0..device_count {
        let (addr, irq) = virtio_slot(i);
        cmdline_text.push_str(&format!(" virtio_mmio.device=4K@{addr:#x}:{irq}"));
    }
    let cmdline = arch::cmdline(&cmdline_text)?;
    let cmdline_len = arch::write_cmdline(&mem, &cmdline)?;

    // 4. What the kernel is told: the MP table, and the PVH start info or the Linux zero page
    //    (memory map, command line, initrd).
    let info = BootInfo {
        entry: kernel.entry,
        mem_mib,
        cmdline_len,
        initrd,
        setup_header: kernel.setup_header,
    };
    arch::write_boot_info(&mem, &info, config_vcpus)?;

    // 5. Devices: COM1 on IRQ 4 (an irqfd), the i8042 for the guest's reset, the boot timer;
    //    then the PIT.
    let (events_tx, events) = mpsc::channel();
    let exit = ExitSignal::new(events_tx);
    let serial_irq = vm::eventfd().map_err(Error::Devices)?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)?;
    let mut pio = Bus::new();
    pio.insert(
        Arc::new(Mutex::new(SerialConsole::new(serial_irq, console))),
        COM1_BASE,
        COM1_LEN,
    )?;
    pio.insert(
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
        I8042_BASE,
        I8042_LEN,
    )?;
    let boot_timer = BootTimer::new(start);
    let boot_time = boot_timer.boot_time();
    let mut mmio = Bus::new();
    mmio.insert(
        Arc::new(Mutex::new(boot_timer)),
        BOOT_TIMER_ADDR,
        BOOT_TIMER_LEN,
    )?;
    // virtio-mmio: the disks in order (the guest names them vda, vdb, ...), then the
    //    agent channel (hvc0), the NIC (eth0), the shared directories (by mount tag) and the
    //    balloon, each with an irqfd on its pin.
    let mut slot = 0;
    let mut next_slot = |vm: &Vm| -> Result<(u64, Interrupt), Error> {
        let (addr, irq) = virtio_slot(slot);
        slot += 1;
        let event = vm::eventfd().map_err(Error::Devices)?;
        vm.register_irqfd(&event, irq)?;
        Ok((addr, Interrupt::new(event)))
    };
    for (i, disk) in disks.into_iter().enumerate() {
        let block = Block::from_file(disk.file, disk.read_only, &format!("berth{i}"))
            .map_err(Error::Devices)?;
        let (addr, interrupt) = next_slot(&vm)?;
        let transport = MmioTransport::new(block, mem.clone(), interrupt);
        mmio.insert(
            Arc::new(Mutex::new(transport)),
            addr,
            virtio::mmio::MMIO_LEN,
        )?;
    }
    let mut inputs = Vec::new();
    if let Some(stream) = channel {
        let output = stream.try_clone().map_err(Error::Devices)?;
        let (addr, interrupt) = next_slot(&vm)?;
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            Console::new(Box::new(output)),
            mem.clone(),
            interrupt,
        )));
        mmio.insert(transport.clone(), addr, virtio::mmio::MMIO_LEN)?;
        let shutdown = stream.try_clone().map_err(Error::Devices)?;
        let input = virtio::console::spawn_input(transport, stream).map_err(Error::Devices)?;
        inputs.push((input, shutdown));
    }
    if let Some((backend, mac)) = net {
        let (addr, interrupt) = next_slot(&vm)?;
        match backend {
            NetBackend::Stream(stream) => {
                let output = stream.try_clone().map_err(Error::Devices)?;
                let transport = Arc::new(Mutex::new(MmioTransport::new(
                    Net::new(
                        mac,
                        Box::new(virtio::net::DontWait(output)),
                        Framing::LengthPrefixed,
                    )
                    .map_err(Error::Devices)?,
                    mem.clone(),
                    interrupt,
                )));
                mmio.insert(transport.clone(), addr, virtio::mmio::MMIO_LEN)?;
                inputs.push(serve_notifications(&vm, addr, transport.clone())?);
                let shutdown = stream.try_clone().map_err(Error::Devices)?;
                let input = virtio::net::spawn_input(transport, stream).map_err(Error::Devices)?;
                inputs.push((input, shutdown));
            }
            NetBackend::Tap(tap) => {
                let output = File::from(tap.try_clone().map_err(Error::Devices)?);
                let transport = Arc::new(Mutex::new(MmioTransport::new(
                    Net::new(mac, Box::new(output), Framing::Tap).map_err(Error::Devices)?,
                    mem.clone(),
                    interrupt,
                )));
                mmio.insert(transport.clone(), addr, virtio::mmio::MMIO_LEN)?;
                inputs.push(serve_notifications(&vm, addr, transport.clone())?);
                // Shutting `shutdown` down at the VM's end wakes the thread, which a tap
                // never would.
                let (shutdown, stop) = UnixStream::pair().map_err(Error::Devices)?;
                let input =
                    virtio::net::spawn_tap_input(transport, tap, stop).map_err(Error::Devices)?;
                inputs.push((input, shutdown));
            }
        }
    }
    for share in &shares {
        let device =
            Share::new_owned_as(&share.path, &share.tag, share.read_only, share.guest_owner)?;
        let (addr, interrupt) = next_slot(&vm)?;
        let transport = MmioTransport::new(device, mem.clone(), interrupt);
        mmio.insert(
            Arc::new(Mutex::new(transport)),
            addr,
            virtio::mmio::MMIO_LEN,
        )?;
    }
    if balloon {
        let (addr, interrupt) = next_slot(&vm)?;
        let transport = MmioTransport::new(Balloon::new(), mem.clone(), interrupt);
        mmio.insert(
            Arc::new(Mutex::new(transport)),
            addr,
            virtio::mmio::MMIO_LEN,
        )?;
    }
    vm.create_pit()?;

    // 6. vCPUs, each with its CPUID, MSRs, registers, FPU and LAPIC. vCPU 0 starts at the
    //    kernel's entry; the others wait in KVM for the guest's INIT/SIPI.
    let mut supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::SupportedCpuid)?;
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        arch::cpuid::enable_tsc_deadline(supported.as_mut_slice());
    }
    let mut vcpus = Vec::with_capacity(usize::from(config_vcpus));
    for id in 0..config_vcpus {
        let fd = vm.create_vcpu(id)?;
        arch::configure_vcpu(&fd, &mem, &supported, id, config_vcpus, &kernel.entry)?;
        vcpus.push(Vcpu::new(id, fd));
    }

    // 7. Run: a thread per vCPU.
    let ctx = Arc::new(VcpuContext {
        pio,
        mmio,
        mem: mem.clone(),
        exit: exit.clone(),
    });
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu.start(ctx.clone()) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                exit.stop();
                vcpu::stop_all(handles);
                return Err(e.into());
            }
        }
    }
    Ok(RunningVm {
        _vm: vm,
        _mem: mem,
        events,
        exit,
        vcpus: handles,
        boot_time,
        inputs,
    })
}

/// Routes the driver's notifications of each of the device's queues at `addr` to an eventfd
/// (an ioeventfd: no exit to the VMM) and starts the thread that serves them; returns it with
/// the socket whose shutdown ends it. For the NIC, whose driver notifies for every frame it
/// sends and every few buffers it posts.
fn serve_notifications<D: VirtioDevice + Send + 'static>(
    vm: &Vm,
    addr: u64,
    transport: Arc<Mutex<MmioTransport<D>>>,
) -> Result<(JoinHandle<()>, UnixStream), Error> {
    let count = transport
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .device()
        .queue_max_sizes()
        .len();
    let mut queues = Vec::with_capacity(count);
    for index in 0..count as u32 {
        let event = vm::eventfd().map_err(Error::Devices)?;
        vm.register_ioevent(&event, addr + virtio::mmio::REG_QUEUE_NOTIFY, index)?;
        queues.push((index, event));
    }
    let (shutdown, stop) = UnixStream::pair().map_err(Error::Devices)?;
    let thread =
        virtio::notify::spawn("virtio-notify", transport, queues, stop).map_err(Error::Devices)?;
    Ok((thread, shutdown))
}

/// The MMIO address and interrupt of the `index`th virtio device.
fn virtio_slot(index: usize) -> (u64, u32) {
    let addr = VIRTIO_MMIO_BASE + index as u64 * virtio::mmio::MMIO_LEN;
    let irq = VIRTIO_IRQ_FIRST + (index as u32 % VIRTIO_IRQ_COUNT);
    (addr, irq)
}

impl RunningVm {
    /// Waits for the guest to end the run (or a vCPU to fail), then stops every vCPU.
    pub fn wait(self) -> Result<RunReport, Error> {
        // `self.exit` holds a sender, so this only returns with an event.
        let event = self.events.recv().unwrap_or(VmEvent::Failed(Error::Lost));
        self.exit.stop();
        vcpu::stop_all(self.vcpus);
        for (input, stream) in self.inputs {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = input.join();
        }
        match event {
            VmEvent::Exit(exit) => Ok(RunReport {
                exit,
                boot_time: self.boot_time.get().copied(),
            }),
            VmEvent::Failed(e) => Err(e),
        }
    }
}

/// Loads an ELF kernel (its PVH entry when it has one, else the 64-bit entry) or a bzImage.
fn load_kernel(mem: &GuestMemory, file: &mut File) -> Result<LoadedKernel, KernelError> {
    let himem = Some(GuestAddress(HIMEM_START));
    match Elf::load(mem, None, file, himem) {
        Ok(loaded) => {
            let entry = match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => BootEntry::Pvh { entry },
                _ => BootEntry::Linux64 {
                    entry: loaded.kernel_load,
                },
            };
            return Ok(LoadedKernel {
                entry,
                end: loaded.kernel_end,
                setup_header: None,
            });
        }
        Err(loader::Error::Elf(elf::Error::InvalidElfMagicNumber | elf::Error::ReadElfHeader)) => {}
        Err(e) => return Err(KernelError::Elf(e)),
    }
    match BzImage::load(mem, None, file, himem) {
        Ok(loaded) => Ok(LoadedKernel {
            entry: BootEntry::Linux64 {
                entry: loaded
                    .kernel_load
                    .checked_add(BZIMAGE_ENTRY_64)
                    .ok_or(KernelError::NotAKernel)?,
            },
            end: loaded.kernel_end,
            setup_header: loaded.setup_header,
        }),
        Err(loader::Error::Bzimage(
            bzimage::Error::InvalidBzImage
            | bzimage::Error::ReadBzImageHeader
            | bzimage::Error::SeekBzImageHeader
            | bzimage::Error::Underflow,
        )) => Err(KernelError::NotAKernel),
        Err(e) => Err(KernelError::BzImage(e)),
    }
}

/// Reads the initrd to the top of low memory; returns where it went and its size.
fn load_initrd(
    mem: &GuestMemory,
    mem_mib: u64,
    kernel: &LoadedKernel,
    file: &mut File,
) -> Result<(GuestAddress, u64), KernelError> {
    let size = file.metadata().map_err(KernelError::Open)?.len();
    if size == 0 {
        return Err(KernelError::EmptyInitrd);
    }
    let addr_max = kernel
        .setup_header
        .map_or(u64::from(u32::MAX), |h| u64::from(h.initrd_addr_max));
    let addr = arch::initrd_addr(mem_mib, kernel.end, size, addr_max)
        .ok_or(KernelError::InitrdTooBig { size })?;
    let len = usize::try_from(size).map_err(|_| KernelError::InitrdTooBig { size })?;
    mem.read_exact_volatile_from(addr, file, len)
        .map_err(KernelError::InitrdRead)?;
    Ok((addr, size))
}
