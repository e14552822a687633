//! Docker's default seccomp profile, compiled here to classic BPF and installed as the last
//! step before a container's `execve`.
//!
//! The profile is moby's `profiles/seccomp/default.json` as of Docker 25 (io_uring removed): an
//! allow-list, every other system call failing with `EPERM`. Rules that moby conditions on a
//! capability (`mount`, `unshare`, `setns` need CAP_SYS_ADMIN, module loading CAP_SYS_MODULE,
//! ...) are decided against the container's final capability set, as Docker does; without
//! CAP_SYS_ADMIN `clone` is allowed only without namespace flags and `clone3` fails with
//! `ENOSYS` (so libc falls back to `clone`, whose flags a filter can see). Names that do not
//! exist on this architecture are skipped, as libseccomp does.
//!
//! Compiled by hand rather than with `seccompiler` (rust-vmm's pure-Rust compiler, which
//! builds offline and was tried first): it gives one action to every matching rule, so
//! `clone3`'s `ENOSYS` needed a second filter, and it emits a linear chain of comparisons
//! (~1,500 instructions for this profile) that every system call walks, and that the kernel
//! emulates for every system call number when it builds its action cache at install time.
//! Here the filter is a balanced binary search over the numbers (about 2·log₂(n)
//! instructions per decision), each number with its own action.
//! Unlike Docker, the filter knows this architecture's table only: a 32-bit (i386, arm)
//! system call kills the process instead of being checked against the 32-bit table, and an
//! x32 call (its number has bit 30 set) matches nothing and fails with `EPERM`.
//!
//! Compiled once per process and capability set (cached; a parked supervisor compiles the
//! default set's while it waits); [`install`] only makes the `seccomp` call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use caps::Capability;

use crate::Error;

/// Allowed for everyone (moby's first, unconditional group).
const ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed with the capability (moby's `includes.caps` groups).
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        Capability::CAP_SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::CAP_SYS_BOOT, &["reboot"]),
    (Capability::CAP_SYS_CHROOT, &["chroot"]),
    (Capability::CAP_SYS_MODULE, &["delete_module", "init_module", "finit_module"]),
    (Capability::CAP_SYS_PACCT, &["acct"]),
    (Capability::CAP_SYS_PTRACE, &["kcmp", "pidfd_getfd", "process_madvise"]),
    (Capability::CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (Capability::CAP_SYS_TIME, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (Capability::CAP_SYS_NICE, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::CAP_SYSLOG, &["syslog"]),
    (Capability::CAP_BPF, &["bpf"]),
    (Capability::CAP_PERFMON, &["perf_event_open"]),
];

/// Allowed on this architecture only (moby's `includes.arches` groups).
#[cfg(target_arch = "x86_64")]
const BY_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const BY_ARCH: &[&str] =
    &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const BY_ARCH: &[&str] = &[];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET`: `clone` with any of them needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `AF_VSOCK`, the one socket family the profile refuses.
const AF_VSOCK: u64 = 40;
/// The `personality` values the profile allows (`PER_LINUX`, `PER_LINUX32`, `UNAME26`, both,
/// and the query `0xffffffff`).
const PERSONALITIES: &[u64] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// The system call number of `name` on this architecture, if it has one.
#[cfg(target_arch = "x86_64")]
pub fn number(name: &str) -> Option<i64> {
    use nix::libc::*;
    Some(match name {
        "accept" => SYS_accept,
        "accept4" => SYS_accept4,
        "access" => SYS_access,
        "adjtimex" => SYS_adjtimex,
        "alarm" => SYS_alarm,
        "bind" => SYS_bind,
        "brk" => SYS_brk,
        "capget" => SYS_capget,
        "capset" => SYS_capset,
        "chdir" => SYS_chdir,
        "chmod" => SYS_chmod,
        "chown" => SYS_chown,
        "clock_adjtime" => SYS_clock_adjtime,
        "clock_getres" => SYS_clock_getres,
        "clock_gettime" => SYS_clock_gettime,
        "clock_nanosleep" => SYS_clock_nanosleep,
        "close" => SYS_close,
        "close_range" => SYS_close_range,
        "connect" => SYS_connect,
        "copy_file_range" => SYS_copy_file_range,
        "creat" => SYS_creat,
        "dup" => SYS_dup,
        "dup2" => SYS_dup2,
        "dup3" => SYS_dup3,
        "epoll_create" => SYS_epoll_create,
        "epoll_create1" => SYS_epoll_create1,
        "epoll_ctl" => SYS_epoll_ctl,
        "epoll_ctl_old" => SYS_epoll_ctl_old,
        "epoll_pwait" => SYS_epoll_pwait,
        "epoll_pwait2" => SYS_epoll_pwait2,
        "epoll_wait" => SYS_epoll_wait,
        "epoll_wait_old" => SYS_epoll_wait_old,
        "eventfd" => SYS_eventfd,
        "eventfd2" => SYS_eventfd2,
        "execve" => SYS_execve,
        "execveat" => SYS_execveat,
        "exit" => SYS_exit,
        "exit_group" => SYS_exit_group,
        "faccessat" => SYS_faccessat,
        "faccessat2" => SYS_faccessat2,
        "fadvise64" => SYS_fadvise64,
        "fallocate" => SYS_fallocate,
        "fanotify_mark" => SYS_fanotify_mark,
        "fchdir" => SYS_fchdir,
        "fchmod" => SYS_fchmod,
        "fchmodat" => SYS_fchmodat,
        "fchown" => SYS_fchown,
        "fchownat" => SYS_fchownat,
        "fcntl" => SYS_fcntl,
        "fdatasync" => SYS_fdatasync,
        "fgetxattr" => SYS_fgetxattr,
        "flistxattr" => SYS_flistxattr,
        "flock" => SYS_flock,
        "fork" => SYS_fork,
        "fremovexattr" => SYS_fremovexattr,
        "fsetxattr" => SYS_fsetxattr,
        "fstat" => SYS_fstat,
        "fstatfs" => SYS_fstatfs,
        "fsync" => SYS_fsync,
        "ftruncate" => SYS_ftruncate,
        "futex" => SYS_futex,
        "futex_waitv" => SYS_futex_waitv,
        "futimesat" => SYS_futimesat,
        "getcpu" => SYS_getcpu,
        "getcwd" => SYS_getcwd,
        "getdents" => SYS_getdents,
        "getdents64" => SYS_getdents64,
        "getegid" => SYS_getegid,
        "geteuid" => SYS_geteuid,
        "getgid" => SYS_getgid,
        "getgroups" => SYS_getgroups,
        "getitimer" => SYS_getitimer,
        "getpeername" => SYS_getpeername,
        "getpgid" => SYS_getpgid,
        "getpgrp" => SYS_getpgrp,
        "getpid" => SYS_getpid,
        "getppid" => SYS_getppid,
        "getpriority" => SYS_getpriority,
        "getrandom" => SYS_getrandom,
        "getresgid" => SYS_getresgid,
        "getresuid" => SYS_getresuid,
        "getrlimit" => SYS_getrlimit,
        "get_robust_list" => SYS_get_robust_list,
        "getrusage" => SYS_getrusage,
        "getsid" => SYS_getsid,
        "getsockname" => SYS_getsockname,
        "getsockopt" => SYS_getsockopt,
        "get_thread_area" => SYS_get_thread_area,
        "gettid" => SYS_gettid,
        "gettimeofday" => SYS_gettimeofday,
        "getuid" => SYS_getuid,
        "getxattr" => SYS_getxattr,
        "inotify_add_watch" => SYS_inotify_add_watch,
        "inotify_init" => SYS_inotify_init,
        "inotify_init1" => SYS_inotify_init1,
        "inotify_rm_watch" => SYS_inotify_rm_watch,
        "io_cancel" => SYS_io_cancel,
        "ioctl" => SYS_ioctl,
        "io_destroy" => SYS_io_destroy,
        "io_getevents" => SYS_io_getevents,
        "ioprio_get" => SYS_ioprio_get,
        "ioprio_set" => SYS_ioprio_set,
        "io_setup" => SYS_io_setup,
        "io_submit" => SYS_io_submit,
        "kill" => SYS_kill,
        "landlock_add_rule" => SYS_landlock_add_rule,
        "landlock_create_ruleset" => SYS_landlock_create_ruleset,
        "landlock_restrict_self" => SYS_landlock_restrict_self,
        "lchown" => SYS_lchown,
        "lgetxattr" => SYS_lgetxattr,
        "link" => SYS_link,
        "linkat" => SYS_linkat,
        "listen" => SYS_listen,
        "listxattr" => SYS_listxattr,
        "llistxattr" => SYS_llistxattr,
        "lremovexattr" => SYS_lremovexattr,
        "lseek" => SYS_lseek,
        "lsetxattr" => SYS_lsetxattr,
        "lstat" => SYS_lstat,
        "madvise" => SYS_madvise,
        "membarrier" => SYS_membarrier,
        "memfd_create" => SYS_memfd_create,
        "memfd_secret" => SYS_memfd_secret,
        "mincore" => SYS_mincore,
        "mkdir" => SYS_mkdir,
        "mkdirat" => SYS_mkdirat,
        "mknod" => SYS_mknod,
        "mknodat" => SYS_mknodat,
        "mlock" => SYS_mlock,
        "mlock2" => SYS_mlock2,
        "mlockall" => SYS_mlockall,
        "mmap" => SYS_mmap,
        "mprotect" => SYS_mprotect,
        "mq_getsetattr" => SYS_mq_getsetattr,
        "mq_notify" => SYS_mq_notify,
        "mq_open" => SYS_mq_open,
        "mq_timedreceive" => SYS_mq_timedreceive,
        "mq_timedsend" => SYS_mq_timedsend,
        "mq_unlink" => SYS_mq_unlink,
        "mremap" => SYS_mremap,
        "msgctl" => SYS_msgctl,
        "msgget" => SYS_msgget,
        "msgrcv" => SYS_msgrcv,
        "msgsnd" => SYS_msgsnd,
        "msync" => SYS_msync,
        "munlock" => SYS_munlock,
        "munlockall" => SYS_munlockall,
        "munmap" => SYS_munmap,
        "name_to_handle_at" => SYS_name_to_handle_at,
        "nanosleep" => SYS_nanosleep,
        "newfstatat" => SYS_newfstatat,
        "open" => SYS_open,
        "openat" => SYS_openat,
        "openat2" => SYS_openat2,
        "pause" => SYS_pause,
        "pidfd_open" => SYS_pidfd_open,
        "pidfd_send_signal" => SYS_pidfd_send_signal,
        "pipe" => SYS_pipe,
        "pipe2" => SYS_pipe2,
        "pkey_alloc" => SYS_pkey_alloc,
        "pkey_free" => SYS_pkey_free,
        "pkey_mprotect" => SYS_pkey_mprotect,
        "poll" => SYS_poll,
        "ppoll" => SYS_ppoll,
        "prctl" => SYS_prctl,
        "pread64" => SYS_pread64,
        "preadv" => SYS_preadv,
        "preadv2" => SYS_preadv2,
        "prlimit64" => SYS_prlimit64,
        "process_mrelease" => SYS_process_mrelease,
        "pselect6" => SYS_pselect6,
        "pwrite64" => SYS_pwrite64,
        "pwritev" => SYS_pwritev,
        "pwritev2" => SYS_pwritev2,
        "read" => SYS_read,
        "readahead" => SYS_readahead,
        "readlink" => SYS_readlink,
        "readlinkat" => SYS_readlinkat,
        "readv" => SYS_readv,
        "recvfrom" => SYS_recvfrom,
        "recvmmsg" => SYS_recvmmsg,
        "recvmsg" => SYS_recvmsg,
        "remap_file_pages" => SYS_remap_file_pages,
        "removexattr" => SYS_removexattr,
        "rename" => SYS_rename,
        "renameat" => SYS_renameat,
        "renameat2" => SYS_renameat2,
        "restart_syscall" => SYS_restart_syscall,
        "rmdir" => SYS_rmdir,
        "rseq" => SYS_rseq,
        "rt_sigaction" => SYS_rt_sigaction,
        "rt_sigpending" => SYS_rt_sigpending,
        "rt_sigprocmask" => SYS_rt_sigprocmask,
        "rt_sigqueueinfo" => SYS_rt_sigqueueinfo,
        "rt_sigreturn" => SYS_rt_sigreturn,
        "rt_sigsuspend" => SYS_rt_sigsuspend,
        "rt_sigtimedwait" => SYS_rt_sigtimedwait,
        "rt_tgsigqueueinfo" => SYS_rt_tgsigqueueinfo,
        "sched_getaffinity" => SYS_sched_getaffinity,
        "sched_getattr" => SYS_sched_getattr,
        "sched_getparam" => SYS_sched_getparam,
        "sched_get_priority_max" => SYS_sched_get_priority_max,
        "sched_get_priority_min" => SYS_sched_get_priority_min,
        "sched_getscheduler" => SYS_sched_getscheduler,
        "sched_rr_get_interval" => SYS_sched_rr_get_interval,
        "sched_setaffinity" => SYS_sched_setaffinity,
        "sched_setattr" => SYS_sched_setattr,
        "sched_setparam" => SYS_sched_setparam,
        "sched_setscheduler" => SYS_sched_setscheduler,
        "sched_yield" => SYS_sched_yield,
        "seccomp" => SYS_seccomp,
        "select" => SYS_select,
        "semctl" => SYS_semctl,
        "semget" => SYS_semget,
        "semop" => SYS_semop,
        "semtimedop" => SYS_semtimedop,
        "sendfile" => SYS_sendfile,
        "sendmmsg" => SYS_sendmmsg,
        "sendmsg" => SYS_sendmsg,
        "sendto" => SYS_sendto,
        "setfsgid" => SYS_setfsgid,
        "setfsuid" => SYS_setfsuid,
        "setgid" => SYS_setgid,
        "setgroups" => SYS_setgroups,
        "setitimer" => SYS_setitimer,
        "setpgid" => SYS_setpgid,
        "setpriority" => SYS_setpriority,
        "setregid" => SYS_setregid,
        "setresgid" => SYS_setresgid,
        "setresuid" => SYS_setresuid,
        "setreuid" => SYS_setreuid,
        "setrlimit" => SYS_setrlimit,
        "set_robust_list" => SYS_set_robust_list,
        "setsid" => SYS_setsid,
        "setsockopt" => SYS_setsockopt,
        "set_thread_area" => SYS_set_thread_area,
        "set_tid_address" => SYS_set_tid_address,
        "setuid" => SYS_setuid,
        "setxattr" => SYS_setxattr,
        "shmat" => SYS_shmat,
        "shmctl" => SYS_shmctl,
        "shmdt" => SYS_shmdt,
        "shmget" => SYS_shmget,
        "shutdown" => SYS_shutdown,
        "sigaltstack" => SYS_sigaltstack,
        "signalfd" => SYS_signalfd,
        "signalfd4" => SYS_signalfd4,
        "socketpair" => SYS_socketpair,
        "splice" => SYS_splice,
        "stat" => SYS_stat,
        "statfs" => SYS_statfs,
        "statx" => SYS_statx,
        "symlink" => SYS_symlink,
        "symlinkat" => SYS_symlinkat,
        "sync" => SYS_sync,
        "sync_file_range" => SYS_sync_file_range,
        "syncfs" => SYS_syncfs,
        "sysinfo" => SYS_sysinfo,
        "tee" => SYS_tee,
        "tgkill" => SYS_tgkill,
        "time" => SYS_time,
        "timer_create" => SYS_timer_create,
        "timer_delete" => SYS_timer_delete,
        "timer_getoverrun" => SYS_timer_getoverrun,
        "timer_gettime" => SYS_timer_gettime,
        "timer_settime" => SYS_timer_settime,
        "timerfd_create" => SYS_timerfd_create,
        "timerfd_gettime" => SYS_timerfd_gettime,
        "timerfd_settime" => SYS_timerfd_settime,
        "times" => SYS_times,
        "tkill" => SYS_tkill,
        "truncate" => SYS_truncate,
        "umask" => SYS_umask,
        "uname" => SYS_uname,
        "unlink" => SYS_unlink,
        "unlinkat" => SYS_unlinkat,
        "utime" => SYS_utime,
        "utimensat" => SYS_utimensat,
        "utimes" => SYS_utimes,
        "vfork" => SYS_vfork,
        "vmsplice" => SYS_vmsplice,
        "wait4" => SYS_wait4,
        "waitid" => SYS_waitid,
        "write" => SYS_write,
        "writev" => SYS_writev,
        "process_vm_readv" => SYS_process_vm_readv,
        "process_vm_writev" => SYS_process_vm_writev,
        "ptrace" => SYS_ptrace,
        "socket" => SYS_socket,
        "personality" => SYS_personality,
        "arch_prctl" => SYS_arch_prctl,
        "modify_ldt" => SYS_modify_ldt,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "bpf" => SYS_bpf,
        "clone" => SYS_clone,
        "clone3" => SYS_clone3,
        "fanotify_init" => SYS_fanotify_init,
        "fsconfig" => SYS_fsconfig,
        "fsmount" => SYS_fsmount,
        "fsopen" => SYS_fsopen,
        "fspick" => SYS_fspick,
        "lookup_dcookie" => SYS_lookup_dcookie,
        "mount" => SYS_mount,
        "mount_setattr" => SYS_mount_setattr,
        "move_mount" => SYS_move_mount,
        "open_tree" => SYS_open_tree,
        "perf_event_open" => SYS_perf_event_open,
        "quotactl" => SYS_quotactl,
        "quotactl_fd" => SYS_quotactl_fd,
        "setdomainname" => SYS_setdomainname,
        "sethostname" => SYS_sethostname,
        "setns" => SYS_setns,
        "syslog" => SYS_syslog,
        "umount2" => SYS_umount2,
        "unshare" => SYS_unshare,
        "reboot" => SYS_reboot,
        "chroot" => SYS_chroot,
        "delete_module" => SYS_delete_module,
        "init_module" => SYS_init_module,
        "finit_module" => SYS_finit_module,
        "acct" => SYS_acct,
        "kcmp" => SYS_kcmp,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "process_madvise" => SYS_process_madvise,
        "iopl" => SYS_iopl,
        "ioperm" => SYS_ioperm,
        "settimeofday" => SYS_settimeofday,
        "clock_settime" => SYS_clock_settime,
        "vhangup" => SYS_vhangup,
        "get_mempolicy" => SYS_get_mempolicy,
        "mbind" => SYS_mbind,
        "set_mempolicy" => SYS_set_mempolicy,
        "set_mempolicy_home_node" => SYS_set_mempolicy_home_node,
        "io_pgetevents" => 333, // not in libc
        _ => return None,
    })
}

#[cfg(target_arch = "aarch64")]
pub fn number(name: &str) -> Option<i64> {
    use nix::libc::*;
    Some(match name {
        "accept" => SYS_accept,
        "accept4" => SYS_accept4,
        "adjtimex" => SYS_adjtimex,
        "bind" => SYS_bind,
        "brk" => SYS_brk,
        "capget" => SYS_capget,
        "capset" => SYS_capset,
        "chdir" => SYS_chdir,
        "clock_adjtime" => SYS_clock_adjtime,
        "clock_getres" => SYS_clock_getres,
        "clock_gettime" => SYS_clock_gettime,
        "clock_nanosleep" => SYS_clock_nanosleep,
        "close" => SYS_close,
        "close_range" => SYS_close_range,
        "connect" => SYS_connect,
        "copy_file_range" => SYS_copy_file_range,
        "dup" => SYS_dup,
        "dup3" => SYS_dup3,
        "epoll_create1" => SYS_epoll_create1,
        "epoll_ctl" => SYS_epoll_ctl,
        "epoll_pwait" => SYS_epoll_pwait,
        "epoll_pwait2" => SYS_epoll_pwait2,
        "eventfd2" => SYS_eventfd2,
        "execve" => SYS_execve,
        "execveat" => SYS_execveat,
        "exit" => SYS_exit,
        "exit_group" => SYS_exit_group,
        "faccessat" => SYS_faccessat,
        "faccessat2" => SYS_faccessat2,
        "fadvise64" => SYS_fadvise64,
        "fallocate" => SYS_fallocate,
        "fanotify_mark" => SYS_fanotify_mark,
        "fchdir" => SYS_fchdir,
        "fchmod" => SYS_fchmod,
        "fchmodat" => SYS_fchmodat,
        "fchown" => SYS_fchown,
        "fchownat" => SYS_fchownat,
        "fcntl" => SYS_fcntl,
        "fdatasync" => SYS_fdatasync,
        "fgetxattr" => SYS_fgetxattr,
        "flistxattr" => SYS_flistxattr,
        "flock" => SYS_flock,
        "fremovexattr" => SYS_fremovexattr,
        "fsetxattr" => SYS_fsetxattr,
        "fstat" => SYS_fstat,
        "fstatfs" => SYS_fstatfs,
        "fsync" => SYS_fsync,
        "ftruncate" => SYS_ftruncate,
        "futex" => SYS_futex,
        "futex_waitv" => SYS_futex_waitv,
        "getcpu" => SYS_getcpu,
        "getcwd" => SYS_getcwd,
        "getdents64" => SYS_getdents64,
        "getegid" => SYS_getegid,
        "geteuid" => SYS_geteuid,
        "getgid" => SYS_getgid,
        "getgroups" => SYS_getgroups,
        "getitimer" => SYS_getitimer,
        "getpeername" => SYS_getpeername,
        "getpgid" => SYS_getpgid,
        "getpid" => SYS_getpid,
        "getppid" => SYS_getppid,
        "getpriority" => SYS_getpriority,
        "getrandom" => SYS_getrandom,
        "getresgid" => SYS_getresgid,
        "getresuid" => SYS_getresuid,
        "get_robust_list" => SYS_get_robust_list,
        "getrusage" => SYS_getrusage,
        "getsid" => SYS_getsid,
        "getsockname" => SYS_getsockname,
        "getsockopt" => SYS_getsockopt,
        "gettid" => SYS_gettid,
        "gettimeofday" => SYS_gettimeofday,
        "getuid" => SYS_getuid,
        "getxattr" => SYS_getxattr,
        "inotify_add_watch" => SYS_inotify_add_watch,
        "inotify_init1" => SYS_inotify_init1,
        "inotify_rm_watch" => SYS_inotify_rm_watch,
        "io_cancel" => SYS_io_cancel,
        "ioctl" => SYS_ioctl,
        "io_destroy" => SYS_io_destroy,
        "io_getevents" => SYS_io_getevents,
        "ioprio_get" => SYS_ioprio_get,
        "ioprio_set" => SYS_ioprio_set,
        "io_setup" => SYS_io_setup,
        "io_submit" => SYS_io_submit,
        "kill" => SYS_kill,
        "landlock_add_rule" => SYS_landlock_add_rule,
        "landlock_create_ruleset" => SYS_landlock_create_ruleset,
        "landlock_restrict_self" => SYS_landlock_restrict_self,
        "lgetxattr" => SYS_lgetxattr,
        "linkat" => SYS_linkat,
        "listen" => SYS_listen,
        "listxattr" => SYS_listxattr,
        "llistxattr" => SYS_llistxattr,
        "lremovexattr" => SYS_lremovexattr,
        "lseek" => SYS_lseek,
        "lsetxattr" => SYS_lsetxattr,
        "madvise" => SYS_madvise,
        "membarrier" => SYS_membarrier,
        "memfd_create" => SYS_memfd_create,
        "memfd_secret" => SYS_memfd_secret,
        "mincore" => SYS_mincore,
        "mkdirat" => SYS_mkdirat,
        "mknodat" => SYS_mknodat,
        "mlock" => SYS_mlock,
        "mlock2" => SYS_mlock2,
        "mlockall" => SYS_mlockall,
        "mmap" => SYS_mmap,
        "mprotect" => SYS_mprotect,
        "mq_getsetattr" => SYS_mq_getsetattr,
        "mq_notify" => SYS_mq_notify,
        "mq_open" => SYS_mq_open,
        "mq_timedreceive" => SYS_mq_timedreceive,
        "mq_timedsend" => SYS_mq_timedsend,
        "mq_unlink" => SYS_mq_unlink,
        "mremap" => SYS_mremap,
        "msgctl" => SYS_msgctl,
        "msgget" => SYS_msgget,
        "msgrcv" => SYS_msgrcv,
        "msgsnd" => SYS_msgsnd,
        "msync" => SYS_msync,
        "munlock" => SYS_munlock,
        "munlockall" => SYS_munlockall,
        "munmap" => SYS_munmap,
        "name_to_handle_at" => SYS_name_to_handle_at,
        "nanosleep" => SYS_nanosleep,
        "newfstatat" => SYS_newfstatat,
        "openat" => SYS_openat,
        "openat2" => SYS_openat2,
        "pidfd_open" => SYS_pidfd_open,
        "pidfd_send_signal" => SYS_pidfd_send_signal,
        "pipe2" => SYS_pipe2,
        "pkey_alloc" => SYS_pkey_alloc,
        "pkey_free" => SYS_pkey_free,
        "pkey_mprotect" => SYS_pkey_mprotect,
        "ppoll" => SYS_ppoll,
        "prctl" => SYS_prctl,
        "pread64" => SYS_pread64,
        "preadv" => SYS_preadv,
        "preadv2" => SYS_preadv2,
        "prlimit64" => SYS_prlimit64,
        "process_mrelease" => SYS_process_mrelease,
        "pselect6" => SYS_pselect6,
        "pwrite64" => SYS_pwrite64,
        "pwritev" => SYS_pwritev,
        "pwritev2" => SYS_pwritev2,
        "read" => SYS_read,
        "readahead" => SYS_readahead,
        "readlinkat" => SYS_readlinkat,
        "readv" => SYS_readv,
        "recvfrom" => SYS_recvfrom,
        "recvmmsg" => SYS_recvmmsg,
        "recvmsg" => SYS_recvmsg,
        "remap_file_pages" => SYS_remap_file_pages,
        "removexattr" => SYS_removexattr,
        "renameat2" => SYS_renameat2,
        "restart_syscall" => SYS_restart_syscall,
        "rseq" => SYS_rseq,
        "rt_sigaction" => SYS_rt_sigaction,
        "rt_sigpending" => SYS_rt_sigpending,
        "rt_sigprocmask" => SYS_rt_sigprocmask,
        "rt_sigqueueinfo" => SYS_rt_sigqueueinfo,
        "rt_sigreturn" => SYS_rt_sigreturn,
        "rt_sigsuspend" => SYS_rt_sigsuspend,
        "rt_sigtimedwait" => SYS_rt_sigtimedwait,
        "rt_tgsigqueueinfo" => SYS_rt_tgsigqueueinfo,
        "sched_getaffinity" => SYS_sched_getaffinity,
        "sched_getattr" => SYS_sched_getattr,
        "sched_getparam" => SYS_sched_getparam,
        "sched_get_priority_max" => SYS_sched_get_priority_max,
        "sched_get_priority_min" => SYS_sched_get_priority_min,
        "sched_getscheduler" => SYS_sched_getscheduler,
        "sched_rr_get_interval" => SYS_sched_rr_get_interval,
        "sched_setaffinity" => SYS_sched_setaffinity,
        "sched_setattr" => SYS_sched_setattr,
        "sched_setparam" => SYS_sched_setparam,
        "sched_setscheduler" => SYS_sched_setscheduler,
        "sched_yield" => SYS_sched_yield,
        "seccomp" => SYS_seccomp,
        "semctl" => SYS_semctl,
        "semget" => SYS_semget,
        "semop" => SYS_semop,
        "semtimedop" => SYS_semtimedop,
        "sendfile" => SYS_sendfile,
        "sendmmsg" => SYS_sendmmsg,
        "sendmsg" => SYS_sendmsg,
        "sendto" => SYS_sendto,
        "setfsgid" => SYS_setfsgid,
        "setfsuid" => SYS_setfsuid,
        "setgid" => SYS_setgid,
        "setgroups" => SYS_setgroups,
        "setitimer" => SYS_setitimer,
        "setpgid" => SYS_setpgid,
        "setpriority" => SYS_setpriority,
        "setregid" => SYS_setregid,
        "setresgid" => SYS_setresgid,
        "setresuid" => SYS_setresuid,
        "setreuid" => SYS_setreuid,
        "set_robust_list" => SYS_set_robust_list,
        "setsid" => SYS_setsid,
        "setsockopt" => SYS_setsockopt,
        "set_tid_address" => SYS_set_tid_address,
        "setuid" => SYS_setuid,
        "setxattr" => SYS_setxattr,
        "shmat" => SYS_shmat,
        "shmctl" => SYS_shmctl,
        "shmdt" => SYS_shmdt,
        "shmget" => SYS_shmget,
        "shutdown" => SYS_shutdown,
        "sigaltstack" => SYS_sigaltstack,
        "signalfd4" => SYS_signalfd4,
        "socketpair" => SYS_socketpair,
        "splice" => SYS_splice,
        "statfs" => SYS_statfs,
        "statx" => SYS_statx,
        "symlinkat" => SYS_symlinkat,
        "sync" => SYS_sync,
        "syncfs" => SYS_syncfs,
        "sysinfo" => SYS_sysinfo,
        "tee" => SYS_tee,
        "tgkill" => SYS_tgkill,
        "timer_create" => SYS_timer_create,
        "timer_delete" => SYS_timer_delete,
        "timer_getoverrun" => SYS_timer_getoverrun,
        "timer_gettime" => SYS_timer_gettime,
        "timer_settime" => SYS_timer_settime,
        "timerfd_create" => SYS_timerfd_create,
        "timerfd_gettime" => SYS_timerfd_gettime,
        "timerfd_settime" => SYS_timerfd_settime,
        "times" => SYS_times,
        "tkill" => SYS_tkill,
        "truncate" => SYS_truncate,
        "umask" => SYS_umask,
        "uname" => SYS_uname,
        "unlinkat" => SYS_unlinkat,
        "utimensat" => SYS_utimensat,
        "vmsplice" => SYS_vmsplice,
        "wait4" => SYS_wait4,
        "waitid" => SYS_waitid,
        "write" => SYS_write,
        "writev" => SYS_writev,
        "process_vm_readv" => SYS_process_vm_readv,
        "process_vm_writev" => SYS_process_vm_writev,
        "ptrace" => SYS_ptrace,
        "socket" => SYS_socket,
        "personality" => SYS_personality,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "bpf" => SYS_bpf,
        "clone" => SYS_clone,
        "clone3" => SYS_clone3,
        "fanotify_init" => SYS_fanotify_init,
        "fsconfig" => SYS_fsconfig,
        "fsmount" => SYS_fsmount,
        "fsopen" => SYS_fsopen,
        "fspick" => SYS_fspick,
        "lookup_dcookie" => SYS_lookup_dcookie,
        "mount" => SYS_mount,
        "mount_setattr" => SYS_mount_setattr,
        "move_mount" => SYS_move_mount,
        "open_tree" => SYS_open_tree,
        "perf_event_open" => SYS_perf_event_open,
        "quotactl" => SYS_quotactl,
        "quotactl_fd" => SYS_quotactl_fd,
        "setdomainname" => SYS_setdomainname,
        "sethostname" => SYS_sethostname,
        "setns" => SYS_setns,
        "syslog" => SYS_syslog,
        "umount2" => SYS_umount2,
        "unshare" => SYS_unshare,
        "reboot" => SYS_reboot,
        "chroot" => SYS_chroot,
        "delete_module" => SYS_delete_module,
        "init_module" => SYS_init_module,
        "finit_module" => SYS_finit_module,
        "acct" => SYS_acct,
        "kcmp" => SYS_kcmp,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "process_madvise" => SYS_process_madvise,
        "settimeofday" => SYS_settimeofday,
        "clock_settime" => SYS_clock_settime,
        "vhangup" => SYS_vhangup,
        "get_mempolicy" => SYS_get_mempolicy,
        "mbind" => SYS_mbind,
        "set_mempolicy" => SYS_set_mempolicy,
        "set_mempolicy_home_node" => SYS_set_mempolicy_home_node,
        "io_pgetevents" => 292, // not in libc
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn number(_name: &str) -> Option<i64> {
    None
}

/// What the filter does with one system call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Allow,
    /// Fails with this errno (`clone3` → `ENOSYS`).
    Errno(u32),
    /// Allowed when the low 32 bits of argument `arg` are not `value` (`socket` but `AF_VSOCK`).
    AllowIfNot {
        arg: u32,
        value: u32,
    },
    /// Allowed when the low 32 bits of argument `arg` are one of `values` (`personality`).
    AllowIfOneOf {
        arg: u32,
        values: Vec<u32>,
    },
    /// Allowed when argument `arg` & `mask` is 0; the mask has no bit in the high word
    /// (`clone` without namespace flags).
    AllowIfMaskedZero {
        arg: u32,
        mask: u32,
    },
}

/// The compiled filter for one capability set: classic BPF, ready for `seccomp(2)`.
#[derive(Debug)]
pub struct Compiled {
    program: Vec<nix::libc::sock_filter>,
}

impl Compiled {
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Container(format!("seccomp: {e}"))
}

/// The rules of the default profile for a container whose capabilities (bounding set) are
/// `caps`, by system call number.
fn rules(caps: &[Capability]) -> BTreeMap<u32, Rule> {
    let has = |c: Capability| caps.contains(&c);
    let mut rules = BTreeMap::new();
    let mut set = |name: &str, rule: Rule| {
        if let Some(nr) = number(name) {
            // An unconditional allow wins over a conditional one.
            let e = rules.entry(nr as u32).or_insert_with(|| rule.clone());
            if rule == Rule::Allow {
                *e = Rule::Allow;
            }
        }
    };
    for n in ALLOW.iter().chain(BY_ARCH) {
        set(n, Rule::Allow);
    }
    // Kernels since 4.8 check seccomp after ptrace: moby allows these to everyone there.
    for n in ["ptrace", "process_vm_readv", "process_vm_writev"] {
        set(n, Rule::Allow);
    }
    for (cap, names) in BY_CAPABILITY {
        if has(*cap) {
            for n in *names {
                set(n, Rule::Allow);
            }
        }
    }
    set("socket", Rule::AllowIfNot { arg: 0, value: AF_VSOCK as u32 });
    set("personality", Rule::AllowIfOneOf { arg: 0, values: PERSONALITIES.iter().map(|p| *p as u32).collect() });
    if !has(Capability::CAP_SYS_ADMIN) {
        set("clone", Rule::AllowIfMaskedZero { arg: 0, mask: CLONE_NAMESPACE_FLAGS as u32 });
        set("clone3", Rule::Errno(nix::libc::ENOSYS as u32));
    }
    rules
}

// Classic BPF (linux/filter.h, linux/seccomp.h, linux/audit.h).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `struct seccomp_data`: `nr`, `arch`, then `args[6]` (u64) from offset 16.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg_low(arg: u32) -> u32 {
    16 + 8 * arg
}
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Where a conditional jump goes (8-bit offsets: labels must be near).
#[derive(Clone, Copy)]
enum To {
    Next,
    SkipOne,
    Label(usize),
}

/// An instruction whose jump targets are still labels.
enum Op {
    Stmt(u16, u32),
    Jump {
        code: u16,
        k: u32,
        jt: To,
        jf: To,
    },
    /// Unconditional jump to a label (32-bit offset: any distance).
    Ja(usize),
    Label(usize),
}

/// Builds the program as a balanced binary search over the system call numbers, so a call
/// is decided in about 2·log₂(n) instructions, and the kernel's per-filter action cache
/// (which emulates the filter for every system call number when it is installed) is cheap
/// to build.
struct Builder {
    ops: Vec<Op>,
    labels: usize,
    deny: u32,
}

impl Builder {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn ret(&mut self, k: u32) {
        self.ops.push(Op::Stmt(RET_K, k));
    }

    /// The instructions deciding `rule` (the call number is already matched).
    fn action(&mut self, rule: &Rule) {
        let deny = self.deny;
        match rule {
            Rule::Allow => self.ret(RET_ALLOW),
            Rule::Errno(e) => self.ret(RET_ERRNO | (e & 0xffff)),
            Rule::AllowIfNot { arg, value } => {
                self.ops.push(Op::Stmt(LD_W_ABS, off_arg_low(*arg)));
                let no = self.label();
                self.ops.push(Op::Jump { code: JEQ_K, k: *value, jt: To::Label(no), jf: To::Next });
                self.ret(RET_ALLOW);
                self.ops.push(Op::Label(no));
                self.ret(deny);
            }
            Rule::AllowIfOneOf { arg, values } => {
                self.ops.push(Op::Stmt(LD_W_ABS, off_arg_low(*arg)));
                let yes = self.label();
                for v in values {
                    self.ops.push(Op::Jump { code: JEQ_K, k: *v, jt: To::Label(yes), jf: To::Next });
                }
                self.ret(deny);
                self.ops.push(Op::Label(yes));
                self.ret(RET_ALLOW);
            }
            Rule::AllowIfMaskedZero { arg, mask } => {
                self.ops.push(Op::Stmt(LD_W_ABS, off_arg_low(*arg)));
                self.ops.push(Op::Stmt(AND_K, *mask));
                let yes = self.label();
                self.ops.push(Op::Jump { code: JEQ_K, k: 0, jt: To::Label(yes), jf: To::Next });
                self.ret(deny);
                self.ops.push(Op::Label(yes));
                self.ret(RET_ALLOW);
            }
        }
    }

    /// The search over `rules` (sorted by number); the accumulator holds the number.
    fn search(&mut self, rules: &[(u32, &Rule)]) {
        if rules.len() <= 4 {
            for (nr, rule) in rules {
                let next = self.label();
                // This number: over the jump, to its action; else on to the next number. (The
                // action changes the accumulator only on paths that return.)
                self.ops.push(Op::Jump { code: JEQ_K, k: *nr, jt: To::SkipOne, jf: To::Next });
                self.ops.push(Op::Ja(next));
                self.action(rule);
                self.ops.push(Op::Label(next));
            }
            let deny = self.deny;
            self.ret(deny);
            return;
        }
        let mid = rules.len() / 2;
        let right = self.label();
        // nr >= the middle number: to the right half (the next instruction jumps there).
        self.ops.push(Op::Jump { code: JGE_K, k: rules[mid].0, jt: To::Next, jf: To::SkipOne });
        self.ops.push(Op::Ja(right));
        self.search(&rules[..mid]);
        self.ops.push(Op::Label(right));
        self.search(&rules[mid..]);
    }

    /// Resolves labels into offsets.
    fn finish(self) -> Result<Vec<nix::libc::sock_filter>, Error> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for op in &self.ops {
            let here = out.len();
            let f = |code: u16, jt: u8, jf: u8, k: u32| nix::libc::sock_filter { code, jt, jf, k };
            match op {
                Op::Label(_) => continue,
                Op::Stmt(code, k) => out.push(f(*code, 0, 0, *k)),
                Op::Ja(l) => out.push(f(JA, 0, 0, (at[*l] - here - 1) as u32)),
                Op::Jump { code, k, jt, jf } => {
                    let off = |t: &To| -> Result<u8, Error> {
                        match t {
                            To::Next => Ok(0),
                            To::SkipOne => Ok(1),
                            To::Label(l) => u8::try_from(at[*l] - here - 1).map_err(|_| err("a jump is too long")),
                        }
                    };
                    out.push(f(*code, off(jt)?, off(jf)?, *k));
                }
            }
        }
        if out.len() > 4096 {
            return Err(err(format!("the filter has {} instructions, more than 4096", out.len())));
        }
        Ok(out)
    }
}

/// Compiles the default profile for a container whose capabilities (bounding set) are `caps`.
pub fn compile(caps: &[Capability]) -> Result<Compiled, Error> {
    let Some(audit_arch) = AUDIT_ARCH else {
        return Err(err(format!("no profile for {}", std::env::consts::ARCH)));
    };
    let deny = RET_ERRNO | nix::libc::EPERM as u32;
    let rules = rules(caps);
    let sorted: Vec<(u32, &Rule)> = rules.iter().map(|(nr, r)| (*nr, r)).collect();
    let mut b = Builder { ops: Vec::new(), labels: 0, deny };
    // Another architecture's calls (i386, x32 through its own audit value on some kernels,
    // arm on arm64) would be read against the wrong numbers: the process is killed.
    b.ops.push(Op::Stmt(LD_W_ABS, OFF_ARCH));
    b.ops.push(Op::Jump { code: JEQ_K, k: audit_arch, jt: To::SkipOne, jf: To::Next });
    b.ret(RET_KILL_PROCESS);
    let arch_ok = b.label();
    b.ops.push(Op::Label(arch_ok));
    b.ops.push(Op::Stmt(LD_W_ABS, OFF_NR));
    b.search(&sorted);
    Ok(Compiled { program: b.finish()? })
}

/// [`compile`], once per capability set in this process.
pub fn cached(caps: &[Capability]) -> Result<Arc<Compiled>, Error> {
    static CACHE: OnceLock<Mutex<BTreeMap<u64, Arc<Compiled>>>> = OnceLock::new();
    let key = caps.iter().fold(0u64, |k, c| k | c.bitmask());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let c = Arc::new(compile(caps)?);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, c.clone());
    Ok(c)
}

/// The same profile in the OCI runtime spec's form (`linux.seccomp` of `config.json`), for
/// containers run by an OCI runtime (runc resolves the names with libseccomp).
pub fn oci_profile(caps: &[Capability]) -> serde_json::Value {
    use serde_json::json;
    let has = |c: Capability| caps.contains(&c);
    let mut names: Vec<&str> = ALLOW.iter().chain(BY_ARCH).copied().collect();
    names.extend(["ptrace", "process_vm_readv", "process_vm_writev"]);
    for (cap, list) in BY_CAPABILITY {
        if has(*cap) {
            names.extend(list.iter().copied());
        }
    }
    let mut syscalls = vec![json!({"names": names, "action": "SCMP_ACT_ALLOW"})];
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]}));
    for p in PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    if !has(Capability::CAP_SYS_ADMIN) {
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": nix::libc::ENOSYS}));
    }
    let arches: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": nix::libc::EPERM, "architectures": arches,
        "syscalls": syscalls})
}

/// Compiles (into the cache) the filter of a container with Docker's default capabilities,
/// the common case, ahead of a start.
pub fn warm() {
    let caps: Vec<Capability> = super::native::DEFAULT_CAPS.iter().filter_map(|c| c.parse().ok()).collect();
    let _ = cached(&caps);
}

/// Installs the filter on the calling thread. Needs `no_new_privs` or CAP_SYS_ADMIN.
pub fn install(c: &Compiled) -> Result<(), String> {
    let prog = nix::libc::sock_fprog { len: c.program.len() as u16, filter: c.program.as_ptr() as *mut _ };
    // SAFETY: the kernel copies the program from `prog`, which points at live memory.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_seccomp,
            nix::libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const nix::libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(format!("installing the seccomp filter: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets `no_new_privs`: no `execve` of a setuid or file-capability binary gains privileges.
pub fn no_new_privs() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(format!("setting no_new_privs: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Capability> {
        crate::container::native::DEFAULT_CAPS.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn names_resolve_on_this_architecture() {
        if std::env::consts::ARCH != "x86_64" {
            return;
        }
        // 64-bit x86 has every name of the list but the 32-bit ABIs' own calls.
        let missing: Vec<&str> = ALLOW.iter().copied().filter(|n| number(n).is_none()).collect();
        for n in &missing {
            assert!(
                n.ends_with("32") || n.ends_with("64") || n.starts_with('_') || n.contains("time64") || {
                    ["ipc", "mmap2", "recv", "send", "sigprocmask", "sigreturn", "socketcall", "ugetrlimit", "waitpid"]
                        .contains(n)
                },
                "{n} has no number"
            );
        }
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("io_pgetevents"), Some(333));
        assert!(!ALLOW.iter().any(|n| n.starts_with("io_uring")), "Docker 25 removed io_uring");
    }

    /// Runs `f` in a forked child under the filter for `caps`; returns its exit code.
    fn under_filter(caps: &[Capability], f: impl FnOnce() -> i32) -> i32 {
        let compiled = compile(caps).unwrap();
        // SAFETY: the child only makes system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match install(&compiled) {
                    Ok(()) => f(),
                    Err(_) => 99,
                };
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { nix::libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, c) => c,
                other => panic!("child: {other:?}"),
            },
        }
    }

    fn errno_of(r: i64) -> i32 {
        if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    /// Each check is (what, result): the child exits with the number of the first that fails.
    #[test]
    fn the_default_profile_refuses_what_docker_refuses() {
        use nix::libc::*;
        let checks = || -> Vec<(&'static str, bool)> {
            // SAFETY: each call either fails or has no effect on memory (null pointers; a
            // successful unshare or clone is itself the failure reported, in a short-lived child).
            unsafe {
                vec![
                    ("getpid", errno_of(syscall(SYS_getpid)) == 0),
                    ("mount", errno_of(syscall(SYS_mount, 0, 0, 0, 0, 0)) == EPERM),
                    ("unshare", errno_of(syscall(SYS_unshare, CLONE_NEWNS)) == EPERM),
                    ("keyctl", errno_of(syscall(SYS_keyctl, 0, 0, 0, 0, 0)) == EPERM),
                    ("init_module", errno_of(syscall(SYS_init_module, 0, 0, 0)) == EPERM),
                    ("clone3", errno_of(syscall(SYS_clone3, 0, 0)) == ENOSYS),
                    ("clone NEWNS", errno_of(syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)) == EPERM),
                    ("vsock", errno_of(syscall(SYS_socket, AF_VSOCK as i64, SOCK_STREAM, 0)) == EPERM),
                    ("unix socket", syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0) >= 0),
                    ("personality query", errno_of(syscall(SYS_personality, 0xffff_ffffu32 as i64)) == 0),
                    ("personality other", errno_of(syscall(SYS_personality, 0x0040000)) == EPERM),
                ]
            }
        };
        let code = under_filter(&defaults(), || checks().iter().position(|(_, ok)| !ok).map_or(0, |i| i as i32 + 1));
        // (The checks run only in the filtered child: unfiltered, unshare and clone would work.)
        assert_eq!(code, 0, "check number {code} failed (counting from 1; 99: not installed)");
    }

    #[test]
    fn clone_without_namespace_flags_still_works() {
        let code = under_filter(&defaults(), || {
            // SAFETY: fork in a single-threaded child; the grandchild exits at once.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => unsafe { nix::libc::_exit(0) },
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    0
                }
                Err(_) => 1,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn capabilities_open_their_calls() {
        let mut caps = defaults();
        caps.push(Capability::CAP_SYS_ADMIN);
        let code = under_filter(&caps, || {
            // SAFETY: a namespace of this short-lived child only.
            let r = unsafe { nix::libc::syscall(nix::libc::SYS_unshare, nix::libc::CLONE_NEWUTS) };
            errno_of(r)
        });
        assert_ne!(code, nix::libc::EPERM, "with CAP_SYS_ADMIN the filter lets unshare through");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(code, 0);
        }
        let nr = number("clone3").unwrap() as u32;
        assert_eq!(rules(&caps).get(&nr), Some(&Rule::Allow));
        assert_eq!(rules(&defaults()).get(&nr), Some(&Rule::Errno(nix::libc::ENOSYS as u32)));
    }

    #[test]
    fn compiled_once_per_capability_set() {
        let a = cached(&defaults()).unwrap();
        let b = cached(&defaults()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cached(&[Capability::CAP_SYS_ADMIN]).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(a.len() > 300 && a.len() < 4096);
    }

    /// The start cost of the hardening, measured (BENCHMARKS.md): `cargo test -p estiba-runtime
    /// --lib measure_hardening_cost -- --ignored --nocapture` as root. A fork, exec of a static
    /// program and wait, with and without `no_new_privs` + the filters installed first
    /// (interleaved, medians), the filter's compilation, and the device program's load and
    /// attachment to a cgroup v2 directory.
    #[test]
    #[ignore]
    fn measure_hardening_cost() {
        use std::time::Instant;
        let prog = std::ffi::CString::new("/bin/true").unwrap();
        let argv = [prog.clone()];
        let caps = defaults();
        let compiled = compile(&caps).unwrap();
        let trivial = Compiled { program: vec![nix::libc::sock_filter { code: RET_K, jt: 0, jf: 0, k: RET_ALLOW }] };
        // 0: nothing; 1: no_new_privs; 2: and a one-instruction filter; 3: and the profile.
        let run = |mode: usize| -> f64 {
            let t = Instant::now();
            // SAFETY: the child only makes system calls, then execs or exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let ok = match mode {
                        0 => true,
                        1 => no_new_privs().is_ok(),
                        2 => no_new_privs().is_ok() && install(&trivial).is_ok(),
                        _ => no_new_privs().is_ok() && install(&compiled).is_ok(),
                    };
                    if !ok {
                        unsafe { nix::libc::_exit(99) }
                    }
                    let _ = nix::unistd::execv(&prog, &argv);
                    unsafe { nix::libc::_exit(127) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    let _ = nix::sys::wait::waitpid(child, None);
                }
            }
            t.elapsed().as_secs_f64() * 1e6
        };
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let mut times: [Vec<f64>; 4] = Default::default();
        for i in 0..440 {
            for k in 0..4 {
                let mode = (i + k) % 4;
                let t = run(mode);
                if i >= 40 {
                    times[mode].push(t);
                }
            }
        }
        let m: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
        let compile_us = median(
            (0..50)
                .map(|_| {
                    let t = Instant::now();
                    let _ = compile(&caps).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        );
        eprintln!(
            "fork+exec+wait of /bin/true, medians of 400 (us): plain {:.0}, no_new_privs {:.0}, + 1-instruction filter \
             {:.0}, + the profile {:.0}; the profile: {} instructions, compiled in {:.0} us (this build)",
            m[0],
            m[1],
            m[2],
            m[3],
            compiled.len(),
            compile_us
        );
        // In a child, on its own clock (less exposed to a busy machine than the above): the
        // time to set no_new_privs and install the filter, and the cost of one allowed system
        // call under it (getppid sits in the middle of the search).
        let inside = |filter: Option<&Compiled>| -> (f64, f64) {
            let (r, w) = nix::unistd::pipe().unwrap();
            // SAFETY: the child only makes system calls and writes to the pipe, then exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let t0 = Instant::now();
                    if let Some(f) = filter {
                        if no_new_privs().is_err() || install(f).is_err() {
                            unsafe { nix::libc::_exit(99) }
                        }
                    }
                    let setup = t0.elapsed().as_nanos() as u64;
                    let n = 20_000u64;
                    let t1 = Instant::now();
                    for _ in 0..n {
                        // SAFETY: a system call without arguments.
                        unsafe { nix::libc::syscall(nix::libc::SYS_getppid) };
                    }
                    let per = t1.elapsed().as_nanos() as u64 / n;
                    let mut buf = [0u8; 16];
                    buf[..8].copy_from_slice(&setup.to_ne_bytes());
                    buf[8..].copy_from_slice(&per.to_ne_bytes());
                    let _ = nix::unistd::write(&w, &buf);
                    unsafe { nix::libc::_exit(0) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    drop(w);
                    let mut buf = [0u8; 16];
                    let _ = std::io::Read::read_exact(&mut std::fs::File::from(r), &mut buf);
                    let _ = nix::sys::wait::waitpid(child, None);
                    let setup = u64::from_ne_bytes(buf[..8].try_into().unwrap()) as f64 / 1e3;
                    let per = u64::from_ne_bytes(buf[8..].try_into().unwrap()) as f64;
                    (setup, per)
                }
            }
        };
        let (mut setups, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..100 {
            let (s, p) = inside(Some(&compiled));
            setups.push(s);
            with.push(p);
            without.push(inside(None).1);
        }
        eprintln!(
            "in a child, medians of 100: no_new_privs + install {:.0} us; getppid {:.0} ns with the filter, {:.0} ns without",
            median(setups),
            median(with),
            median(without)
        );
        let root = std::path::Path::new("/sys/fs/cgroup/unified");
        if nix::sys::statfs::statfs(root).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC) {
            let mut times = Vec::new();
            for i in 0..50 {
                let cg = root.join(format!("estiba-devcost-{}-{i}", std::process::id()));
                std::fs::create_dir(&cg).unwrap();
                let t = Instant::now();
                crate::container::devices::attach(&cg, crate::container::cgroup::device_rules()).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e6);
                let _ = std::fs::remove_dir(&cg);
            }
            eprintln!("device program load + attach, median of 50: {:.0} us", median(times));
        }
    }
}
