use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the pipeline allocates and frees per entry on several
/// threads at once, where glibc spends a large share of the CPU (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::cli::main(sluice::cli::Cli::parse())
}
