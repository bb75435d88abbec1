// Lua 5.1 (the version Redis embeds) from Debian's liblua5.1-0-dev, with the cjson and bit
// libraries Redis scripts use (lua-cjson-dev, lua-bitop-dev). Swift code does not call the Lua
// API directly: CLuaBridge does, where a Lua error may unwind (longjmp) without crossing Swift.
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
