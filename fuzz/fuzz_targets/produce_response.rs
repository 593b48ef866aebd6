#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| databus_fuzz::produce_response(data));
