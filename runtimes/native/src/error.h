/* Internal: the thread-local last error. Every failing function calls ek_fail and returns its
 * result, so a failure is one line: `return ek_fail(EK_ERR_PACKAGE, "…; re-export", …);`. */
#ifndef EK_ERROR_H
#define EK_ERROR_H

#include "edgekit.h"

#if defined(__GNUC__)
#define EK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define EK_PRINTF(a, b)
#endif

/* Record a one-line message (newlines replaced) for ek_last_error; returns `status`. */
int ek_fail(int status, const char *format, ...) EK_PRINTF(2, 3);
void ek_clear_error(void);

#endif
