// walrusd's malloc settings, made before main() and so before any thread exists.
//
// glibc gives each thread that allocates beside another its own arena. Every arena but the main
// one is a 64 MiB reservation whose heap grows by mprotect one page at a time (glibc applies no
// top pad to them), while the main arena grows by brk with a 128 KiB pad. A follower catching up
// inserts a million keys a second on its link thread: strace counted 29,876 mprotect calls for
// 1M keys (685 brk with one arena), and perf put 37% of that thread's time in page faults and
// 13% in mprotect. With one arena, 18 interleaved catch-ups of 1M records each way: median 281
// MB/s (171-308) against 262 (179-290), follower CPU median 0.54 s against 0.575 s. The primary's
// durable SET costs the same (callgrind and CPU-us per SET; tcache keeps the event loops' and the
// flusher's small allocations off the arena lock). An operator who names an arena setting in
// GLIBC_TUNABLES or MALLOC_ARENA_MAX gets it: this leaves glibc alone then.
#include "WalrusMallocTuning.h"

#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static int walrus_arena_max = 0;

__attribute__((constructor))
static void walrus_malloc_tune(void) {
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (tunables != NULL && strstr(tunables, "arena_") != NULL) return;
    const char *arenas = getenv("MALLOC_ARENA_MAX");
    if (arenas != NULL && arenas[0] != '\0') return;
    if (mallopt(M_ARENA_MAX, 1) == 1) walrus_arena_max = 1;
#endif
}

int walrus_malloc_arena_max(void) { return walrus_arena_max; }
