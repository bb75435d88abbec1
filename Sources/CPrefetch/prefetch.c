// The target is the header's inline function; SwiftPM wants a source file.
#include "WalrusPrefetch.h"
