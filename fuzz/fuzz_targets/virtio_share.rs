//! libFuzzer target: see berth::vm::devices::virtio::fuzz::share_requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    berth::vm::devices::virtio::fuzz::share_requests(data);
});
