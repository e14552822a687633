//! User namespaces for `--userns remap`: one namespace per node, where container root is an
//! unprivileged host uid (`base`), kept alive by a bind mount of its `nsfs` file (as `ip netns`
//! keeps network namespaces), so every container's setup joins the same mapping; and the
//! idmapped mounts that show an image's layers (owned by host root on disk) as owned by that
//! range, so one copy of each layer serves remapped and plain containers alike.
//!
//! Raw `mount_setattr(2)`: rustix wraps `open_tree` and `move_mount` but not it, and nix
//! none of the three.
//!
//! May not: decide which containers run remapped (the agent does: never privileged or
//! host-network ones).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::Error;

pub use super::spec::UserNs;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Whether `path` is a bind mount of a namespace file.
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == nix::libc::NSFS_MAGIC)
}

/// The node's user namespace at `ns.path`: made (container uids and gids `0..count` mapped to
/// host `base..base+count`) and bind-mounted there unless it already is. The caller must be
/// root in the host's namespace; it may be multithreaded (the child it clones only waits).
pub fn ensure(ns: &UserNs) -> Result<(), Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Container(format!("user namespace {what}: {e}"));
    if ns.count == 0 || ns.base == 0 || ns.base.checked_add(ns.count).is_none() {
        return Err(Error::Container(format!("user namespace range {}:{} is not usable", ns.base, ns.count)));
    }
    if is_nsfs(&ns.path) {
        return Ok(());
    }
    if let Some(parent) = ns.path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail("directory", &e))?;
    }
    std::fs::write(&ns.path, b"").map_err(|e| fail("file", &e))?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail("pipe", &e))?;
    let mut stack = vec![0u8; 64 << 10];
    let wait_fd = r.as_raw_fd();
    // SAFETY: the child only blocks in read(2) on its copy of the pipe and exits; it touches
    // nothing another thread of this process could hold (no allocation, no locks).
    let child = unsafe {
        nix::sched::clone(
            Box::new(move || {
                let mut b = [0u8; 1];
                // Reads one byte into `b`, which outlives the call.
                nix::libc::read(wait_fd, b.as_mut_ptr().cast(), 1);
                0
            }),
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            Some(nix::libc::SIGCHLD),
        )
    }
    .map_err(|e| fail("clone", &e))?;
    drop(r);
    let map = format!("0 {} {}\n", ns.base, ns.count);
    let made = std::fs::write(format!("/proc/{child}/uid_map"), &map)
        .and_then(|_| std::fs::write(format!("/proc/{child}/gid_map"), &map))
        .map_err(|e| fail("map", &e))
        .and_then(|_| {
            nix::mount::mount(
                Some(Path::new(&format!("/proc/{child}/ns/user"))),
                &ns.path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| fail("bind mount", &e))
        });
    // A byte, not the end of file: the child holds a copy of the write end too.
    let _ = nix::unistd::write(&w, b"x");
    drop(w);
    let _ = nix::sys::wait::waitpid(child, None);
    made
}

/// Unmounts the node's namespace (a clean stop): running containers keep theirs alive, and
/// the next start makes the same mapping anew.
pub fn release(ns: &UserNs) {
    let _ = nix::mount::umount2(&ns.path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&ns.path);
}

/// Opens the namespace at `path` for [`idmap`] and `setns`.
pub fn open(path: &Path) -> Result<OwnedFd, String> {
    std::fs::File::open(path).map(OwnedFd::from).map_err(|e| format!("opening user namespace {}: {e}", path.display()))
}

/// Mounts `layer` on `target` with the ids of `userns` (an idmapped bind mount): files host
/// root owns show as owned by the namespace's root. In the caller's mount namespace.
pub fn idmap(layer: &Path, target: &Path, userns: BorrowedFd<'_>) -> Result<(), String> {
    use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("idmapping {}: {what}: {e}", layer.display());
    let tree = open_tree(rustix::fs::CWD, layer, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .map_err(|e| fail("open_tree", &e))?;
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: mount_setattr reads `size` bytes of `attr`, which outlives the call; the path is
    // an empty C string (AT_EMPTY_PATH: the tree's own descriptor is the mount).
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(fail("mount_setattr", &std::io::Error::last_os_error()));
    }
    move_mount(tree.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| fail("move_mount", &e))
}

/// Joins the user namespace `userns` and becomes its root (host uid and gid `base`), with
/// every capability inside it: what follows (groups, the container's user, capabilities)
/// then works as it does for a container without one.
pub fn enter(userns: BorrowedFd<'_>) -> Result<(), String> {
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("joining the user namespace: {e}"))?;
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setgid 0 in the user namespace: {e}"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setuid 0 in the user namespace: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root: a namespace made once and found again, then an idmapped layer whose root
    /// file shows as the range's first uid.
    #[test]
    #[ignore = "needs root (cargo test -p estiba-runtime -- --ignored userns)"]
    fn userns_made_once_and_layers_idmapped() {
        let dir = tempfile::tempdir().unwrap();
        let ns = UserNs { path: dir.path().join("ns"), base: 1_000_000_000, count: 65536 };
        ensure(&ns).unwrap();
        assert!(is_nsfs(&ns.path));
        ensure(&ns).unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        std::fs::write(layer.join("f"), b"x").unwrap();
        let target = dir.path().join("mapped");
        std::fs::create_dir(&target).unwrap();
        let fd = open(&ns.path).unwrap();
        idmap(&layer, &target, fd.as_fd()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(target.join("f")).unwrap().uid(), 1_000_000_000);
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
        nix::mount::umount2(&ns.path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
}
