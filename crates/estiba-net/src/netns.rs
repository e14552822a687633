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
    let (ns, nl) = make()?;
    pin(&ns, path)?;
    Ok(nl)
}

/// Makes a network namespace with loopback up, held by the returned descriptor of it (and
/// the netlink socket inside it) until they close.
fn make() -> Result<(std::fs::File, Netlink), String> {
    // Namespaces belong to threads: a short-lived thread enters the new one.
    std::thread::spawn(move || -> Result<(std::fs::File, Netlink), String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare network namespace: {e}"))?;
        let mut nl = Netlink::open().map_err(|e| format!("netlink in the new namespace: {e}"))?;
        nl.set_up(1).map_err(|e| format!("setting lo up: {e}"))?;
        let tid = nix::unistd::gettid();
        let ns = std::fs::File::open(format!("/proc/self/task/{tid}/ns/net"))
            .map_err(|e| format!("opening the new network namespace: {e}"))?;
        Ok((ns, nl))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Pins the namespace `ns` (a descriptor of it) at `path` with a bind mount.
fn pin(ns: &std::fs::File, path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let source = format!("/proc/self/fd/{}", ns.as_raw_fd());
    mount(Some(source.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("pinning the network namespace at {}: {e}", path.display())
    })
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

/// Network namespaces made ahead of time, each with loopback up and held only by this
/// process's descriptors (no pin on disk: when the process ends, however it ends, they go
/// with it), so that a task's start does not wait for the kernel to make one (a millisecond or
/// two, more while other namespaces are being torn down). A task takes one by pinning it at
/// its own path ([`Spares::take`]); the set refills on a thread a moment later. Spares are
/// never reused: each is a fresh namespace.
pub struct Spares {
    size: usize,
    ready: std::sync::Mutex<Vec<(std::fs::File, Netlink)>>,
    filling: std::sync::atomic::AtomicBool,
}

/// How long after a spare is taken the set starts refilling: making a namespace takes the
/// kernel's network locks, which the start that took the spare may still need.
const SPARE_REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

impl Spares {
    /// Up to `size` spares (0: none). Call [`Spares::refill`] to make them.
    pub fn new(size: usize) -> std::sync::Arc<Spares> {
        std::sync::Arc::new(Spares { size, ready: Default::default(), filling: Default::default() })
    }

    /// How many spares are ready.
    pub fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pins a spare namespace at `path` and returns a netlink socket inside it, as
    /// [`create`] does; `None` when no spare is ready (or pinning it failed), and the caller
    /// creates one.
    pub fn take(self: &std::sync::Arc<Self>, path: &Path) -> Option<Netlink> {
        if self.size == 0 {
            return None;
        }
        let spare = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop();
        self.refill_after(SPARE_REFILL_DELAY);
        let (ns, nl) = spare?;
        pin(&ns, path).ok()?;
        Some(nl)
    }

    /// Makes spares on a thread until there are `size`.
    pub fn refill(self: &std::sync::Arc<Self>) {
        self.refill_after(std::time::Duration::ZERO)
    }

    fn refill_after(self: &std::sync::Arc<Self>, delay: std::time::Duration) {
        use std::sync::atomic::Ordering;
        if self.size == 0 || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("netns-spares".into()).spawn(move || {
            std::thread::sleep(delay);
            while me.len() < me.size {
                match make() {
                    Ok(spare) => me.ready.lock().unwrap_or_else(|e| e.into_inner()).push(spare),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make a spare network namespace; tasks make their own");
                        break;
                    }
                }
            }
            me.filling.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.filling.store(false, Ordering::Release);
        }
    }
}
