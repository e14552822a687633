//! A task's network namespace: created once per task, shared by all its containers (so they
//! talk over localhost), and kept alive by a bind mount of its nsfs file, as `ip netns` does,
//! so it outlives any one container. Only loopback for now; the networking issue adds veths.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Creates a network namespace with loopback up, pinned at `path`.
pub fn create(path: &Path) -> Result<(), String> {
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let p = path.to_owned();
    // Namespaces belong to threads: a short-lived thread enters the new one and pins it.
    let r = std::thread::spawn(move || -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare network namespace: {e}"))?;
        loopback_up()?;
        let tid = nix::unistd::gettid();
        mount(Some(format!("/proc/self/task/{tid}/ns/net").as_str()), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("pinning the network namespace at {}: {e}", p.display()))
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

/// Sets `lo` up in the current thread's network namespace.
fn loopback_up() -> Result<(), String> {
    use nix::libc;
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq owned here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(format!("setting lo up: {err}"));
        }
    }
    Ok(())
}
