#ifndef WALRUS_THREAD_STATE_H
#define WALRUS_THREAD_STATE_H

/// The calling thread's inline-seal state (`InlineSeal` in WALCore). Swift has no thread-local
/// variables; through a pthread key each access was a call to pthread_getspecific or
/// pthread_setspecific, ~200 user-space instructions per durable SET in all (callgrind, -c 200).
/// A C thread-local read or written by these inline functions is a load or a store.
extern _Thread_local long walrus_inline_seal_state;

static inline long walrus_inline_seal_state_get(void) { return walrus_inline_seal_state; }
static inline void walrus_inline_seal_state_set(long state) { walrus_inline_seal_state = state; }

#endif
