#include "WalrusThreadState.h"

_Thread_local long walrus_inline_seal_state = 0;
