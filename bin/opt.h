/* opt.h - the command-line machinery that megalodon-run (args.c) and megalodon-train share:
 * a row of an option table, finding an argument's option, taking its value, one line of the
 * help, and the number parsers. Errors come back as a message in err; the caller prints it
 * its own way, with its own exit status. */
#ifndef MG_OPT_H
#define MG_OPT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int id;
    const char *shrt, *lng; /* "-m", "--model" (either may be NULL) */
    const char *metavar;    /* NULL: a flag without a value */
    unsigned sel;           /* the program's: megalodon-run's modes (a bit each),
                               megalodon-train's help group */
    const char *help;       /* the text; the default is appended */
} opt_def;

/* "error: MESSAGE" on standard error (standard output flushed first), then the line hint
 * when not NULL ("Run 'megalodon-run --help' for usage."). */
void opt_verror(const char *hint, const char *fmt, va_list ap);

/* One argument matched against the table. */
typedef struct {
    const opt_def *d;
    size_t len;     /* of the option's name in the argument */
    const char *eq; /* "=value" of a --name=value argument, else NULL */
    char name[40];  /* the name as written (-m, --model), for messages */
} opt_arg;

/* Match argument a against the n options of t: 0, or -1 with err ("unexpected argument",
 * "unknown option"). */
int opt_lookup(const opt_def *t, size_t n, const char *a, opt_arg *out, char *err,
               size_t errsize);

/* The value of an option that takes one: from --name=value or the next argument (then *i
 * moves past it); *v is NULL for a flag. optional: the value may be left out (it is then only
 * taken from =, or from a next argument that does not start with '-'). 0, or -1 with err. */
int opt_value(const opt_arg *a, int optional, int argc, char **argv, int *i, const char **v,
              char *err, size_t errsize);

/* "  -m, --model FILE   help (default: def)", wrapped at column 28 (def "" for none). */
void opt_help_line(const opt_def *d, const char *help, const char *def);

/* An integer in [lo, hi] (hi INT64_MAX: no upper bound); a finite number in [lo, hi], with
 * lo_open/hi_open excluding that bound (hi infinite: no upper bound). 0, or -1 with err
 * ("invalid value 'V' for NAME: ..."). */
int opt_parse_i64(const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out,
                  char *err, size_t errsize);
int opt_parse_real(const char *name, const char *v, double lo, int lo_open, double hi,
                   int hi_open, double *out, char *err, size_t errsize);
/* The number of elements of an array (of names). */
#define OPT_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* v as one of names[0 .. n-1]: 0 with *out its index, or -1 with err ("invalid value 'V' for
 * NAME: expected A, B or C"). */
int opt_parse_choice(const char *name, const char *v, const char *const *names, int n, int *out,
                     char *err, size_t errsize);
/* An unsigned integer in [0, 2^64) (a seed): 0, or -1 with err. */
int opt_parse_u64(const char *name, const char *v, uint64_t *out, char *err, size_t errsize);

#endif
