/* error.c - per-thread last error message. */
#include "config.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MG_ERRLEN 1024

static _Thread_local char mg_errbuf[MG_ERRLEN];

int mg_seterr(int status, const char *fmt, ...)
{
    /* format into a local buffer first: an argument may be mg_last_error() itself */
    char msg[MG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(mg_errbuf, msg, sizeof msg);
    return status;
}

int mg_adderr_context(int status, const char *fmt, ...)
{
    char ctx[MG_ERRLEN], old[MG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, mg_errbuf, sizeof old);
    size_t n = strlen(ctx);
    if (n > MG_ERRLEN - 3) n = MG_ERRLEN - 3;
    memcpy(mg_errbuf, ctx, n);
    memcpy(mg_errbuf + n, ": ", 2);
    size_t rest = MG_ERRLEN - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(mg_errbuf + n + 2, old, m);
    mg_errbuf[n + 2 + m] = '\0';
    return status;
}

const char *mg_last_error(void)
{
    return mg_errbuf[0] ? mg_errbuf : "no error";
}

const char *mg_status_str(int status)
{
    switch (status) {
    case MG_OK: return "ok";
    case MG_ERR_INVALID_ARG: return "invalid argument";
    case MG_ERR_NOMEM: return "out of memory";
    case MG_ERR_IO: return "input/output error";
    case MG_ERR_FORMAT: return "malformed file";
    case MG_ERR_MODEL: return "invalid model";
    case MG_ERR_UNSUPPORTED: return "unsupported";
    case MG_ERR_STATE: return "invalid state";
    case MG_ERR_BACKEND: return "backend failure";
    case MG_ERR_NUMERIC: return "non-finite loss or gradient";
    }
    return "unknown error";
}
