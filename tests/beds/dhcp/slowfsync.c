/*
 * A slow disk in user space, for tests/beds/dhcp/bench.sh: an LD_PRELOAD
 * shim that makes every fsync() and fdatasync() take SLOW_FSYNC_MS (20)
 * milliseconds longer, as a cheap USB stick does, before doing the real
 * call. With SLOW_FSYNC_PREFIX set, only files whose path starts with it
 * are slowed (the state directory), everything else syncs at full speed.
 * At exit it prints how many calls it slowed to stderr, so a bench can tell
 * that the shim was in the process at all.
 *
 *   gcc -O2 -shared -fPIC -o slowfsync.so slowfsync.c -ldl
 *   LD_PRELOAD=./slowfsync.so SLOW_FSYNC_MS=20 kickstand serve
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long slowed, passed;

static int wanted(int fd)
{
    const char *prefix = getenv("SLOW_FSYNC_PREFIX");
    char link[64], path[PATH_MAX];
    ssize_t n;

    if (!prefix || !*prefix)
        return 1;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = '\0';
    return strncmp(path, prefix, strlen(prefix)) == 0;
}

static void stall(int fd)
{
    const char *env = getenv("SLOW_FSYNC_MS");
    long ms = env ? atol(env) : 20;
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    int saved = errno;

    if (!wanted(fd)) {
        __atomic_fetch_add(&passed, 1, __ATOMIC_RELAXED);
        return;
    }
    __atomic_fetch_add(&slowed, 1, __ATOMIC_RELAXED);
    while (nanosleep(&left, &left) == -1 && errno == EINTR)
        ;
    errno = saved;
}

int fsync(int fd)
{
    static int (*real)(int);

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    stall(fd);
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    stall(fd);
    return real(fd);
}

__attribute__((destructor)) static void report(void)
{
    fprintf(stderr, "slowfsync: %lu calls slowed, %lu passed\n",
            __atomic_load_n(&slowed, __ATOMIC_RELAXED),
            __atomic_load_n(&passed, __ATOMIC_RELAXED));
}
