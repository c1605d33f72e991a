//! libFuzzer target: see berth::vm::devices::virtio::fuzz::balloon_queues.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    berth::vm::devices::virtio::fuzz::balloon_queues(data);
});
