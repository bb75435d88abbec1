// Fault injection for tests: preloaded into walrusd (LD_PRELOAD), it makes fdatasync and fsync
// fail with EIO while the file named by WALRUS_FAULT_TRIGGER exists — what a failing disk returns.
// Everything else, and those calls while the file is absent, go to the C library unchanged.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int triggered(void) {
    const char *path = getenv("WALRUS_FAULT_TRIGGER");
    return path != NULL && access(path, F_OK) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (triggered()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (triggered()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
