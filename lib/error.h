/* error.h - the library's error reporting (internal).
 *
 * Every failing function returns a negative mg_status and records a message with mg_seterr;
 * mg_last_error() (public) returns the message of the calling thread's last failure.
 *
 * The rule: the function that detects a failure sets the message, naming what failed (the
 * tensor, the file, the option, and for memory what the allocation was for: "out of memory
 * for the FFT plan of ..."). A caller that only passes a failure up returns the status
 * unchanged (TRY below) and does not overwrite the message; it may prefix context with
 * mg_adderr_context (a file name, say). A function that tries something and recovers
 * (a fallback) clears nothing: the message of a failure that was recovered from is never
 * read, because only a negative status sends anyone to mg_last_error(). */
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

/* Pass a failure up: evaluate x (an mg_status expression) and return it when it is not
 * MG_OK; the message stays the one its origin set. For functions with something to clean up,
 * use TRY_GOTO, which stores the status in `rc` and jumps to `label`. */
#define TRY(x)                                                                             \
    do {                                                                                   \
        int rc_ = (x);                                                                     \
        if (rc_) return rc_;                                                               \
    } while (0)
#define TRY_GOTO(x, label)                                                                 \
    do {                                                                                   \
        if ((rc = (x)) != MG_OK) goto label;                                               \
    } while (0)

#endif
