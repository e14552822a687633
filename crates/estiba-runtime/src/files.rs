//! Reading a host file that a caller names, confined to a directory the operator chose
//! (environment files, registry credentials): the name is relative, has no `..`, and is
//! resolved beneath the directory by the kernel (`openat2` with `RESOLVE_BENEATH`), so no
//! symlink leads out of it.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};

/// Reads `rel` beneath `dir`, at most `max` bytes (larger files are refused).
pub fn read_beneath(dir: &Path, rel: &Path, max: u64) -> io::Result<Vec<u8>> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", rel.display()));
    if rel.as_os_str().is_empty() {
        return Err(refuse("empty name"));
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refuse("the name must be relative and may not contain '..'"));
    }
    let root = rfs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let fd = match rfs::openat2(
        &root,
        rel.as_os_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::XDEV) => return Err(refuse("it leads out of the directory")),
        // Kernels before 5.6: component by component, following no symlink at all.
        Err(rustix::io::Errno::NOSYS) => {
            let mut cur = root;
            let parts: Vec<&OsStr> = rel.iter().filter(|p| p.as_bytes() != b".").collect();
            for (i, p) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let flags = OFlags::CLOEXEC
                    | OFlags::NOFOLLOW
                    | if last { OFlags::RDONLY } else { OFlags::PATH | OFlags::DIRECTORY };
                cur = rfs::openat(&cur, *p, flags, Mode::empty())?;
            }
            cur
        }
        Err(e) => return Err(e.into()),
    };
    let mut f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(refuse("not a regular file"));
    }
    let mut out = Vec::new();
    (&mut f).take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(refuse(&format!("larger than {max} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_beneath_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a.env"), "A=1\n").unwrap();
        std::fs::write(outside.path().join("secret"), "S=1\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("out")).unwrap();
        std::os::unix::fs::symlink("sub/a.env", d.path().join("in")).unwrap();
        assert_eq!(read_beneath(d.path(), Path::new("sub/a.env"), 100).unwrap(), b"A=1\n");
        assert_eq!(read_beneath(d.path(), Path::new("in"), 100).unwrap(), b"A=1\n", "a link within is fine");
        for bad in ["../secret", "/etc/shadow", "sub/../../x", "out", "", "sub"] {
            assert!(read_beneath(d.path(), Path::new(bad), 100).is_err(), "{bad}");
        }
        assert!(read_beneath(d.path(), Path::new("sub/a.env"), 2).is_err(), "too large");
    }
}
