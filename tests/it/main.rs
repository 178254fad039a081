//! Integration tests: the real `kiln` binary, over the real Unix socket, on
//! real SQLite files in temporary directories.

mod access;
mod backup;
mod bad_input;
mod bench;
mod bmc;
mod completions;
mod config;
mod crash;
mod events;
mod exec;
mod faultproxy;
mod faults;
mod harness;
mod ironic;
mod jobs;
mod lifecycle;
mod limits;
mod locking;
mod members;
mod metrics;
mod peers;
mod periodic;
mod ports;
mod postgres;
mod privacy;
mod readme;
mod rejected;
mod relay;
mod restart;
mod secrets;
mod service;
mod shared_bmc;
mod shutdown;
mod socket;
mod unreachable;
