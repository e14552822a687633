//! The device rules of a container on cgroup v2, which has no devices controller: an eBPF
//! program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup, asked for
//! every mknod, read and write of a device node, answering 1 (allow) or 0 (`EPERM`). The same
//! whitelist as the v1 controller's (Docker's defaults), so a root container cannot `mknod` a
//! host disk and read it.
//!
//! The program is a few dozen instructions generated here from the rules, as runc does, and
//! loaded with the `bpf(2)` system call directly: the crates that load eBPF (aya, libbpf-rs)
//! are made for compiled ELF objects and bring a large dependency tree for what is a table of
//! comparisons.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::Error;

/// `BPF_DEVCG_ACC_*`: what is done with the device.
pub const MKNOD: u32 = 1;
pub const READ: u32 = 2;
pub const WRITE: u32 = 4;
/// `BPF_DEVCG_DEV_*`: its type.
const BLOCK: i32 = 1;
const CHAR: i32 = 2;

/// One rule, as the v1 controller writes them: `c 1:3 rwm`, `b *:* m`, `a` (everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `BPF_DEVCG_DEV_*`, or `None` for both types.
    pub kind: Option<i32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl Rule {
    pub fn parse(s: &str) -> Option<Rule> {
        let mut parts = s.split_whitespace();
        let kind = match parts.next()? {
            "c" => Some(CHAR),
            "b" => Some(BLOCK),
            "a" => return Some(Rule { kind: None, major: None, minor: None, access: MKNOD | READ | WRITE }),
            _ => return None,
        };
        let (major, minor) = parts.next()?.split_once(':')?;
        let num = |n: &str| if n == "*" { Some(None) } else { n.parse().ok().map(Some) };
        let mut access = 0;
        for c in parts.next()?.chars() {
            access |= match c {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                _ => return None,
            };
        }
        Some(Rule { kind, major: num(major)?, minor: num(minor)?, access })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const MOV64_X: u8 = 0xbf; // dst = src
const MOV64_K: u8 = 0xb7; // dst = imm
const AND64_K: u8 = 0x57; // dst &= imm
const RSH64_K: u8 = 0x77; // dst >>= imm
const JNE_K: u8 = 0x55; // if dst != imm goto pc + off
const EXIT: u8 = 0x95;

/// The program for `rules`: allow what one of them allows, deny everything else.
///
/// Registers: r1 the context (`struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
/// minor; }`, access type = access << 16 | device type), r2 the access, r3 the type, r4 the
/// major, r5 the minor, r6 scratch.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND64_K, 3, 0, 0, 0xffff),
        insn(RSH64_K, 2, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // Checks, each jumping past the rest of this rule when it fails.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(k) = r.kind {
            checks.push(vec![insn(JNE_K, 3, 0, 0, k)]);
        }
        let denied = !r.access & (MKNOD | READ | WRITE);
        if denied != 0 {
            // Any requested access outside the rule's: not this rule.
            checks.push(vec![
                insn(MOV64_X, 6, 2, 0, 0),
                insn(AND64_K, 6, 0, 0, denied as i32),
                insn(JNE_K, 6, 0, 0, 0),
            ]);
        }
        if let Some(m) = r.major {
            checks.push(vec![insn(JNE_K, 4, 0, 0, m as i32)]);
        }
        if let Some(m) = r.minor {
            checks.push(vec![insn(JNE_K, 5, 0, 0, m as i32)]);
        }
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(insn(MOV64_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands and constants (linux/bpf.h).
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, as bytes: the commands used here fill its first fields and leave the
/// rest zero, as the kernel requires.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }

    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed `union bpf_attr` of the size passed, whose pointer fields
    // point at buffers that live until the call returns.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `cgroup`. The
/// attachment keeps the program alive; it goes with the cgroup.
pub fn attach(cgroup: &Path, rules: &[Rule]) -> Result<(), Error> {
    let insns = program(rules);
    let license = b"Apache-2.0\0";
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64);
        if let Some(log) = log {
            attr.u32(24, 1).u32(28, log.len() as u32).u64(32, log.as_mut_ptr() as u64);
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    // Without the verifier's log (each supervisor loads the program once, on the container's
    // start path); asked again with it only to say why a load failed.
    let prog = load(None).map_err(|e| {
        let mut log = vec![0u8; 64 << 10];
        let _ = load(Some(&mut log));
        let verifier = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
        Error::Container(format!("loading the device filter of {}: {e} {verifier}", cgroup.display()))
    })?;
    // SAFETY: the call returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| Error::Container(format!("opening {} for its device filter: {e}", cgroup.display())))?;
    let mut attr = Attr::new();
    attr.u32(0, dir.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| Error::Container(format!("attaching the device filter to {}: {e}", cgroup.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_like_the_v1_controller() {
        assert_eq!(
            Rule::parse("c 1:3 rwm"),
            Some(Rule { kind: Some(CHAR), major: Some(1), minor: Some(3), access: 7 })
        );
        assert_eq!(Rule::parse("b *:* m"), Some(Rule { kind: Some(BLOCK), major: None, minor: None, access: MKNOD }));
        assert_eq!(Rule::parse("c 136:* rw").unwrap().minor, None);
        assert!(Rule::parse("x 1:1 r").is_none() && Rule::parse("c 1 r").is_none() && Rule::parse("c 1:1 q").is_none());
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let rules = [Rule::parse("c 1:3 rwm").unwrap(), Rule::parse("b *:* m").unwrap()];
        let p = program(&rules);
        // Prologue 6, rule 1: type, major, minor, r0=1, exit (5); rule 2: type, 3 access, r0, exit (6); deny 2.
        assert_eq!(p.len(), 6 + 5 + 6 + 2);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JNE_K {
                let target = i + 1 + ins.off as usize;
                assert!(target == 11 || target == 17, "instruction {i} jumps to {target}");
            }
        }
        assert_eq!(p.last().unwrap().code, EXIT);
    }

    /// The filter on a real cgroup v2 directory (the unified hierarchy exists on hybrid hosts
    /// too): a process in the cgroup opens an allowed device, not another one.
    #[test]
    fn the_filter_denies_what_is_not_allowed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let cgroup2 = |p: &&Path| {
            nix::sys::statfs::statfs(*p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        };
        let Some(root) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].iter().map(Path::new).find(cgroup2) else {
            eprintln!("skipped: no cgroup v2 hierarchy");
            return;
        };
        let cg = root.join(format!("estiba-devtest-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, kind: nix::sys::stat::SFlag, maj: u64, min: u64| {
            nix::sys::stat::mknod(
                &dir.path().join(name),
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(maj, min),
            )
            .unwrap();
        };
        mk("null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
        mk("kmsg", nix::sys::stat::SFlag::S_IFCHR, 1, 11);
        // The rules containers get (Docker's defaults: null is there, kmsg is not).
        let result = attach(&cg, super::super::cgroup::device_rules());
        let probe = |what: &str| -> bool {
            // The child joins the cgroup, then tries `what`.
            let procs = cg.join("cgroup.procs");
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo $$ > {} && {what}", procs.display()))
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        let null_ok = probe(&format!("head -c0 {}/null", dir.path().display()));
        let kmsg_ok = probe(&format!("head -c0 {}/kmsg", dir.path().display()));
        let mknod_block_ok = probe(&format!("mknod {}/loop b 7 0", dir.path().display()));
        let _ = std::fs::remove_dir(&cg);
        result.unwrap();
        assert!(null_ok, "an allowed device opens");
        assert!(!kmsg_ok, "a device outside the rules does not");
        assert!(mknod_block_ok, "mknod of any block device is allowed (`b *:* m`), not its use");

        // A device given to the container (`linuxParameters.devices`) adds its own rule.
        std::fs::create_dir(&cg).unwrap();
        let mut rules = super::super::cgroup::device_rules().to_vec();
        rules.push(Rule::parse("c 1:11 r").unwrap());
        let result = attach(&cg, &rules);
        let kmsg_ok = probe(&format!("head -c0 {}/kmsg", dir.path().display()));
        let kmsg_write_ok = probe(&format!("printf x > {}/kmsg", dir.path().display()));
        let _ = std::fs::remove_dir(&cg);
        result.unwrap();
        assert!(kmsg_ok, "the given device opens for reading");
        assert!(!kmsg_write_ok, "not for writing: the rule says r");
    }
}
