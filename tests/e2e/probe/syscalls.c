/* Probe run inside a container by test_hardening.py: tries the system calls a hardened
 * container must not make and prints `name=errno` for each (0 when the call succeeded).
 * Built static by the test with the host's C compiler, so it needs nothing in the image. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void report(const char *name, long r) { printf("%s=%d\n", name, r < 0 ? errno : 0); }

int main(int argc, char **argv) {
    /* A process outside the container (its PID in the host's namespace). */
    pid_t host = argc > 1 ? (pid_t)atoi(argv[1]) : 1;
    char buf[8];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
    report("add_key", syscall(SYS_add_key, "user", "k", "v", 1, -3));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("unshare_mnt", syscall(SYS_unshare, CLONE_NEWNS));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, ""));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("ptrace_host", syscall(SYS_ptrace, PTRACE_ATTACH, host, 0, 0));
    report("vm_read_host", syscall(SYS_process_vm_readv, host, &local, 1, &remote, 1, 0));
    report("kcmp", syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 0, 0));
    report("socket_vsock", syscall(SYS_socket, 40 /* AF_VSOCK */, 1, 0));
    report("getpid", syscall(SYS_getpid));
    return 0;
}
