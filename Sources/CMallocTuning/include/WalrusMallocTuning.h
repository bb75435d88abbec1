#ifndef WALRUS_MALLOC_TUNING_H
#define WALRUS_MALLOC_TUNING_H

/// The glibc malloc arena limit walrusd set before its first thread started: 1, or 0 when it
/// left glibc alone (GLIBC_TUNABLES or MALLOC_ARENA_MAX names an arena setting, or not glibc).
int walrus_malloc_arena_max(void);

#endif
