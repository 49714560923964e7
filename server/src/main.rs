//! The `nimbus` binary: parse the command line and run it.

use clap::Parser;

/// mimalloc instead of the system allocator: the server allocates many small,
/// short-lived values per request from many threads, where glibc's malloc
/// spent about a sixth of a GraphQL list's CPU time (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nimbus::cli::run(nimbus::cli::Cli::parse())
}
