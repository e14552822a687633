//! `estiba-shim <state-dir>` (or `estiba-shim --park`): the supervisor of one container (see
//! `estiba_runtime::container::shim`), as a binary of its own. `estiba shim` runs the same
//! code; this binary exists because one supervisor runs per container for the container's
//! whole life: it holds only the runtime's container code (no server, no allocator of its
//! own), so it starts in a fraction of the time and keeps a fraction of the memory resident.
//! The agent uses it when it sits beside the `estiba` binary.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(estiba_runtime::container::shim::main(&args))
}
