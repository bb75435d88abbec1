// stdio.h must come first: editline/readline.h uses FILE without including it.
#include <stdio.h>
#include <editline/readline.h>
