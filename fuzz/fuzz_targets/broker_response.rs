#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| databus_fuzz::broker_response(data));
