//! Integration tests: the real `kiln` binary, over the real Unix socket, on
//! real SQLite files in temporary directories.

mod access;
mod bad_input;
mod bench;
mod bmc;
mod crash;
mod exec;
mod harness;
mod jobs;
mod lifecycle;
mod limits;
mod locking;
mod peers;
mod periodic;
mod restart;
mod secrets;
mod shutdown;
mod socket;
