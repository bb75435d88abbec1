// The Lua side of walrus's scripts: one sandboxed Lua 5.1 state, as Redis 7.0 sets its own up
// (libraries, the `redis` table, globals protection, readonly library tables, the error handler),
// and the conversions between RESP replies and Lua values in both directions.
//
// Every Lua API call is made here, inside a protected call: a Lua error unwinds with longjmp, and
// it must never unwind through Swift frames. The host (Swift) is called back only for what needs
// the server — running a command, the interrupt check, logging, SHA1 — and never calls Lua from
// inside a callback.
#ifndef WALRUS_LUA_H
#define WALRUS_LUA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A growable byte buffer (malloc'd): replies and error texts come back in one.
typedef struct walrus_buffer {
    char *data;
    size_t length;
    size_t capacity;
} walrus_buffer;

void walrus_buffer_free(walrus_buffer *buffer);

typedef struct walrus_lua_host {
    void *context;
    /// redis.call / redis.pcall: run argv (argv[0] the command) and return its reply, RESP 2 or 3
    /// as `resp` says (the script's redis.setresp), host-owned until the next call.
    const char *(*call)(void *context, int resp, int argc, const char *const *argv, const size_t *lengths,
                        size_t *reply_length);
    /// Every 100,000 Lua instructions: non-zero stops the script (SCRIPT KILL, SHUTDOWN NOSAVE).
    int (*interrupt)(void *context);
    /// redis.log(level, …): level 0 debug, 1 verbose, 2 notice, 3 warning.
    void (*log)(void *context, int level, const char *message, size_t length);
    /// redis.sha1hex: 40 lower-case hex digits into out.
    void (*sha1hex)(const char *data, size_t length, char *out);
    /// redis.acl_check_cmd: whether a command of that name exists (1), else 0.
    int (*command_exists)(void *context, const char *name, size_t length);
} walrus_lua_host;

typedef struct walrus_lua walrus_lua;

/// A fresh state with Redis's libraries and sandbox; NULL if Lua could not start.
/// `version` is what redis.REDIS_VERSION says; `version_number` REDIS_VERSION_NUM.
walrus_lua *walrus_lua_open(walrus_lua_host host, size_t memory_limit, const char *version, int version_number);
void walrus_lua_close(walrus_lua *lua);

/// The Lua heap's bound: an allocation past it fails as "not enough memory".
void walrus_lua_set_memory_limit(walrus_lua *lua, size_t bytes);
/// Bytes the Lua heap holds now (INFO used_memory_lua).
size_t walrus_lua_memory(walrus_lua *lua);

/// Compile `body` as the function of script `sha` (40 hex digits). 0 on success; otherwise the
/// compiler's message ("user_script:1: …") is in `error`.
int walrus_lua_define(walrus_lua *lua, const char *sha, const char *body, size_t length, walrus_buffer *error);
/// Whether script `sha` is compiled in this state.
int walrus_lua_defined(walrus_lua *lua, const char *sha);
/// Forget one compiled script.
void walrus_lua_undefine(walrus_lua *lua, const char *sha);

/// Run script `sha` with KEYS and ARGV; its reply, as RESP for a client speaking `caller_resp`,
/// goes into `out`. The host's interrupt check runs every `hook_count` instructions (0: 100,000). Returns 0 for a reply, 1 for an error reply, 2 for an error reply that
/// passes on a command's error (already counted in the error statistics when it happened).
int walrus_lua_run(walrus_lua *lua, const char *sha, int caller_resp, int nkeys, const char *const *keys,
                   const size_t *key_lengths, int nargs, const char *const *args, const size_t *arg_lengths,
                   int hook_count, walrus_buffer *out);

#ifdef __cplusplus
}
#endif

#endif
