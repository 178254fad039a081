//! Admin frames: the body decoder and the length-prefixed stream reader.
//! The checks live in `kiln::fuzzing`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::admin_frame(data));
