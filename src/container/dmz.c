/*
 * berth-dmz: the only program berth executes inside a container.
 *
 * Why it exists: the process that calls execve() for the container's command
 * must not be berth's own binary. If it were, an image whose command is a
 * script starting `#!/proc/self/exe` gets berth re-executed inside the
 * container (with the image's own dynamic loader), keeps it open and reopens
 * it for writing once berth has exited: the CVE-2019-5736 class of escape,
 * since a rootless berth's binary belongs to the very user that container
 * root maps to. berth therefore carries this program, copies it into a sealed
 * memfd (a few KiB, no write, grow or shrink possible) and execs that; from
 * then on /proc/self/exe inside the container is the sealed copy.
 *
 * It is also the container's init with `--init` (what tini is to Docker): it
 * runs under the container's own identity, capabilities, no_new_privs and
 * seccomp filter, forwards signals to the command, reaps every orphan and
 * exits with the command's status.
 *
 * Hand-written, freestanding C with raw system calls, because no crate gives
 * a static executable of a few KiB that a Rust build can embed; the static
 * Rust alternatives (std with musl) weigh hundreds of KiB to copy per start.
 *
 * Command line, set by berth (src/container/dmz.rs):
 *   berth-exec ERRFD ARG0 ARGS...   execve the command (PATH search as
 *                                   execvp does), else report on ERRFD
 *   berth-init ERRFD ARG0 ARGS...   the same in a child; reap and forward
 * A failure is written to ERRFD as "CODE:message", Docker's codes: 126 the
 * file is there but cannot run, 127 it is not there. ERRFD is close-on-exec
 * for the command, so berth sees end-of-file once the command runs.
 */

#include <asm/unistd.h>

typedef unsigned long size_t;
typedef long ssize_t;

#define ENOENT 2
#define E2BIG 7
#define ENOEXEC 8
#define ENOMEM 12
#define EACCES 13
#define EPERM 1
#define EIO 5
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ETXTBSY 26
#define ENAMETOOLONG 36
#define ELOOP 40
#define ELIBBAD 80
#define EINTR 4
#define ECHILD 10

#define F_SETFD 2
#define FD_CLOEXEC 1
#define SIG_SETMASK 2
#define SIGCHLD 17
#define WNOHANG 1
#define PR_SET_NAME 15

#if defined(__x86_64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call dmz_main\n"
        "  hlt\n");

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  bl dmz_main\n"
        "  b .\n");

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#error "berth-dmz: add the system call convention of this architecture"
#endif

#define sys(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

/* The compiler may emit calls to these for copies and zeroing. */
void *memset(void *dst, int c, size_t n)
{
    volatile unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    volatile unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

static __attribute__((noreturn)) void die(int code)
{
    for (;;)
        sys(__NR_exit_group, code, 0, 0);
}

static size_t len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static int has_slash(const char *s)
{
    for (; *s; s++)
        if (*s == '/')
            return 1;
    return 0;
}

/* A message being built, cut at its size. */
struct msg {
    char buf[512];
    size_t n;
};

static void put(struct msg *m, const char *s)
{
    while (*s && m->n < sizeof m->buf)
        m->buf[m->n++] = *s++;
}

static void put_num(struct msg *m, long v)
{
    char digits[24];
    int i = 0;
    if (v < 0) {
        put(m, "-");
        v = -v;
    }
    do {
        digits[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i < (int)sizeof digits);
    while (i--) {
        char one[2] = {digits[i], 0};
        put(m, one);
    }
}

/* strerror's words, lower case as berth prints them. */
static const char *describe(long err)
{
    switch (err) {
    case EPERM: return "operation not permitted";
    case ENOENT: return "no such file or directory";
    case EIO: return "input/output error";
    case E2BIG: return "argument list too long";
    case ENOEXEC: return "exec format error";
    case ENOMEM: return "cannot allocate memory";
    case EACCES: return "permission denied";
    case ENOTDIR: return "not a directory";
    case EISDIR: return "is a directory";
    case EINVAL: return "invalid argument";
    case ETXTBSY: return "text file busy";
    case ENAMETOOLONG: return "file name too long";
    case ELOOP: return "too many levels of symbolic links";
    case ELIBBAD: return "accessing a corrupted shared library";
    default: return 0;
    }
}

static __attribute__((noreturn)) void report(int errfd, int code, const char *name, long err)
{
    struct msg m;
    m.n = 0;
    put_num(&m, code);
    put(&m, ":exec: \"");
    put(&m, name);
    put(&m, "\": ");
    if (code == 127 && !has_slash(name)) {
        put(&m, "executable file not found in $PATH");
    } else if (describe(err)) {
        put(&m, describe(err));
    } else {
        put(&m, "error ");
        put_num(&m, err);
    }
    const char *p = m.buf;
    size_t left = m.n;
    while (left) {
        long w = sys(__NR_write, errfd, p, left);
        if (w == -EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
    die(code);
}

/* execvp's search: NAME with a slash as it is, else each directory of PATH.
 * The most telling error wins: anything but "not found" means the file is
 * there but cannot run. */
static __attribute__((noreturn)) void run(int errfd, char **args, char **envp)
{
    const char *name = args[0];
    if (sys(__NR_fcntl, errfd, F_SETFD, FD_CLOEXEC) < 0)
        die(125);
    if (has_slash(name)) {
        long err = sys(__NR_execve, name, args, envp);
        report(errfd, (err == -ENOENT || err == -ENOTDIR) ? 127 : 126, name, -err);
    }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char **e = envp; *e; e++)
        if (starts_with(*e, "PATH="))
            path = *e + 5;
    long worst = 0;
    size_t name_len = len(name);
    char candidate[4096];
    while (1) {
        const char *end = path;
        while (*end && *end != ':')
            end++;
        size_t dir_len = (size_t)(end - path);
        if (dir_len && dir_len + 1 + name_len < sizeof candidate) {
            memcpy(candidate, path, dir_len);
            candidate[dir_len] = '/';
            memcpy(candidate + dir_len + 1, name, name_len + 1);
            long err = sys(__NR_execve, candidate, args, envp);
            if (err != -ENOENT && err != -ENOTDIR && !worst)
                worst = -err;
        }
        if (!*end)
            break;
        path = end + 1;
    }
    if (worst)
        report(errfd, 126, name, worst);
    report(errfd, 127, name, ENOENT);
}

static int parse_fd(const char *s)
{
    int v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* PID 1 with --init: every signal is taken with sigtimedwait and passed on to
 * the command (blocked signals reach a pid namespace's init even from inside
 * it), every child that ends is reaped, and the command's end is ours. */
static __attribute__((noreturn)) void init(int errfd, char **args, char **envp)
{
    unsigned long all = ~0UL, old = 0;
    if (sys6(__NR_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8, 0, 0) < 0)
        die(125);
    long child = sys6(__NR_clone, SIGCHLD, 0, 0, 0, 0, 0);
    if (child < 0)
        report(errfd, 125, args[0], -child);
    if (child == 0) {
        sys6(__NR_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
        run(errfd, args, envp);
    }
    sys(__NR_close, errfd, 0, 0);
    unsigned char info[128];
    for (;;) {
        long sig = sys6(__NR_rt_sigtimedwait, (long)&all, (long)info, 0, 8, 0, 0);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            sys(__NR_kill, child, sig, 0);
            continue;
        }
        for (;;) {
            int status = 0;
            long pid = sys6(__NR_wait4, -1, (long)&status, WNOHANG, 0, 0, 0);
            if (pid <= 0)
                break;
            if (pid != child)
                continue;
            if ((status & 0x7f) == 0)
                die((status >> 8) & 0xff);
            die(128 + (status & 0x7f));
        }
    }
}

__attribute__((used)) void dmz_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    if (argc < 3)
        die(127);
    int errfd = parse_fd(argv[1]);
    if (errfd < 3)
        die(127);
    int is_init = argv[0][0] && len(argv[0]) == 10 && starts_with(argv[0], "berth-init");
    int is_exec = argv[0][0] && len(argv[0]) == 10 && starts_with(argv[0], "berth-exec");
    if (!is_init && !is_exec)
        die(127);
    sys(__NR_prctl, PR_SET_NAME, argv[0], 0);
    if (is_init)
        init(errfd, argv + 2, envp);
    run(errfd, argv + 2, envp);
}
