/* error.h - the library's error reporting (internal).
 *
 * Every failing function returns a negative mg_status and records a message with mg_seterr;
 * mg_last_error() (public) returns the message of the calling thread's last failure. */
#ifndef MG_ERROR_H
#define MG_ERROR_H

#include "megalodon.h"

#if defined(__GNUC__)
#define MG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MG_PRINTF(a, b)
#endif

/* Record a message for the calling thread and return `status`, so that callers can write
 * `return mg_seterr(MG_ERR_FORMAT, "tensor '%s': ...", name);` */
int mg_seterr(int status, const char *fmt, ...) MG_PRINTF(2, 3);

/* Prefix the current message with "context: " (used to add a file name) and return status. */
int mg_adderr_context(int status, const char *fmt, ...) MG_PRINTF(2, 3);

#endif
