//! Node import files: parsed as `kiln node import` does, validated as the daemon does.
//! The checks live in `kiln::fuzzing`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::import_file(data));
