//! `estiba-shim <state-dir>`: the supervisor of one container (see
//! `estiba_runtime::container::shim`), as a binary of its own. `estiba shim` runs the same
//! code; this binary exists because one supervisor runs per container for the container's
//! whole life: it holds only the runtime's container code (no server, no allocator of its
//! own), so it starts in a fraction of the time and keeps a fraction of the memory resident.
//! The agent uses it when it sits beside the `estiba` binary.

fn main() {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(dir), None) => std::process::exit(estiba_runtime::container::shim::run(std::path::Path::new(&dir))),
        _ => {
            eprintln!("usage: estiba-shim <state-dir>");
            std::process::exit(2)
        }
    }
}
