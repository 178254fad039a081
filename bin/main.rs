//! The `kiln` binary: parse the command line and hand over to the library.

/// jemalloc rather than glibc's malloc: the job path allocates and frees
/// many small objects across threads, and glibc's malloc and free were a
/// third of the queue thread's instructions per job (callgrind, `kiln
/// bench jobs`); with jemalloc that thread runs 16% fewer instructions per
/// job, and the `lock` and `scale` figures hold (RSS after creating 100,000
/// nodes is lower). Embedders keep whatever allocator their binary sets.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kiln::run()
}
