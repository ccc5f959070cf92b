#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| distgat_fuzz_targets::safetensors(data));
