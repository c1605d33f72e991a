//! libFuzzer target: see berth_agent::protocol::fuzz_frames (what a guest sends the host).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    berth_agent::protocol::fuzz_frames(data);
});
