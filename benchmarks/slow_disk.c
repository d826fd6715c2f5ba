/* A disk whose flush is slow, for one benchmark PostgreSQL server (benchmarks/slow_disk.py).
 *
 * Loaded with LD_PRELOAD into a private cluster's processes: fdatasync() and fsync() first
 * sleep BENCH_FLUSH_DELAY_US microseconds, then do the real call. Every other system call
 * is untouched, so what changes is only how long a WAL flush (and a checkpoint's fsync)
 * holds its caller — as on a NAS's spinning disks, where a flush takes milliseconds, not
 * the ~0.1 ms of this VM's virtio disk. Benchmark-only; nothing in runner/ uses it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static long delay_ns(void)
{
    static long ns = -1;
    if (ns < 0) {
        const char *us = getenv("BENCH_FLUSH_DELAY_US");
        ns = us ? atol(us) * 1000L : 0;
    }
    return ns;
}

static void slow_flush(void)
{
    long ns = delay_ns();
    struct timespec left = { ns / 1000000000L, ns % 1000000000L };
    int saved = errno;
    /* a signal (PostgreSQL's latches use them) must not cut the flush short */
    while (ns > 0 && nanosleep(&left, &left) == -1 && errno == EINTR)
        ;
    errno = saved;
}

/* The real call of that name, after the flush's wait. */
static int slow(int (**real)(int), const char *name, int fd)
{
    if (!*real)
        *real = (int (*)(int))dlsym(RTLD_NEXT, name);
    slow_flush();
    return (*real)(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    return slow(&real, "fdatasync", fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    return slow(&real, "fsync", fd);
}
