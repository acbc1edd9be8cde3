/* opt.c - the command-line machinery of the programs (opt.h). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "opt.h"

void opt_verror(const char *hint, const char *fmt, va_list ap)
{
    fflush(stdout);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    if (hint) fprintf(stderr, "%s\n", hint);
}

int opt_lookup(const opt_def *t, size_t n, const char *a, opt_arg *out, char *err,
               size_t errsize)
{
    if (a[0] != '-' || a[1] == '\0') {
        snprintf(err, errsize, "unexpected argument '%s'", a);
        return -1;
    }
    out->eq = a[1] == '-' ? strchr(a, '=') : NULL; /* --name=value */
    out->len = out->eq ? (size_t)(out->eq - a) : strlen(a);
    out->d = NULL;
    for (size_t i = 0; i < n && !out->d; i++) {
        const opt_def *d = &t[i];
        if ((d->shrt && strlen(d->shrt) == out->len && strncmp(d->shrt, a, out->len) == 0) ||
            (d->lng && strlen(d->lng) == out->len && strncmp(d->lng, a, out->len) == 0))
            out->d = d;
    }
    if (!out->d) {
        snprintf(err, errsize, "unknown option '%.*s'", (int)out->len, a);
        return -1;
    }
    snprintf(out->name, sizeof out->name, "%.*s",
             (int)(out->len < sizeof out->name ? out->len : sizeof out->name - 1), a);
    return 0;
}

int opt_value(const opt_arg *a, int optional, int argc, char **argv, int *i, const char **v,
              char *err, size_t errsize)
{
    *v = NULL;
    if (optional) {
        if (a->eq)
            *v = a->eq + 1;
        else if (*i + 1 < argc && argv[*i + 1][0] != '-')
            *v = argv[++*i];
    } else if (a->d->metavar) {
        if (a->eq)
            *v = a->eq + 1;
        else if (*i + 1 < argc)
            *v = argv[++*i];
        else {
            snprintf(err, errsize, "option '%s' needs a value (%s)", argv[*i], a->d->metavar);
            return -1;
        }
    } else if (a->eq) {
        snprintf(err, errsize, "option '%.*s' takes no value", (int)a->len, argv[*i]);
        return -1;
    }
    return 0;
}

void opt_help_line(const opt_def *d, const char *help, const char *def)
{
    char names[64], text[1024];
    snprintf(names, sizeof names, "%s%s%s%s%s", d->shrt ? d->shrt : "",
             d->shrt && d->lng ? ", " : "", d->lng ? d->lng : "", d->metavar ? " " : "",
             d->metavar ? d->metavar : "");
    if (def[0])
        snprintf(text, sizeof text, "%s (default: %s)", help, def);
    else
        snprintf(text, sizeof text, "%s", help);
    int col = printf("  %-26s", names);
    if (col > 28) {
        printf("\n%28s", "");
        col = 28;
    }
    args_print_wrapped(text, col, 28);
}

int opt_parse_i64(const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out,
                  char *err, size_t errsize)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE) {
        snprintf(err, errsize, "invalid value '%s' for %s: expected an integer", v, name);
        return -1;
    }
    if (x < lo || x > hi) {
        if (hi == INT64_MAX)
            snprintf(err, errsize, "invalid value '%s' for %s: must be >= %" PRId64, v, name, lo);
        else
            snprintf(err, errsize, "invalid value '%s' for %s: must be in [%" PRId64 ", %" PRId64
                     "]", v, name, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int opt_parse_real(const char *name, const char *v, double lo, int lo_open, double hi,
                   int hi_open, double *out, char *err, size_t errsize)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || errno == ERANGE || !isfinite(x)) {
        snprintf(err, errsize, "invalid value '%s' for %s: expected a finite number", v, name);
        return -1;
    }
    if (x < lo || (lo_open && x == lo) || x > hi || (hi_open && x == hi)) {
        if (isinf(hi))
            snprintf(err, errsize, "invalid value '%s' for %s: must be %s %g", v, name,
                     lo_open ? ">" : ">=", lo);
        else
            snprintf(err, errsize, "invalid value '%s' for %s: must be in %c%g, %g%c", v, name,
                     lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
        return -1;
    }
    *out = x;
    return 0;
}

int opt_parse_choice(const char *name, const char *v, const char *const *names, int n, int *out,
                     char *err, size_t errsize)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return 0;
        }
    int len = snprintf(err, errsize, "invalid value '%s' for %s: expected ", v, name);
    for (int i = 0; i < n && len >= 0 && (size_t)len < errsize; i++)
        len += snprintf(err + len, errsize - (size_t)len, "%s%s",
                        i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    return -1;
}

int opt_parse_u64(const char *name, const char *v, uint64_t *out, char *err, size_t errsize)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] == '-' || v[0] == '+' || end == v || *end != '\0' || errno == ERANGE) {
        snprintf(err, errsize, "invalid value '%s' for %s: expected an integer in [0, 2^64)", v,
                 name);
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}
