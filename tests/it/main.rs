//! Integration tests: the real `kiln` binary, over the real Unix socket, on
//! real SQLite files in temporary directories.

mod bad_input;
mod bench;
mod bmc;
mod exec;
mod faultproxy;
mod faults;
mod harness;
mod jobs;
mod lifecycle;
mod locking;
mod peers;
mod periodic;
mod rejected;
mod restart;
mod socket;
