#ifndef WALRUS_PREFETCH_H
#define WALRUS_PREFETCH_H

/// Ask the CPU to start loading the cache line at `address` (a hint: never faults, never
/// blocks). Swift has no prefetch intrinsic; the store's hash map issues one per key a few
/// keys ahead when it applies a batch, so the table's random accesses overlap.
static inline void walrus_prefetch(const void *address) { __builtin_prefetch(address, 1, 3); }

#endif
