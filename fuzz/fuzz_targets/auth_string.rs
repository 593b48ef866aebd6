#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| databus_fuzz::auth_string(data));
