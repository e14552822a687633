//! A task's network namespace: created once per task, shared by all its containers (so they
//! talk over localhost), and kept alive by a bind mount of its nsfs file, as `ip netns` does,
//! so it outlives any one container and the agent. Removing the pin destroys the namespace
//! once no process uses it, and with it the task's end of its veth pair (the kernel then
//! deletes the host end too).

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::nl::Netlink;

/// Creates a network namespace with loopback up, pinned at `path`. Returns a netlink socket
/// that acts inside it (a socket keeps the namespace it was opened in), so the caller can
/// configure the namespace's links without entering it again.
pub fn create(path: &Path) -> Result<Netlink, String> {
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let p = path.to_owned();
    // Namespaces belong to threads: a short-lived thread enters the new one and pins it.
    let r = std::thread::spawn(move || -> Result<Netlink, String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare network namespace: {e}"))?;
        let mut nl = Netlink::open().map_err(|e| format!("netlink in the new namespace: {e}"))?;
        nl.set_up(1).map_err(|e| format!("setting lo up: {e}"))?;
        let tid = nix::unistd::gettid();
        mount(Some(format!("/proc/self/task/{tid}/ns/net").as_str()), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("pinning the network namespace at {}: {e}", p.display()))?;
        Ok(nl)
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?;
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Removes a pinned namespace (the namespace itself goes once nothing uses it).
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Whether `path` is a pinned namespace (a mount point holding an nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap_or(""))))
        .unwrap_or(false)
}

/// Runs `f` on a short-lived thread that has entered the namespace pinned at `path`
/// (namespaces belong to threads, so the caller's own threads never change namespace).
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ns = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("entering the network namespace: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}
