// See WalrusLua.h. Redis 7.0's src/script_lua.c and src/eval.c are the reference for every
// behaviour and message here; Redis patches its bundled Lua for readonly tables, walrus uses
// Debian's stock Lua 5.1 and builds the same protection from proxy tables and metatables.
#include "WalrusLua.h"

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int luaopen_cjson(lua_State *L);
extern int luaopen_bit(lua_State *L);

struct walrus_lua {
    lua_State *L;
    walrus_lua_host host;
    size_t used;
    size_t limit;
    /// A script is running (redis.call is allowed only then).
    int running;
    /// The script's RESP version (redis.setresp), 2 at each start.
    int script_resp;
    /// redis.call's argument vector, reused between calls.
    const char **argv;
    size_t *lengths;
    char *numbers;
    int capacity;
    unsigned runs;
    /// The error reply being written carries ignore_error_stats_update (a command's error the
    /// server counted when it happened).
    int error_counted;
};

// Registry keys.
static const char *const GLOBALS_KEY = "walrus.globals";      // the real global table (G)
static const char *const PROTECTED_KEY = "walrus.protected";  // weak set of readonly tables
static const char *const HANDLER_KEY = "walrus.errorhandler";

#define ARGS_PER_NUMBER 32

// MARK: Buffers

void walrus_buffer_free(walrus_buffer *buffer) {
    free(buffer->data);
    buffer->data = NULL;
    buffer->length = buffer->capacity = 0;
}

static void buffer_reserve(walrus_buffer *b, size_t more) {
    if (b->length + more <= b->capacity) return;
    size_t capacity = b->capacity ? b->capacity : 256;
    while (capacity < b->length + more) capacity *= 2;
    char *data = realloc(b->data, capacity);
    if (!data) abort();  // the process is out of memory: nothing sensible is left to do
    b->data = data;
    b->capacity = capacity;
}

static void buffer_append(walrus_buffer *b, const char *bytes, size_t length) {
    buffer_reserve(b, length);
    memcpy(b->data + b->length, bytes, length);
    b->length += length;
}

static void buffer_cstring(walrus_buffer *b, const char *text) { buffer_append(b, text, strlen(text)); }

/// `value` in decimal at `out` (room for 20 bytes); returns the length. snprintf's format
/// machinery was ~2,500 instructions per script call (callgrind), more than the call itself.
static int format_ll(char *out, long long value) {
    char digits[20];
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    int n = 0;
    do {
        digits[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude > 0);
    int length = 0;
    if (value < 0) out[length++] = '-';
    while (n > 0) out[length++] = digits[--n];
    return length;
}

/// `<kind><value>\r\n`: a RESP length, count or integer line.
static void buffer_line_number(walrus_buffer *b, char kind, long long value) {
    char line[32];
    line[0] = kind;
    int n = 1 + format_ll(line + 1, value);
    line[n++] = '\r';
    line[n++] = '\n';
    buffer_append(b, line, (size_t)n);
}

/// `text` with CR and LF turned into spaces (a status or error line must not break).
static void buffer_line(walrus_buffer *b, const char *text, size_t length) {
    size_t start = b->length;
    buffer_append(b, text, length);
    for (size_t i = start; i < b->length; i++) {
        if (b->data[i] == '\r' || b->data[i] == '\n') b->data[i] = ' ';
    }
}

static void buffer_bulk(walrus_buffer *b, const char *bytes, size_t length) {
    buffer_line_number(b, '$', (long long)length);
    buffer_append(b, bytes, length);
    buffer_append(b, "\r\n", 2);
}

/// Insert an aggregate's header before the `start` offset's contents, once its count is known.
static void buffer_insert_header(walrus_buffer *b, size_t start, char kind, long long count) {
    char header[32];
    header[0] = kind;
    int n = 1 + format_ll(header + 1, count);
    header[n++] = '\r';
    header[n++] = '\n';
    buffer_reserve(b, (size_t)n);
    memmove(b->data + start + n, b->data + start, b->length - start);
    memcpy(b->data + start, header, (size_t)n);
    b->length += (size_t)n;
}

static void buffer_null(walrus_buffer *b, int resp) { buffer_cstring(b, resp == 3 ? "_\r\n" : "$-1\r\n"); }

// MARK: Memory

static void *walrus_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    walrus_lua *w = ud;
    if (nsize == 0) {
        free(ptr);
        w->used -= osize;
        return NULL;
    }
    if (nsize > osize && w->used - osize + nsize > w->limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) w->used = w->used - osize + nsize;
    return p;
}

static int walrus_panic(lua_State *L) {
    // Every API call is made inside a protected call; reaching here is a bug.
    fprintf(stderr, "walrus: unprotected Lua error: %s\n", lua_tostring(L, -1));
    abort();
}

static walrus_lua *self_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

// MARK: Errors as Redis builds them

/// Push Redis's error table {err = "CODE message"} from "-CODE message" or a bare message
/// (which gets the code ERR), as luaPushErrorBuff does.
static void push_error_table(lua_State *L, const char *text, size_t length) {
    luaL_Buffer message;
    luaL_buffinit(L, &message);
    if (length > 0 && text[0] == '-') {
        const char *space = memchr(text, ' ', length);
        if (!space) {
            luaL_addstring(&message, "ERR ");
            luaL_addlstring(&message, text + 1, length - 1);
        } else {
            luaL_addlstring(&message, text + 1, (size_t)(space - text - 1));
            luaL_addchar(&message, ' ');
            const char *rest = space + 1;
            size_t restLength = length - (size_t)(rest - text);
            while (restLength > 0 && (rest[restLength - 1] == '\r' || rest[restLength - 1] == '\n')) restLength--;
            luaL_addlstring(&message, rest, restLength);
        }
    } else {
        luaL_addstring(&message, "ERR ");
        while (length > 0 && (text[length - 1] == '\r' || text[length - 1] == '\n')) length--;
        luaL_addlstring(&message, text, length);
    }
    luaL_pushresult(&message);
    lua_newtable(L);
    lua_pushstring(L, "err");
    lua_pushvalue(L, -3);
    lua_settable(L, -3);
    lua_remove(L, -2);
}

static void push_error(lua_State *L, const char *text) { push_error_table(L, text, strlen(text)); }

/// Raise Redis's error table {err = "ERR <message>"} (luaPushError + luaError).
static int raise_table(lua_State *L, const char *message) {
    push_error(L, message);
    return lua_error(L);
}

/// "user_script:1: <message>" raised as a string, at the caller's position.
static int raise_at_caller(lua_State *L, const char *message) {
    luaL_where(L, 1);
    lua_pushstring(L, message);
    lua_concat(L, 2);
    return lua_error(L);
}

// MARK: RESP → Lua (redisProtocolToLuaType)

typedef struct {
    const char *p;
    const char *end;
} reply_cursor;

static const char *line_end(reply_cursor *c) {
    for (const char *q = c->p; q + 1 < c->end; q++) {
        if (q[0] == '\r' && q[1] == '\n') return q;
    }
    return NULL;
}

static long long line_integer(const char *from, const char *to) {
    long long value = 0;
    int negative = 0;
    if (from < to && *from == '-') {
        negative = 1;
        from++;
    }
    for (; from < to; from++) value = value * 10 + (*from - '0');
    return negative ? -value : value;
}

static void push_reply(lua_State *L, reply_cursor *c);

static void push_reply_aggregate_items(lua_State *L, reply_cursor *c, long long count, int kind) {
    // kind: '*' array, '%' map, '~' set
    for (long long j = 0; j < count; j++) {
        if (kind == '*') {
            lua_pushnumber(L, (lua_Number)(j + 1));
            push_reply(L, c);
            lua_settable(L, -3);
        } else if (kind == '%') {
            push_reply(L, c);
            push_reply(L, c);
            lua_settable(L, -3);
        } else {
            push_reply(L, c);
            lua_pushboolean(L, 1);
            lua_settable(L, -3);
        }
    }
}

static void push_reply(lua_State *L, reply_cursor *c) {
    if (!lua_checkstack(L, 5)) luaL_error(L, "reached lua stack limit");
    if (c->p >= c->end) {
        lua_pushboolean(L, 0);
        return;
    }
    const char *eol = line_end(c);
    if (!eol) {
        lua_pushboolean(L, 0);
        c->p = c->end;
        return;
    }
    char kind = *c->p;
    const char *body = c->p + 1;
    size_t bodyLength = (size_t)(eol - body);
    c->p = eol + 2;
    switch (kind) {
    case ':':
        lua_pushnumber(L, (lua_Number)line_integer(body, eol));
        return;
    case '+':
        lua_newtable(L);
        lua_pushstring(L, "ok");
        lua_pushlstring(L, body, bodyLength);
        lua_settable(L, -3);
        return;
    case '-':
        push_error_table(L, body - 1, bodyLength + 1);
        lua_pushstring(L, "ignore_error_stats_update");
        lua_pushboolean(L, 1);
        lua_settable(L, -3);
        return;
    case '$':
    case '=': {
        long long length = line_integer(body, eol);
        if (length < 0) {
            lua_pushboolean(L, 0);
            return;
        }
        const char *data = c->p;
        if ((long long)(c->end - data) < length + 2) {
            lua_pushboolean(L, 0);
            c->p = c->end;
            return;
        }
        c->p = data + length + 2;
        if (kind == '$') {
            lua_pushlstring(L, data, (size_t)length);
        } else {
            // Verbatim: "txt:" then the text.
            lua_newtable(L);
            lua_pushstring(L, "verbatim_string");
            lua_newtable(L);
            lua_pushstring(L, "string");
            lua_pushlstring(L, length >= 4 ? data + 4 : data, length >= 4 ? (size_t)length - 4 : 0);
            lua_settable(L, -3);
            lua_pushstring(L, "format");
            lua_pushlstring(L, data, length >= 3 ? 3 : (size_t)length);
            lua_settable(L, -3);
            lua_settable(L, -3);
        }
        return;
    }
    case '*': {
        long long count = line_integer(body, eol);
        if (count < 0) {
            lua_pushboolean(L, 0);
            return;
        }
        lua_newtable(L);
        push_reply_aggregate_items(L, c, count, '*');
        return;
    }
    case '%':
    case '~': {
        long long count = line_integer(body, eol);
        lua_newtable(L);
        lua_pushstring(L, kind == '%' ? "map" : "set");
        lua_newtable(L);
        push_reply_aggregate_items(L, c, count, kind);
        lua_settable(L, -3);
        return;
    }
    case '|': {
        // An attribute: skipped, the value after it is the reply.
        long long count = line_integer(body, eol);
        for (long long j = 0; j < count * 2; j++) {
            push_reply(L, c);
            lua_pop(L, 1);
        }
        push_reply(L, c);
        return;
    }
    case '_':
        lua_pushnil(L);
        return;
    case '#':
        lua_pushboolean(L, bodyLength > 0 && body[0] == 't');
        return;
    case ',': {
        char number[128];
        size_t n = bodyLength < sizeof number - 1 ? bodyLength : sizeof number - 1;
        memcpy(number, body, n);
        number[n] = 0;
        lua_newtable(L);
        lua_pushstring(L, "double");
        lua_pushnumber(L, strtod(number, NULL));
        lua_settable(L, -3);
        return;
    }
    case '(':
        lua_newtable(L);
        lua_pushstring(L, "big_number");
        lua_pushlstring(L, body, bodyLength);
        lua_settable(L, -3);
        return;
    default:
        lua_pushboolean(L, 0);
        return;
    }
}

// MARK: Lua → RESP (luaReplyToRedisReply)

static void reply_value(lua_State *L, walrus_lua *w, walrus_buffer *b, int caller);

/// The string field `name` of the table on top, raw; NULL if absent or not a string. Leaves the
/// stack as it was.
static const char *raw_string_field(lua_State *L, const char *name, size_t *length) {
    lua_pushstring(L, name);
    lua_rawget(L, -2);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, length);
    lua_pop(L, 1);  // the string stays alive: the table holds it
    return s;
}

static void reply_double(walrus_buffer *b, double d, int caller) {
    char text[64];
    if (isinf(d)) {
        snprintf(text, sizeof text, "%s", d > 0 ? "inf" : "-inf");
    } else if (isnan(d)) {
        snprintf(text, sizeof text, "nan");
    } else {
        snprintf(text, sizeof text, "%.17g", d);
    }
    if (caller == 3) {
        buffer_append(b, ",", 1);
        buffer_cstring(b, text);
        buffer_append(b, "\r\n", 2);
    } else {
        buffer_bulk(b, text, strlen(text));
    }
}

static void reply_table(lua_State *L, walrus_lua *w, walrus_buffer *b, int caller) {
    size_t length = 0;
    const char *s;
    // {err = …}: an error reply (with luaExtractErrorInformation's text).
    if ((s = raw_string_field(L, "err", &length))) {
        lua_pushstring(L, "ignore_error_stats_update");
        lua_rawget(L, -2);
        w->error_counted = lua_toboolean(L, -1);
        lua_pop(L, 1);
        buffer_append(b, "-", 1);
        buffer_line(b, s, length);
        buffer_append(b, "\r\n", 2);
        return;
    }
    if ((s = raw_string_field(L, "ok", &length))) {
        buffer_append(b, "+", 1);
        buffer_line(b, s, length);
        buffer_append(b, "\r\n", 2);
        return;
    }
    lua_pushstring(L, "double");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double d = lua_tonumber(L, -1);
        lua_pop(L, 1);
        reply_double(b, d, caller);
        return;
    }
    lua_pop(L, 1);
    if ((s = raw_string_field(L, "big_number", &length))) {
        if (caller == 3) {
            buffer_append(b, "(", 1);
            buffer_line(b, s, length);
            buffer_append(b, "\r\n", 2);
        } else {
            size_t start = b->length;
            buffer_line_number(b, '$', (long long)length);
            size_t textStart = b->length;
            buffer_append(b, s, length);
            for (size_t i = textStart; i < b->length; i++) {
                if (b->data[i] == '\r' || b->data[i] == '\n') b->data[i] = ' ';
            }
            buffer_append(b, "\r\n", 2);
            (void)start;
        }
        return;
    }
    lua_pushstring(L, "verbatim_string");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TTABLE) {
        size_t formatLength = 0, textLength = 0;
        const char *format = raw_string_field(L, "format", &formatLength);
        const char *text = raw_string_field(L, "string", &textLength);
        if (format && text) {
            if (caller == 3) {
                buffer_line_number(b, '=', (long long)textLength + 4);
                char head[4] = {'t', 'x', 't', ':'};
                memcpy(head, format, formatLength < 3 ? formatLength : 3);
                buffer_append(b, head, 4);
                buffer_append(b, text, textLength);
                buffer_append(b, "\r\n", 2);
            } else {
                buffer_bulk(b, text, textLength);
            }
            lua_pop(L, 1);
            return;
        }
    }
    lua_pop(L, 1);
    lua_pushstring(L, "map");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TTABLE) {
        size_t start = b->length;
        long long pairs = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            reply_value(L, w, b, caller);  // the key
            reply_value(L, w, b, caller);  // the value
            pairs++;
        }
        lua_pop(L, 1);
        if (caller == 3) {
            buffer_insert_header(b, start, '%', pairs);
        } else {
            buffer_insert_header(b, start, '*', pairs * 2);
        }
        return;
    }
    lua_pop(L, 1);
    lua_pushstring(L, "set");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TTABLE) {
        size_t start = b->length;
        long long count = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            reply_value(L, w, b, caller);
            count++;
        }
        lua_pop(L, 1);
        buffer_insert_header(b, start, caller == 3 ? '~' : '*', count);
        return;
    }
    lua_pop(L, 1);
    // An array: 1, 2, … up to the first nil.
    size_t start = b->length;
    long long count = 0;
    for (int j = 1;; j++) {
        lua_pushnumber(L, j);
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TNIL) {
            lua_pop(L, 1);
            break;
        }
        reply_value(L, w, b, caller);
        count++;
    }
    buffer_insert_header(b, start, '*', count);
}

/// Convert the value on top of the stack into RESP and pop it.
static void reply_value(lua_State *L, walrus_lua *w, walrus_buffer *b, int caller) {
    if (!lua_checkstack(L, 4)) {
        buffer_cstring(b, "-ERR reached lua stack limit\r\n");
        lua_pop(L, 1);
        return;
    }
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
        size_t length;
        const char *s = lua_tolstring(L, -1, &length);
        buffer_bulk(b, s, length);
        break;
    }
    case LUA_TBOOLEAN:
        if (w->script_resp == 2) {
            if (lua_toboolean(L, -1)) {
                buffer_cstring(b, ":1\r\n");
            } else {
                buffer_null(b, caller);
            }
        } else if (caller == 3) {
            buffer_cstring(b, lua_toboolean(L, -1) ? "#t\r\n" : "#f\r\n");
        } else {
            buffer_cstring(b, lua_toboolean(L, -1) ? ":1\r\n" : ":0\r\n");
        }
        break;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, -1);
        long long v;
        if (isnan(d)) {
            v = (long long)0x8000000000000000ULL;
        } else if (d >= 9223372036854775807.0) {
            v = 0x7fffffffffffffffLL;
        } else if (d <= -9223372036854775808.0) {
            v = (long long)0x8000000000000000ULL;
        } else {
            v = (long long)d;
        }
        buffer_line_number(b, ':', v);
        break;
    }
    case LUA_TTABLE:
        reply_table(L, w, b, caller);
        break;
    default:
        buffer_null(b, caller);
    }
    lua_pop(L, 1);
}

// MARK: The redis table

static int redis_generic_call(lua_State *L, int raise) {
    walrus_lua *w = self_of(L);
    if (!w->running) {
        push_error(L, "redis.call/pcall can only be called inside a script invocation");
        return lua_error(L);
    }
    int argc = lua_gettop(L);
    if (argc == 0) {
        push_error(L, "Please specify at least one argument for this redis lib call");
        return raise ? lua_error(L) : 1;
    }
    if (argc > w->capacity) {
        int capacity = argc < 16 ? 16 : argc;
        const char **argv = realloc(w->argv, sizeof(char *) * (size_t)capacity);
        if (argv) w->argv = argv;
        size_t *lengths = realloc(w->lengths, sizeof(size_t) * (size_t)capacity);
        if (lengths) w->lengths = lengths;
        char *numbers = realloc(w->numbers, (size_t)ARGS_PER_NUMBER * (size_t)capacity);
        if (numbers) w->numbers = numbers;
        if (!argv || !lengths || !numbers) {
            lua_settop(L, 0);
            push_error(L, "not enough memory for the arguments of this redis lib call");
            return raise ? lua_error(L) : 1;
        }
        w->capacity = capacity;
    }
    int j;
    for (j = 0; j < argc; j++) {
        if (lua_type(L, j + 1) == LUA_TNUMBER) {
            // Not lua_tolstring: Lua's own format ("%.14g") loses precision.
            char *slot = w->numbers + (size_t)j * ARGS_PER_NUMBER;
            double d = (double)lua_tonumber(L, j + 1);
            int n;
            // A whole number below 2^53 prints as its digits in "%.17g" (no exponent below 1e17,
            // every digit exact): formatted directly. -0 and the rest go through snprintf.
            if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(long long)d && !(d == 0 && signbit(d))) {
                n = format_ll(slot, (long long)d);
                slot[n] = 0;
            } else {
                n = snprintf(slot, ARGS_PER_NUMBER, "%.17g", d);
            }
            w->argv[j] = slot;
            w->lengths[j] = (size_t)n;
        } else if (lua_type(L, j + 1) == LUA_TSTRING) {
            w->argv[j] = lua_tolstring(L, j + 1, &w->lengths[j]);
        } else {
            break;
        }
    }
    if (j != argc) {
        lua_settop(L, 0);
        push_error(L, "Lua redis lib command arguments must be strings or integers");
        return raise ? lua_error(L) : 1;
    }
    size_t replyLength = 0;
    const char *reply = w->host.call(w->host.context, w->script_resp, argc, w->argv, w->lengths, &replyLength);
    // The arguments were needed until the call returned (argv points into them).
    lua_settop(L, 0);
    int failed = replyLength > 0 && reply[0] == '-';
    reply_cursor cursor = {reply, reply + replyLength};
    push_reply(L, &cursor);
    if (failed && raise) return lua_error(L);
    return 1;
}

static int redis_call(lua_State *L) { return redis_generic_call(L, 1); }
static int redis_pcall(lua_State *L) { return redis_generic_call(L, 0); }

/// pcall as Redis 7 has it: an error table from redis.call comes back as its message.
static int walrus_pcall(lua_State *L) {
    int argc = lua_gettop(L);
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    if (lua_pcall(L, argc - 1, LUA_MULTRET, 0)) {
        lua_remove(L, 1);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "err");
            if (lua_isstring(L, -1)) {
                lua_replace(L, -2);
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pushboolean(L, 0);
        lua_insert(L, 1);
    }
    return lua_gettop(L);
}

static int redis_sha1hex(lua_State *L) {
    if (lua_gettop(L) != 1) return raise_table(L, "wrong number of arguments");
    size_t length;
    const char *s = lua_tolstring(L, 1, &length);
    if (!s) {
        s = "";
        length = 0;
    }
    char hex[41];
    self_of(L)->host.sha1hex(s, length, hex);
    hex[40] = 0;
    lua_pushstring(L, hex);
    return 1;
}

static int redis_error_reply(lua_State *L) {
    if (lua_gettop(L) != 1 || lua_type(L, -1) != LUA_TSTRING) {
        push_error(L, "wrong number or type of arguments");
        return 1;
    }
    size_t length;
    const char *s = lua_tolstring(L, 1, &length);
    if (length > 0 && s[0] == '-') {
        push_error_table(L, s, length);
    } else {
        lua_pushstring(L, "-");
        lua_pushvalue(L, 1);
        lua_concat(L, 2);
        size_t l2;
        const char *dashed = lua_tolstring(L, -1, &l2);
        push_error_table(L, dashed, l2);
    }
    return 1;
}

static int redis_status_reply(lua_State *L) {
    if (lua_gettop(L) != 1 || lua_type(L, -1) != LUA_TSTRING) {
        push_error(L, "wrong number or type of arguments");
        return 1;
    }
    lua_newtable(L);
    lua_pushstring(L, "ok");
    lua_pushvalue(L, 1);
    lua_settable(L, -3);
    return 1;
}

static int redis_log(lua_State *L) {
    int argc = lua_gettop(L);
    if (argc < 2) return raise_table(L, "redis.log() requires two arguments or more.");
    if (!lua_isnumber(L, 1)) return raise_table(L, "First argument must be a number (log level).");
    int level = (int)lua_tonumber(L, 1);
    if (level < 0 || level > 3) return raise_table(L, "Invalid debug level.");
    luaL_Buffer message;
    luaL_buffinit(L, &message);
    int first = 1;
    for (int j = 2; j <= argc; j++) {
        size_t length;
        lua_pushvalue(L, j);
        const char *s = lua_tolstring(L, -1, &length);
        if (s) {
            if (!first) luaL_addchar(&message, ' ');
            first = 0;
            luaL_addvalue(&message);
        } else {
            lua_pop(L, 1);
        }
    }
    luaL_pushresult(&message);
    size_t length;
    const char *s = lua_tolstring(L, -1, &length);
    walrus_lua *w = self_of(L);
    if (w->host.log) w->host.log(w->host.context, level, s, length);
    return 0;
}

static int redis_setresp(lua_State *L) {
    if (lua_gettop(L) != 1) return raise_table(L, "redis.setresp() requires one argument.");
    int resp = (int)lua_tonumber(L, -1);
    if (resp != 2 && resp != 3) return raise_table(L, "RESP version must be 2 or 3.");
    self_of(L)->script_resp = resp;
    return 0;
}

static int redis_set_repl(lua_State *L) {
    if (lua_gettop(L) != 1) {
        push_error(L, "redis.set_repl() requires two arguments.");
        return lua_error(L);
    }
    long long flags = (long long)lua_tonumber(L, -1);
    if ((flags & ~3LL) != 0) {
        push_error(L, "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.");
        return lua_error(L);
    }
    // walrus logs a script's effects as one record, which is both its durability and its
    // replication: they cannot be told apart, so the flags are accepted and change nothing.
    return 0;
}

static int redis_replicate_commands(lua_State *L) {
    lua_pushboolean(L, 1);
    return 1;
}

static int redis_breakpoint(lua_State *L) {
    lua_pushboolean(L, 0);
    return 1;
}

static int redis_debug(lua_State *L) {
    (void)L;
    return 0;
}

static int redis_acl_check_cmd(lua_State *L) {
    int argc = lua_gettop(L);
    if (argc == 0) {
        push_error(L, "Please specify at least one argument for this redis lib call");
        return lua_error(L);
    }
    size_t length;
    const char *name = lua_tolstring(L, 1, &length);
    walrus_lua *w = self_of(L);
    if (!name || !w->host.command_exists(w->host.context, name, length)) {
        push_error(L, "Invalid command passed to redis.acl_check_cmd()");
        return lua_error(L);
    }
    // walrus has one user, who may run every command.
    lua_pushboolean(L, 1);
    return 1;
}

// MARK: The sandbox

static int readonly_error(lua_State *L) { return raise_at_caller(L, "Attempt to modify a readonly table"); }

static int nonexistent_global(lua_State *L) {
    const char *name = lua_tostring(L, 2);
    luaL_where(L, 1);
    lua_pushfstring(L, "Script attempted to access nonexistent global variable '%s'", name ? name : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

static int is_protected(lua_State *L, int index) {
    if (!lua_istable(L, index)) return 0;
    lua_pushvalue(L, index);
    lua_getfield(L, LUA_REGISTRYINDEX, PROTECTED_KEY);
    lua_insert(L, -2);
    lua_rawget(L, -2);
    int protected = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return protected;
}

/// Call the wrapped builtin (upvalue 1) with this call's arguments; its results.
static int call_wrapped(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/// setmetatable and rawset: refused on a protected table.
static int guarded_on_protected(lua_State *L) {
    if (is_protected(L, 1)) return readonly_error(L);
    return call_wrapped(L);
}

/// A stack level given to getfenv/setfenv, one deeper: the wrapper is a level of its own.
static void shift_level(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER && lua_tonumber(L, 1) > 0) {
        lua_pushnumber(L, lua_tonumber(L, 1) + 1);
        lua_replace(L, 1);
    }
}

static int guarded_setfenv(lua_State *L) {
    // Level 0 is the thread's global table: the sandbox itself.
    if (lua_type(L, 1) == LUA_TNUMBER && lua_tonumber(L, 1) == 0) return readonly_error(L);
    shift_level(L);
    return call_wrapped(L);
}

/// getfenv, except that it never hands out the real global table (only its readonly face).
static int guarded_getfenv(lua_State *L) {
    if (lua_gettop(L) == 0) lua_pushnumber(L, 1);
    shift_level(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, GLOBALS_KEY);
    if (lua_rawequal(L, -1, -2)) {
        lua_pop(L, 2);
        lua_pushvalue(L, LUA_GLOBALSINDEX);
    } else {
        lua_pop(L, 1);
    }
    return 1;
}

/// Compile `s` as text (never a binary chunk: string.dump output can break the VM): the
/// function, or nil and the message, as loadstring answers.
static int load_text(lua_State *L, const char *s, size_t length, const char *name) {
    if (length > 0 && s[0] == LUA_SIGNATURE[0]) {
        lua_pushnil(L);
        lua_pushstring(L, "Binary code loading is not allowed");
        return 2;
    }
    if (luaL_loadbuffer(L, s, length, name) == 0) return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/// loadstring without binary chunks.
static int guarded_loadstring(lua_State *L) {
    size_t length;
    const char *s = luaL_checklstring(L, 1, &length);
    return load_text(L, s, length, luaL_optstring(L, 2, s));
}

/// load(f): the pieces gathered, then loaded as text (never binary).
static int guarded_load(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const char *name = luaL_optstring(L, 2, "=(load)");
    luaL_Buffer chunk;
    lua_settop(L, 2);
    luaL_buffinit(L, &chunk);
    for (;;) {
        lua_pushvalue(L, 1);
        lua_call(L, 0, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        if (!lua_isstring(L, -1)) return luaL_error(L, "reader function must return a string");
        luaL_addvalue(&chunk);
    }
    luaL_pushresult(&chunk);
    size_t length;
    const char *s = lua_tolstring(L, -1, &length);
    return load_text(L, s, length, name);
}

/// Push the readonly face of the table on top (replacing it): an empty table that reads through
/// to it and refuses writes.
static void make_readonly_proxy(lua_State *L) {
    int original = lua_gettop(L);
    lua_newtable(L);  // the proxy
    lua_newtable(L);  // its metatable
    lua_pushvalue(L, original);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_error);
    lua_setfield(L, -2, "__newindex");
    lua_getfield(L, LUA_REGISTRYINDEX, "walrus.ro");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    // protected[proxy] = true
    lua_getfield(L, LUA_REGISTRYINDEX, PROTECTED_KEY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_replace(L, original);
}

static void set_function(lua_State *L, const char *name, lua_CFunction f) {
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
}

static void set_number(lua_State *L, const char *name, lua_Number n) {
    lua_pushnumber(L, n);
    lua_setfield(L, -2, name);
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction wrapper) {
    lua_getglobal(L, name);
    lua_pushcclosure(L, wrapper, 1);
    lua_setglobal(L, name);
}

static void open_library(lua_State *L, const char *name, lua_CFunction open) {
    lua_pushcfunction(L, open);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    if (lua_istable(L, -1) && name[0]) {
        lua_setglobal(L, name);
    } else {
        lua_pop(L, 1);
    }
}

typedef struct {
    const char *version;
    int version_number;
} open_arguments;

static const char *const ERROR_HANDLER =
    "local dbg = debug\n"
    "local type, tostring = type, tostring\n"
    "return function(err)\n"
    "  local i = dbg.getinfo(2,'nSl')\n"
    "  if i and i.what == 'C' then\n"
    "    i = dbg.getinfo(3,'nSl')\n"
    "  end\n"
    "  if type(err) ~= 'table' then\n"
    "    err = {err='ERR ' .. tostring(err)}\n"
    "  end\n"
    "  if i then\n"
    "    err['source'] = i.source\n"
    "    err['line'] = i.currentline\n"
    "  end\n"
    "  return err\n"
    "end\n";

static int open_protected(lua_State *L) {
    open_arguments *arguments = lua_touserdata(L, 1);
    lua_settop(L, 0);
    open_library(L, "", luaopen_base);
    open_library(L, LUA_TABLIBNAME, luaopen_table);
    open_library(L, LUA_STRLIBNAME, luaopen_string);
    open_library(L, LUA_MATHLIBNAME, luaopen_math);
    open_library(L, LUA_DBLIBNAME, luaopen_debug);
    open_library(L, "cjson", luaopen_cjson);
    open_library(L, "bit", luaopen_bit);

    // Not in a script's reach (Redis's deny list).
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "print");

    // The redis table.
    lua_newtable(L);
    set_function(L, "call", redis_call);
    set_function(L, "pcall", redis_pcall);
    set_function(L, "log", redis_log);
    set_number(L, "LOG_DEBUG", 0);
    set_number(L, "LOG_VERBOSE", 1);
    set_number(L, "LOG_NOTICE", 2);
    set_number(L, "LOG_WARNING", 3);
    set_function(L, "setresp", redis_setresp);
    set_function(L, "sha1hex", redis_sha1hex);
    set_function(L, "error_reply", redis_error_reply);
    set_function(L, "status_reply", redis_status_reply);
    set_function(L, "set_repl", redis_set_repl);
    set_function(L, "replicate_commands", redis_replicate_commands);
    set_number(L, "REPL_NONE", 0);
    set_number(L, "REPL_AOF", 1);
    set_number(L, "REPL_SLAVE", 2);
    set_number(L, "REPL_REPLICA", 2);
    set_number(L, "REPL_ALL", 3);
    set_function(L, "breakpoint", redis_breakpoint);
    set_function(L, "debug", redis_debug);
    set_function(L, "acl_check_cmd", redis_acl_check_cmd);
    lua_pushstring(L, arguments->version);
    lua_setfield(L, -2, "REDIS_VERSION");
    set_number(L, "REDIS_VERSION_NUM", arguments->version_number);
    lua_setglobal(L, "redis");

    lua_pushcfunction(L, walrus_pcall);
    lua_setglobal(L, "pcall");

    // The error handler, which gets `debug` before debug leaves the globals.
    if (luaL_loadbuffer(L, ERROR_HANDLER, strlen(ERROR_HANDLER), "@err_handler_def") != 0) return lua_error(L);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
    lua_setglobal(L, "__redis__err__handler");
    lua_pushnil(L);
    lua_setglobal(L, "debug");

    wrap_global(L, "setmetatable", guarded_on_protected);
    wrap_global(L, "rawset", guarded_on_protected);
    wrap_global(L, "setfenv", guarded_setfenv);
    wrap_global(L, "getfenv", guarded_getfenv);
    lua_pushcfunction(L, guarded_loadstring);
    lua_setglobal(L, "loadstring");
    lua_pushcfunction(L, guarded_load);
    lua_setglobal(L, "load");

    // The protected set (weak keys), and RO: what getmetatable shows of a protected table.
    lua_newtable(L);
    lua_newtable(L);
    lua_pushstring(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, PROTECTED_KEY);
    lua_newtable(L);  // RO
    lua_newtable(L);
    lua_pushcfunction(L, readonly_error);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, PROTECTED_KEY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "walrus.ro");

    // Library tables behind readonly faces; the string methods read through the face too.
    static const char *const libraries[] = {"string", "math", "table", "coroutine", "cjson", "bit", "redis", NULL};
    for (int i = 0; libraries[i]; i++) {
        lua_getglobal(L, libraries[i]);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        make_readonly_proxy(L);
        if (strcmp(libraries[i], "string") == 0) {
            lua_pushstring(L, "");
            if (lua_getmetatable(L, -1)) {
                lua_pushvalue(L, -3);
                lua_setfield(L, -2, "__index");
                lua_getfield(L, LUA_REGISTRYINDEX, "walrus.ro");
                lua_setfield(L, -2, "__metatable");
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_setglobal(L, libraries[i]);
    }

    // G, the real globals: reading a missing name and writing any are errors.
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, GLOBALS_KEY);
    lua_newtable(L);
    lua_pushcfunction(L, nonexistent_global);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_error);
    lua_setfield(L, -2, "__newindex");
    lua_getfield(L, LUA_REGISTRYINDEX, "walrus.ro");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    // P, what scripts see as _G: empty, so every assignment reaches __newindex.
    lua_newtable(L);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_error);
    lua_setfield(L, -2, "__newindex");
    lua_getfield(L, LUA_REGISTRYINDEX, "walrus.ro");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    // _G (in G) is P.
    lua_pushstring(L, "_G");
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_getfield(L, LUA_REGISTRYINDEX, PROTECTED_KEY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pushvalue(L, -3);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    // From here on the thread's globals are P: compiled scripts get it as their environment.
    lua_replace(L, LUA_GLOBALSINDEX);
    lua_pop(L, 1);
    return 0;
}

walrus_lua *walrus_lua_open(walrus_lua_host host, size_t memory_limit, const char *version, int version_number) {
    walrus_lua *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->host = host;
    w->limit = memory_limit < (1 << 20) ? (1 << 20) : memory_limit;
    w->script_resp = 2;
    w->L = lua_newstate(walrus_alloc, w);
    if (!w->L) {
        free(w);
        return NULL;
    }
    lua_atpanic(w->L, walrus_panic);
    open_arguments arguments = {version, version_number};
    if (lua_cpcall(w->L, open_protected, &arguments) != 0) {
        fprintf(stderr, "walrus: the Lua state could not be set up: %s\n", lua_tostring(w->L, -1));
        lua_close(w->L);
        free(w);
        return NULL;
    }
    return w;
}

void walrus_lua_close(walrus_lua *w) {
    if (!w) return;
    lua_close(w->L);
    free(w->argv);
    free(w->lengths);
    free(w->numbers);
    free(w);
}

void walrus_lua_set_memory_limit(walrus_lua *w, size_t bytes) { w->limit = bytes < (1 << 20) ? (1 << 20) : bytes; }

size_t walrus_lua_memory(walrus_lua *w) { return w->used; }

// MARK: Defining and running scripts

typedef struct {
    const char *sha;
    const char *body;
    size_t length;
    walrus_buffer *error;
    int failed;
} define_arguments;

static void function_name(char *out, const char *sha) {
    out[0] = 'f';
    out[1] = '_';
    memcpy(out + 2, sha, 40);
    out[42] = 0;
}

static int define_protected(lua_State *L) {
    define_arguments *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    char name[43];
    function_name(name, a->sha);
    if (luaL_loadbuffer(L, a->body, a->length, "@user_script") != 0) {
        size_t length;
        const char *message = lua_tolstring(L, -1, &length);
        if (message) buffer_append(a->error, message, length);
        a->failed = 1;
        return 0;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, name);
    return 0;
}

int walrus_lua_define(walrus_lua *w, const char *sha, const char *body, size_t length, walrus_buffer *error) {
    define_arguments a = {sha, body, length, error, 0};
    if (lua_cpcall(w->L, define_protected, &a) != 0) {
        size_t l;
        const char *message = lua_tolstring(w->L, -1, &l);
        if (message) buffer_append(error, message, l);
        lua_settop(w->L, 0);
        return 1;
    }
    return a.failed;
}

typedef struct {
    const char *sha;
    int defined;
} lookup_arguments;

static int lookup_protected(lua_State *L) {
    lookup_arguments *a = lua_touserdata(L, 1);
    char name[43];
    function_name(name, a->sha);
    lua_getfield(L, LUA_REGISTRYINDEX, name);
    a->defined = lua_isfunction(L, -1);
    return 0;
}

int walrus_lua_defined(walrus_lua *w, const char *sha) {
    lookup_arguments a = {sha, 0};
    if (lua_cpcall(w->L, lookup_protected, &a) != 0) lua_settop(w->L, 0);
    return a.defined;
}

static int undefine_protected(lua_State *L) {
    const char *sha = lua_touserdata(L, 1);
    char name[43];
    function_name(name, sha);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, name);
    return 0;
}

void walrus_lua_undefine(walrus_lua *w, const char *sha) {
    if (lua_cpcall(w->L, undefine_protected, (void *)sha) != 0) lua_settop(w->L, 0);
}

typedef struct {
    walrus_lua *w;
    const char *sha;
    int caller_resp;
    int nkeys;
    const char *const *keys;
    const size_t *key_lengths;
    int nargs;
    const char *const *args;
    const size_t *arg_lengths;
    walrus_buffer *out;
    int hook_count;
    int failed;
} run_arguments;

static void count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    walrus_lua *w = self_of(L);
    if (w->host.interrupt && w->host.interrupt(w->host.context)) {
        // Every line from now on raises again, so a pcall cannot catch the kill and go on.
        lua_sethook(L, count_hook, LUA_MASKLINE, 0);
        push_error(L, "Script killed by user with SCRIPT KILL...");
        lua_error(L);
    }
}

static void set_array(lua_State *L, const char *name, int count, const char *const *items, const size_t *lengths) {
    lua_getfield(L, LUA_REGISTRYINDEX, GLOBALS_KEY);
    lua_pushstring(L, name);
    lua_createtable(L, count, 0);
    for (int j = 0; j < count; j++) {
        lua_pushlstring(L, items[j], lengths[j]);
        lua_rawseti(L, -2, j + 1);
    }
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static void append_error_text(walrus_buffer *b, const char *text, size_t length) {
    buffer_line(b, text, length);
}

static int run_protected(lua_State *L) {
    run_arguments *a = lua_touserdata(L, 1);
    walrus_lua *w = a->w;
    lua_settop(L, 0);
    char name[43];
    function_name(name, a->sha);
    lua_getfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
    lua_getfield(L, LUA_REGISTRYINDEX, name);
    if (!lua_isfunction(L, -1)) {
        buffer_cstring(a->out, "-NOSCRIPT No matching script. Please use EVAL.\r\n");
        a->failed = 1;
        lua_settop(L, 0);
        return 0;
    }
    set_array(L, "KEYS", a->nkeys, a->keys, a->key_lengths);
    set_array(L, "ARGV", a->nargs, a->args, a->arg_lengths);
    w->script_resp = 2;
    w->running = 1;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, a->hook_count > 0 ? a->hook_count : 100000);
    int status = lua_pcall(L, 0, 1, 1);
    lua_sethook(L, NULL, 0, 0);
    w->running = 0;
    if (status != 0) {
        a->failed = 1;
        if (!lua_istable(L, -1)) {
            size_t length = 0;
            const char *message = lua_isstring(L, -1) ? lua_tolstring(L, -1, &length) : NULL;
            if (!message) {
                message = "execution failure";
                length = strlen(message);
            }
            buffer_cstring(a->out, "-ERR Error running script ");
            buffer_append(a->out, a->sha, 40);
            buffer_cstring(a->out, ", ");
            append_error_text(a->out, message, length > 100 ? 100 : length);
            buffer_cstring(a->out, "\r\n");
        } else {
            size_t messageLength = 0, sourceLength = 0, lineLength = 0;
            const char *message = NULL, *source = NULL, *line = NULL;
            lua_getfield(L, -1, "err");
            if (lua_isstring(L, -1)) message = lua_tolstring(L, -1, &messageLength);
            lua_getfield(L, -2, "source");
            if (lua_isstring(L, -1)) source = lua_tolstring(L, -1, &sourceLength);
            lua_getfield(L, -3, "line");
            if (lua_isstring(L, -1)) line = lua_tolstring(L, -1, &lineLength);
            lua_getfield(L, -4, "ignore_error_stats_update");
            w->error_counted = lua_toboolean(L, -1);
            buffer_cstring(a->out, "-");
            if (message) append_error_text(a->out, message, messageLength);
            if (message && source && line) {
                buffer_cstring(a->out, " script: ");
                buffer_append(a->out, a->sha, 40);
                buffer_cstring(a->out, ", on ");
                append_error_text(a->out, source, sourceLength);
                buffer_cstring(a->out, ":");
                append_error_text(a->out, line, lineLength);
                buffer_cstring(a->out, ".");
            }
            buffer_cstring(a->out, "\r\n");
        }
    } else {
        size_t start = a->out->length;
        reply_value(L, w, a->out, a->caller_resp);
        a->failed = a->out->length > start && a->out->data[start] == '-';
    }
    lua_settop(L, 0);
    // KEYS and ARGV go: their strings need not outlive the script.
    lua_getfield(L, LUA_REGISTRYINDEX, GLOBALS_KEY);
    lua_pushstring(L, "KEYS");
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pushstring(L, "ARGV");
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_settop(L, 0);
    return 0;
}

int walrus_lua_run(walrus_lua *w, const char *sha, int caller_resp, int nkeys, const char *const *keys,
                   const size_t *key_lengths, int nargs, const char *const *args, const size_t *arg_lengths,
                   int hook_count, walrus_buffer *out) {
    run_arguments a = {w, sha, caller_resp, nkeys, keys, key_lengths, nargs, args, arg_lengths, out, hook_count, 0};
    w->error_counted = 0;
    int status = lua_cpcall(w->L, run_protected, &a);
    w->running = 0;
    if (status != 0) {
        // Outside the script itself (out of memory building KEYS, or converting the reply).
        const char *message = lua_isstring(w->L, -1) ? lua_tostring(w->L, -1) : "execution failure";
        out->length = 0;
        buffer_cstring(out, "-ERR Error running script ");
        buffer_append(out, sha, 40);
        buffer_cstring(out, ", ");
        append_error_text(out, message, strlen(message) > 100 ? 100 : strlen(message));
        buffer_cstring(out, "\r\n");
        lua_settop(w->L, 0);
        a.failed = 1;
    }
    // A step of the collector now and then (Redis: every 50 scripts), a full one when the heap
    // is past half its bound.
    if (++w->runs % 50 == 0) lua_gc(w->L, LUA_GCSTEP, 50);
    if (w->used > w->limit / 2) lua_gc(w->L, LUA_GCCOLLECT, 0);
    return a.failed ? (w->error_counted ? 2 : 1) : 0;
}
