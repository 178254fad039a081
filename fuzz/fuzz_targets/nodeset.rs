//! Node set expressions: parse (with groups), fold, expand; parse(fold(s)) == s.
//! The checks live in `kiln::fuzzing`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln::fuzzing::nodeset(data));
