/*
 * LD_PRELOAD shim for the S3 server of the tests (test/harness/s3.rs) and of test/bench/s3.sh:
 * sets TCP_NODELAY on every socket s3s-fs accepts. s3s-fs 0.14.1 does not, and writes a GET's
 * response head and body in separate pieces, so the last small piece waited ~40 ms for the
 * client's delayed ACK of the ones before (Nagle): a per-request stall of the server, not of
 * the clients being compared, which made small-file restores take ~20 s whatever the tool did.
 * accept4 and accept are looked up with dlsym(RTLD_NEXT) and called unchanged; setsockopt
 * failing (a socket that is not TCP) is ignored.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd)
{
    int one = 1;

    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    int c;

    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    c = real(fd, addr, len, flags);
    nodelay(c);
    return c;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    static int (*real)(int, struct sockaddr *, socklen_t *);
    int c;

    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    c = real(fd, addr, len);
    nodelay(c);
    return c;
}
