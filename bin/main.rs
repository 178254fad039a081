//! The `kiln` binary: parse the command line and hand over to the library.
//!
//! The allocator is mimalloc: the daemon allocates on the actix thread and
//! frees on the store thread (and back) for every job and transition, and
//! glibc's malloc spent about a fifth of a job's instructions on that
//! (callgrind, `kiln bench jobs`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kiln::run()
}
