#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

int ek_fail(int status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    for (char *c = last_error; *c; ++c)
        if (*c == '\n' || *c == '\r') *c = ' '; /* one line, whatever a message embeds */
    return status;
}

void ek_clear_error(void) { last_error[0] = '\0'; }

const char *ek_last_error(void) { return last_error; }
