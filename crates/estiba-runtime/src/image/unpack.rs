//! Unpacks one image layer (a tar stream) into an empty directory, as an overlayfs lower
//! layer. Layers are hostile input:
//!
//! - paths are normalised; entries with `..` are refused, absolute paths are taken relative to
//!   the layer;
//! - every parent directory is resolved beneath the layer root without following any symlink
//!   (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or a component-wise `O_NOFOLLOW`
//!   walk where `openat2` is missing), so a symlink the layer made earlier can never redirect
//!   a write outside;
//! - hardlinks must point at a file inside the layer, resolved the same way;
//! - device nodes are skipped; whiteouts become overlayfs whiteouts (0/0 character devices)
//!   and opaque directories get `trusted.overlay.opaque=y`;
//! - the number of entries, the bytes written and path lengths are bounded.
//!
//! Written by hand because no crate extracts tar archives with these guarantees and overlayfs
//! whiteouts: the `tar` crate's `unpack` follows its own rules; it is used here for parsing.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};

use crate::Error;

/// Bounds on what one layer may hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of file content.
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_path: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 32 << 30, max_entries: 2_000_000, max_path: 4096 }
    }
}

/// What an unpack did, including what it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// `path: reason` for each entry that was not written.
    pub skipped: Vec<String>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn io_err(what: &str, path: &[u8], e: impl std::fmt::Display) -> Error {
    Error::Unpack(format!("{what} {}: {e}", String::from_utf8_lossy(path)))
}

/// Normalises a tar path: drops `.` and empty components and a leading `/`; `None` when the
/// path climbs out with `..`.
fn clean(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

struct Unpacker {
    root: OwnedFd,
    openat2: bool,
    limits: Limits,
    stats: Stats,
}

impl Unpacker {
    /// Opens the directory `components` beneath the root without following symlinks,
    /// creating missing directories (mode 0755) when `create`.
    fn dir(&mut self, components: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        if components.is_empty() {
            return rustix::io::dup(&self.root).map_err(io::Error::from);
        }
        if self.openat2 {
            let joined = components.join(&b'/');
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
            match rfs::openat2(
                &self.root,
                OsStr::from_bytes(&joined),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                how,
            ) {
                Ok(fd) => return Ok(fd),
                Err(rustix::io::Errno::NOSYS) => self.openat2 = false,
                Err(rustix::io::Errno::NOENT) if create => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Component by component: every step refuses symlinks (O_NOFOLLOW) and non-directories.
        let mut cur = rustix::io::dup(&self.root)?;
        for c in components {
            let name = OsStr::from_bytes(c);
            let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
            let next = match rfs::openat(&cur, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rfs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rfs::openat(&cur, name, flags, Mode::empty())?
                }
                Err(e) => return Err(e.into()),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `dir` (a file, a link, or a whole directory).
    fn remove(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {
                let sub = rfs::openat(
                    dir,
                    name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
                let mut names = Vec::new();
                for e in rfs::Dir::read_from(&sub)? {
                    let e = e?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(n.to_vec());
                    }
                }
                for n in names {
                    Self::remove(&sub, OsStr::from_bytes(&n))?;
                }
                rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn skip(&mut self, path: &[u8], why: &str) {
        if self.stats.skipped.len() < 1000 {
            self.stats.skipped.push(format!("{}: {why}", String::from_utf8_lossy(path)));
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), Error> {
        let raw_path = e.path_bytes().into_owned();
        if raw_path.len() > self.limits.max_path {
            self.skip(&raw_path[..64], "path too long");
            return Ok(());
        }
        let Some(comps) = clean(&raw_path) else {
            self.skip(&raw_path, "path escapes the layer with '..'");
            return Ok(());
        };
        let Some((&name, parents)) = comps.split_last() else {
            return Ok(()); // the layer root itself
        };
        let header = e.header().clone();
        let kind = header.entry_type();
        let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777);
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = pax_xattrs(&mut e);

        // Whiteouts.
        if name == OPAQUE.as_bytes() {
            let dir = match self.dir(parents, true) {
                Ok(d) => d,
                Err(err) => return self.refused(&raw_path, err),
            };
            rfs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty())
                .map_err(|err| io_err("marking opaque", &raw_path, err))?;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                self.skip(&raw_path, "malformed whiteout");
                return Ok(());
            }
            let dir = match self.dir(parents, true) {
                Ok(d) => d,
                Err(err) => return self.refused(&raw_path, err),
            };
            let hidden = OsStr::from_bytes(hidden);
            Self::remove(&dir, hidden).map_err(|err| io_err("replacing", &raw_path, err))?;
            rfs::mknodat(&dir, hidden, rfs::FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|err| io_err("creating whiteout", &raw_path, err))?;
            return Ok(());
        }

        let dir = match self.dir(parents, true) {
            Ok(d) => d,
            Err(err) => return self.refused(&raw_path, err),
        };
        let fname = OsStr::from_bytes(name);
        match kind {
            tar::EntryType::Directory => {
                match rfs::openat(
                    &dir,
                    fname,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(_) => {}
                    Err(_) => {
                        Self::remove(&dir, fname).map_err(|err| io_err("replacing", &raw_path, err))?;
                        rfs::mkdirat(&dir, fname, mode).map_err(|err| io_err("creating directory", &raw_path, err))?;
                    }
                }
                let fd = rfs::openat(
                    &dir,
                    fname,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| io_err("opening directory", &raw_path, err))?;
                self.finish_fd(&fd, &raw_path, mode, uid, gid, mtime, &xattrs)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size().unwrap_or(0);
                if self.stats.bytes + size > self.limits.max_bytes {
                    return Err(Error::Unpack(format!("layer holds more than {} bytes", self.limits.max_bytes)));
                }
                Self::remove(&dir, fname).map_err(|err| io_err("replacing", &raw_path, err))?;
                let fd = rfs::openat(
                    &dir,
                    fname,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|err| io_err("creating", &raw_path, err))?;
                let mut file = std::fs::File::from(fd);
                let copied =
                    io::copy(&mut (&mut e).take(size), &mut file).map_err(|err| io_err("writing", &raw_path, err))?;
                file.flush().ok();
                self.stats.bytes += copied;
                let fd = OwnedFd::from(file);
                self.finish_fd(&fd, &raw_path, mode, uid, gid, mtime, &xattrs)?;
            }
            tar::EntryType::Symlink => {
                let Some(target) = e.link_name_bytes().map(|t| t.into_owned()) else {
                    self.skip(&raw_path, "symlink without a target");
                    return Ok(());
                };
                Self::remove(&dir, fname).map_err(|err| io_err("replacing", &raw_path, err))?;
                // The target is stored as text and never followed here: inside the container
                // it resolves against the container's own root.
                rfs::symlinkat(OsStr::from_bytes(&target), &dir, fname)
                    .map_err(|err| io_err("creating symlink", &raw_path, err))?;
                let _ = rfs::chownat(
                    &dir,
                    fname,
                    Some(rfs::Uid::from_raw(uid as u32)),
                    Some(rfs::Gid::from_raw(gid as u32)),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
                let t = rfs::Timestamps { last_access: ts(mtime), last_modification: ts(mtime) };
                let _ = rfs::utimensat(&dir, fname, &t, AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Link => {
                let Some(target) = e.link_name_bytes().map(|t| t.into_owned()) else {
                    self.skip(&raw_path, "hardlink without a target");
                    return Ok(());
                };
                let Some(tcomps) = clean(&target) else {
                    self.skip(&raw_path, "hardlink target escapes the layer");
                    return Ok(());
                };
                let Some((&tname, tparents)) = tcomps.split_last() else {
                    self.skip(&raw_path, "hardlink to the layer root");
                    return Ok(());
                };
                let tdir = match self.dir(tparents, false) {
                    Ok(d) => d,
                    Err(_) => {
                        self.skip(&raw_path, "hardlink target is not in the layer");
                        return Ok(());
                    }
                };
                let tname = OsStr::from_bytes(tname);
                // Only regular files can be hardlinked (never directories, never through a symlink).
                match rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile => {}
                    _ => {
                        self.skip(&raw_path, "hardlink target is not a regular file in the layer");
                        return Ok(());
                    }
                }
                if tcomps == comps {
                    return Ok(());
                }
                Self::remove(&dir, fname).map_err(|err| io_err("replacing", &raw_path, err))?;
                rfs::linkat(&tdir, tname, &dir, fname, AtFlags::empty())
                    .map_err(|err| io_err("creating hardlink", &raw_path, err))?;
            }
            tar::EntryType::Fifo => {
                Self::remove(&dir, fname).map_err(|err| io_err("replacing", &raw_path, err))?;
                rfs::mknodat(&dir, fname, rfs::FileType::Fifo, mode, 0)
                    .map_err(|err| io_err("creating fifo", &raw_path, err))?;
                let _ = rfs::chownat(
                    &dir,
                    fname,
                    Some(rfs::Uid::from_raw(uid as u32)),
                    Some(rfs::Gid::from_raw(gid as u32)),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
            tar::EntryType::Char | tar::EntryType::Block => self.skip(&raw_path, "device nodes are not unpacked"),
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => self.skip(&raw_path, &format!("unsupported entry type {other:?}")),
        }
        Ok(())
    }

    /// A path whose parents cannot be resolved safely (a symlink or file in the way) is
    /// skipped, never followed.
    fn refused(&mut self, path: &[u8], err: io::Error) -> Result<(), Error> {
        self.skip(path, &format!("a parent is not a plain directory inside the layer ({err})"));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_fd(
        &mut self,
        fd: &OwnedFd,
        path: &[u8],
        mode: Mode,
        uid: u64,
        gid: u64,
        mtime: u64,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        rfs::fchown(fd, Some(rfs::Uid::from_raw(uid as u32)), Some(rfs::Gid::from_raw(gid as u32)))
            .map_err(|err| io_err("setting owner of", path, err))?;
        // chown clears setuid bits: set the mode afterwards.
        rfs::fchmod(fd, mode).map_err(|err| io_err("setting mode of", path, err))?;
        for (k, v) in xattrs {
            let _ = rfs::fsetxattr(fd, k.as_str(), v, rfs::XattrFlags::empty());
        }
        let t = rfs::Timestamps { last_access: ts(mtime), last_modification: ts(mtime) };
        let _ = rfs::futimens(fd, &t);
        Ok(())
    }
}

fn ts(secs: u64) -> rfs::Timespec {
    rfs::Timespec { tv_sec: secs.min(i64::MAX as u64) as i64, tv_nsec: 0 }
}

/// Extended attributes carried in PAX records, limited to the ones images legitimately need.
fn pax_xattrs<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name == "security.capability" || name.starts_with("user.") {
                    out.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// Unpacks the tar stream `reader` into `dest`, an existing empty directory.
pub fn unpack(reader: impl Read, dest: &Path, limits: &Limits) -> Result<Stats, Error> {
    let root = rfs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::Unpack(format!("opening {}: {e}", dest.display())))?;
    let mut u = Unpacker { root, openat2: true, limits: limits.clone(), stats: Stats::default() };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| Error::Unpack(format!("reading the layer: {e}")))?;
    for e in entries {
        let e = e.map_err(|e| Error::Unpack(format!("reading the layer: {e}")))?;
        u.stats.entries += 1;
        if u.stats.entries > u.limits.max_entries {
            return Err(Error::Unpack(format!("layer holds more than {} entries", u.limits.max_entries)));
        }
        u.entry(e)?;
    }
    Ok(u.stats)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    pub fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Builds tar archives entry by entry, including entries the `tar` crate's own helpers
    /// would refuse (`..`, absolute paths), to play hostile layers.
    #[derive(Default)]
    pub struct Layer {
        b: Vec<u8>,
    }

    impl Layer {
        pub fn raw(mut self, kind: tar::EntryType, path: &str, link: &str, data: &[u8], mode: u32) -> Self {
            let mut h = tar::Header::new_gnu();
            {
                let g = h.as_gnu_mut().unwrap();
                g.name[..path.len()].copy_from_slice(path.as_bytes());
                g.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&h, data).unwrap();
            let mut bytes = b.into_inner().unwrap();
            bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
            self.b.extend_from_slice(&bytes);
            self
        }
        pub fn file(self, path: &str, data: &[u8]) -> Self {
            self.raw(tar::EntryType::Regular, path, "", data, 0o644)
        }
        pub fn dir(self, path: &str) -> Self {
            self.raw(tar::EntryType::Directory, path, "", b"", 0o755)
        }
        pub fn symlink(self, path: &str, target: &str) -> Self {
            self.raw(tar::EntryType::Symlink, path, target, b"", 0o777)
        }
        pub fn hardlink(self, path: &str, target: &str) -> Self {
            self.raw(tar::EntryType::Link, path, target, b"", 0o644)
        }
        pub fn bytes(mut self) -> Vec<u8> {
            self.b.extend_from_slice(&[0u8; 1024]);
            self.b
        }
    }

    /// An outer directory holding the layer directory and a canary file next to it.
    struct Sandbox {
        outer: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Self {
            let outer = tempfile::tempdir().unwrap();
            std::fs::create_dir(outer.path().join("layer")).unwrap();
            std::fs::write(outer.path().join("canary"), b"untouched").unwrap();
            Sandbox { outer }
        }
        fn layer(&self) -> PathBuf {
            self.outer.path().join("layer")
        }
        fn unpack(&self, tar: &[u8]) -> Result<Stats, Error> {
            unpack(tar, &self.layer(), &Limits::default())
        }
        /// Nothing but the layer and the untouched canary exist outside the layer.
        fn assert_contained(&self) {
            let mut names: Vec<String> = std::fs::read_dir(self.outer.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["canary", "layer"]);
            assert_eq!(std::fs::read(self.outer.path().join("canary")).unwrap(), b"untouched");
        }
    }

    use std::path::PathBuf;

    #[test]
    fn unpacks_an_ordinary_layer() {
        let s = Sandbox::new();
        let t = Layer::default()
            .dir("bin/")
            .file("bin/busybox", b"ELF...")
            .raw(tar::EntryType::Regular, "bin/su", "", b"x", 0o4755)
            .symlink("bin/sh", "busybox")
            .hardlink("bin/ash", "bin/busybox")
            .file("./etc/deep/nested/file", b"made parents")
            .bytes();
        let stats = s.unpack(&t).unwrap();
        assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
        let l = s.layer();
        assert_eq!(std::fs::read(l.join("bin/busybox")).unwrap(), b"ELF...");
        assert_eq!(std::fs::read_link(l.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(
            std::fs::metadata(l.join("bin/ash")).unwrap().ino(),
            std::fs::metadata(l.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(std::fs::metadata(l.join("bin/su")).unwrap().permissions().mode() & 0o7777, 0o4755);
        assert_eq!(std::fs::read(l.join("etc/deep/nested/file")).unwrap(), b"made parents");
        s.assert_contained();
    }

    #[test]
    fn hostile_entries_never_escape() {
        let s = Sandbox::new();
        let outside = s.outer.path().join("canary");
        let outside_s = outside.to_str().unwrap();
        let t = Layer::default()
            .file("../escape", b"x")
            .file("a/../../escape2", b"x")
            .file("/abs/inside", b"absolute paths stay inside")
            .symlink("root", "/")
            .file("root/tmp/evil", b"x")
            .symlink("up", "..")
            .file("up/evil", b"x")
            .symlink("canarylink", outside_s)
            .file("canarylink", b"replaces the link, not the canary")
            .hardlink("hl", "../canary")
            .hardlink("hl2", outside_s)
            .symlink("s2", outside_s)
            .hardlink("hl3", "s2")
            .symlink("d", s.outer.path().to_str().unwrap())
            .dir("d/")
            .file("d/inside", b"d became a directory of the layer")
            .raw(tar::EntryType::Char, "dev/null", "", b"", 0o666)
            .raw(tar::EntryType::Block, "dev/sda", "", b"", 0o666)
            .bytes();
        let stats = s.unpack(&t).unwrap();
        s.assert_contained();
        let l = s.layer();
        assert_eq!(std::fs::read(l.join("abs/inside")).unwrap(), b"absolute paths stay inside");
        assert_eq!(std::fs::read(l.join("canarylink")).unwrap(), b"replaces the link, not the canary");
        assert_eq!(std::fs::read(l.join("d/inside")).unwrap(), b"d became a directory of the layer");
        assert!(!l.join("hl").exists() && !l.join("hl2").exists() && !l.join("hl3").exists());
        assert!(!l.join("dev/null").exists() && !l.join("dev/sda").exists());
        let skipped = stats.skipped.join("\n");
        for p in ["../escape", "escape2", "root/tmp/evil", "up/evil", "hl:", "hl2", "hl3", "dev/null", "dev/sda"] {
            assert!(skipped.contains(p), "{p} should be reported skipped:\n{skipped}");
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !is_root() {
            eprintln!("skipped: creating overlay whiteouts needs root");
            return;
        }
        let s = Sandbox::new();
        let t = Layer::default().dir("etc/").file("etc/.wh.passwd", b"").file("var/.wh..wh..opq", b"").bytes();
        s.unpack(&t).unwrap();
        let md = std::fs::symlink_metadata(s.layer().join("etc/passwd")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), 0);
        let mut buf = [0u8; 4];
        let n = rustix::fs::getxattr(s.layer().join("var").as_path(), "trusted.overlay.opaque", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
        s.assert_contained();
    }

    /// The fuzz target's invariants (no panic, nothing outside the layer) over mutations of
    /// hostile archives, with a fixed seed: a stand-in for `cargo fuzz run unpack` that runs
    /// on the stable toolchain, in every test run.
    #[test]
    fn mutated_archives_never_escape() {
        let seed = Layer::default()
            .file("../escape", b"x")
            .symlink("root", "/")
            .file("root/tmp/evil", b"x")
            .hardlink("hl", "../canary")
            .dir("d/")
            .file("d/f", b"0123456789")
            .symlink("d/up", "../..")
            .file("d/up/escape", b"x")
            .bytes();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let limits = Limits { max_bytes: 1 << 20, max_entries: 1000, max_path: 4096 };
        for _ in 0..300 {
            let mut data = seed.clone();
            for _ in 0..(1 + next() % 8) {
                let i = (next() as usize) % data.len();
                match next() % 4 {
                    0 => data[i] ^= 1 << (next() % 8),
                    1 => data[i] = b"/.\\0a"[(next() % 5) as usize],
                    2 => data.truncate(i.max(1)),
                    _ => data.insert(i, (next() & 0xff) as u8),
                }
            }
            let s = Sandbox::new();
            let _ = unpack(&data[..], &s.layer(), &limits);
            s.assert_contained();
        }
    }

    #[test]
    fn limits_are_enforced() {
        let s = Sandbox::new();
        let t = Layer::default().file("a", &[0u8; 4096]).file("b", &[0u8; 4096]).bytes();
        let small = Limits { max_bytes: 5000, ..Limits::default() };
        assert!(unpack(&t[..], &s.layer(), &small).is_err());
        let s = Sandbox::new();
        let few = Limits { max_entries: 1, ..Limits::default() };
        assert!(unpack(&t[..], &s.layer(), &few).is_err());
        // A block of text is not a tar header: its checksum does not match.
        let s = Sandbox::new();
        let garbage = [b'x'; 1024];
        assert!(unpack(&garbage[..], &s.layer(), &Limits::default()).is_err());
        s.assert_contained();
    }
}
