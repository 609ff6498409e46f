/*
 * powercut.so: an LD_PRELOAD library that makes `kill -9` behave like a power cut for the files
 * under one directory (POWERCUT_DIR).
 *
 * A real power cut loses whatever the kernel had not yet written to stable storage: data
 * written with write(2) but not fsync'ed. A plain `kill -9` loses nothing (the page cache
 * survives), so a test of "acknowledged means durable" needs help. This library journals every
 * data write to a file under POWERCUT_DIR, before it happens, as
 *
 *     W <path> <offset> <length> <size-before>
 *
 * and every fsync/fdatasync/sync_file_range(WAIT_AFTER)/fdatasync-by-O_SYNC as `S <path>`, to
 * POWERCUT_JOURNAL (outside the directory). After the process is killed, the test replays the
 * journal and cuts every file back to what was synced: for each path, the writes after its
 * last `S` are undone by truncating to the smallest size-before among them (writes are appends
 * in RocksDB: WAL, MANIFEST, SST). Writes *inside* a file's old size cannot be undone this way;
 * they are journaled as `O` and the test counts them (expected 0 for RocksDB).
 *
 * Metadata (create, rename, unlink) is treated as durable as soon as it happens: this models a
 * power cut losing data, not directory entries; RocksDB fsyncs directories itself.
 *
 * Fault injection (same library): while the file named by POWERCUT_FAIL_SYNC exists, every
 * fsync/fdatasync of a file under POWERCUT_DIR fails with EIO (without syncing); while the file
 * named by POWERCUT_FAIL_WRITE exists, every write to a RocksDB WAL file (`*.log`) under it fails
 * with EIO. Each injected fault is journaled as `F sync|write <path>`.
 *
 * Build: cc -shared -fPIC -O2 -o libpowercut.so powercut.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *paths[MAX_FDS];
static int journal_fd = -1;
static char dir[PATH_MAX];
static size_t dir_len;
static int ready;
static char fail_sync[PATH_MAX];
static char fail_write[PATH_MAX];

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off_t, off_t, unsigned int);

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_sync_file_range = dlsym(RTLD_NEXT, "sync_file_range");
    const char *d = getenv("POWERCUT_DIR");
    const char *j = getenv("POWERCUT_JOURNAL");
    if (!d || !j || !realpath(d, dir)) {
        return;
    }
    dir_len = strlen(dir);
    const char *fs = getenv("POWERCUT_FAIL_SYNC");
    const char *fw = getenv("POWERCUT_FAIL_WRITE");
    if (fs) snprintf(fail_sync, sizeof fail_sync, "%s", fs);
    if (fw) snprintf(fail_write, sizeof fail_write, "%s", fw);
    journal_fd = real_open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ready = journal_fd >= 0;
}

static void journal(const char *fmt, ...) {
    char line[PATH_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof line) {
        real_write(journal_fd, line, (size_t)n);
    }
}

/* Remembers fd -> absolute path when the file lies under POWERCUT_DIR. */
static void track(int fd, int dirfd, const char *path) {
    if (!ready || fd < 0 || fd >= MAX_FDS || !path) {
        return;
    }
    char abs[PATH_MAX * 2 + 2];
    if (path[0] == '/') {
        snprintf(abs, sizeof abs, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t len = readlink(link, base, sizeof base - 1);
            if (len < 0) return;
            base[len] = 0;
        }
        snprintf(abs, sizeof abs, "%s/%s", base, path);
    }
    char resolved[PATH_MAX];
    if (!realpath(abs, resolved)) return;
    if (strncmp(resolved, dir, dir_len) != 0 || (resolved[dir_len] != '/' && resolved[dir_len])) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    pthread_mutex_lock(&lock);
    free(paths[fd]);
    paths[fd] = strdup(resolved);
    pthread_mutex_unlock(&lock);
}

static void before_write(int fd, off_t offset, size_t len) {
    if (!ready || fd < 0 || fd >= MAX_FDS || len == 0) return;
    pthread_mutex_lock(&lock);
    if (paths[fd]) {
        struct stat st;
        if (fstat(fd, &st) == 0) {
            if (offset < 0) offset = lseek(fd, 0, SEEK_CUR);
            if (offset < st.st_size) {
                journal("O %s %lld %zu %lld\n", paths[fd], (long long)offset, len, (long long)st.st_size);
            } else {
                journal("W %s %lld %zu %lld\n", paths[fd], (long long)offset, len, (long long)st.st_size);
            }
        }
    }
    pthread_mutex_unlock(&lock);
}

/* Whether a fault of this kind is armed (its trigger file exists) for fd; journals it. */
static int fault(int fd, const char *trigger, const char *kind, int wal_only) {
    if (!ready || !trigger[0] || fd < 0 || fd >= MAX_FDS) return 0;
    int hit = 0;
    pthread_mutex_lock(&lock);
    if (paths[fd] && access(trigger, F_OK) == 0) {
        size_t n = strlen(paths[fd]);
        if (!wal_only || (n > 4 && strcmp(paths[fd] + n - 4, ".log") == 0)) {
            journal("F %s %s\n", kind, paths[fd]);
            hit = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return hit;
}

static void synced(int fd) {
    if (!ready || fd < 0 || fd >= MAX_FDS) return;
    pthread_mutex_lock(&lock);
    if (paths[fd]) journal("S %s\n", paths[fd]);
    pthread_mutex_unlock(&lock);
}

static size_t iov_len(const struct iovec *iov, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    return total;
}

#define OPEN_MODE(flags, mode) \
    mode_t mode = 0; \
    if ((flags) & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }

int open(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    int fd = real_open(path, flags, mode);
    if (fd >= 0 && (flags & O_SYNC)) { /* O_SYNC writes are synced writes: track nothing */ return fd; }
    track(fd, AT_FDCWD, path);
    return fd;
}
int open64(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    int fd = real_open64(path, flags, mode);
    if (fd >= 0 && (flags & O_SYNC)) return fd;
    track(fd, AT_FDCWD, path);
    return fd;
}
int openat(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    int fd = real_openat(dirfd, path, flags, mode);
    if (fd >= 0 && (flags & O_SYNC)) return fd;
    track(fd, dirfd, path);
    return fd;
}
int openat64(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    int fd = real_openat64(dirfd, path, flags, mode);
    if (fd >= 0 && (flags & O_SYNC)) return fd;
    track(fd, dirfd, path);
    return fd;
}
int close(int fd) {
    if (ready && fd >= 0 && fd < MAX_FDS) {
        pthread_mutex_lock(&lock);
        free(paths[fd]);
        paths[fd] = NULL;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}
ssize_t write(int fd, const void *buf, size_t n) {
    if (fault(fd, fail_write, "write", 1)) { errno = EIO; return -1; }
    before_write(fd, -1, n);
    return real_write(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (fault(fd, fail_write, "write", 1)) { errno = EIO; return -1; }
    before_write(fd, off, n);
    return real_pwrite(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    if (fault(fd, fail_write, "write", 1)) { errno = EIO; return -1; }
    before_write(fd, off, n);
    return real_pwrite64(fd, buf, n, off);
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    if (fault(fd, fail_write, "write", 1)) { errno = EIO; return -1; }
    before_write(fd, -1, iov_len(iov, cnt));
    return real_writev(fd, iov, cnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    if (fault(fd, fail_write, "write", 1)) { errno = EIO; return -1; }
    before_write(fd, off, iov_len(iov, cnt));
    return real_pwritev(fd, iov, cnt, off);
}
int fsync(int fd) {
    if (fault(fd, fail_sync, "sync", 0)) { errno = EIO; return -1; }
    int r = real_fsync(fd);
    if (r == 0) synced(fd);
    return r;
}
int fdatasync(int fd) {
    if (fault(fd, fail_sync, "sync", 0)) { errno = EIO; return -1; }
    int r = real_fdatasync(fd);
    if (r == 0) synced(fd);
    return r;
}
int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
    /* Only a full-file WAIT_AFTER range counts as durable; partial ranges are ignored. */
    int r = real_sync_file_range(fd, off, n, flags);
    if (r == 0 && off == 0 && n == 0 && (flags & SYNC_FILE_RANGE_WAIT_AFTER)) synced(fd);
    return r;
}
