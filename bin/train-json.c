/* train-json.c - megalodon-train: a strict reader of flat JSON objects (configs, checkpoint
 * metadata, log lines) and the string builder the writers use. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train-cli.h"

/* ---------------------------------------------------------------- strbuf */

static int sb_reserve(strbuf *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void sb_printf(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0 || sb_reserve(b, (size_t)need)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

void sb_json_str(strbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_printf(b, "\\\""); break;
        case '\\': sb_printf(b, "\\\\"); break;
        case '\n': sb_printf(b, "\\n"); break;
        case '\r': sb_printf(b, "\\r"); break;
        case '\t': sb_printf(b, "\\t"); break;
        default:
            if (*p < 0x20)
                sb_printf(b, "\\u%04x", *p);
            else
                sb_printf(b, "%c", *p);
        }
    }
    sb_printf(b, "\"");
}

void sb_json_num(strbuf *b, double x)
{
    if (isfinite(x))
        sb_printf(b, "%.17g", x);
    else
        sb_printf(b, "null");
}

void sb_free(strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const char *s;
    size_t len, i;
    char *err;
    size_t errsize;
} parser;

static int fail(parser *p, const char *fmt, ...)
{
    int line = 1, col = 1;
    for (size_t k = 0; k < p->i && k < p->len; k++) {
        if (p->s[k] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    int n = snprintf(p->err, p->errsize, "line %d, column %d: ", line, col);
    if (n < 0 || (size_t)n >= p->errsize) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errsize - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int cur_line(const parser *p)
{
    int line = 1;
    for (size_t k = 0; k < p->i && k < p->len; k++) line += p->s[k] == '\n';
    return line;
}

static void skip_ws(parser *p)
{
    while (p->i < p->len &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex4(parser *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        if (p->i >= p->len) return fail(p, "unterminated \\u escape");
        int c = (unsigned char)p->s[p->i];
        int d = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return fail(p, "bad \\u escape");
        v = v * 16 + (unsigned)d;
        p->i++;
    }
    *out = v;
    return 0;
}

static void put_utf8(char *o, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        o[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*n)++] = (char)(0xC0 | (cp >> 6));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xE0 | (cp >> 12));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*n)++] = (char)(0xF0 | (cp >> 18));
        o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* a string at p->i (the opening quote) into a malloc'd buffer */
static int parse_string(parser *p, char **out)
{
    p->i++; /* " */
    /* the decoded text is never longer than the source */
    size_t cap = 1;
    for (size_t k = p->i; k < p->len && p->s[k] != '"'; k++, cap++)
        if (p->s[k] == '\\') k++, cap++;
    char *o = malloc(cap + 8);
    if (!o) return fail(p, "out of memory");
    size_t n = 0;
    for (;;) {
        if (p->i >= p->len) {
            free(o);
            return fail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c == '\n') {
            free(o);
            return fail(p, "unterminated string (the line ends inside it)");
        }
        if (c < 0x20) {
            free(o);
            return fail(p, "control character in a string (write it as an escape)");
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p->i++;
            continue;
        }
        p->i++;
        if (p->i >= p->len) {
            free(o);
            return fail(p, "unterminated string");
        }
        char e = p->s[p->i++];
        unsigned cp;
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u':
            if (hex4(p, &cp)) {
                free(o);
                return -1;
            }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (p->i + 1 < p->len && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                    p->i += 2;
                    if (hex4(p, &lo)) {
                        free(o);
                        return -1;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        free(o);
                        return fail(p, "bad surrogate pair in \\u escape");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else {
                    free(o);
                    return fail(p, "lone surrogate in \\u escape");
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(o);
                return fail(p, "lone surrogate in \\u escape");
            }
            if (cp == 0) {
                free(o);
                return fail(p, "\\u0000 is not allowed in a string here");
            }
            put_utf8(o, &n, cp);
            break;
        default:
            p->i--;
            free(o);
            return fail(p, "bad escape '\\%c'", e);
        }
    }
    o[n] = '\0';
    *out = o;
    return 0;
}

/* a number by the JSON grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(parser *p, json_member *m)
{
    size_t s = p->i, i = p->i;
    int integer = 1;
    if (i < p->len && p->s[i] == '-') i++;
    if (i < p->len && p->s[i] == '0') {
        i++;
        if (i < p->len && isdigit((unsigned char)p->s[i])) {
            p->i = i;
            return fail(p, "bad number: no leading zeros");
        }
    } else if (i < p->len && p->s[i] >= '1' && p->s[i] <= '9') {
        while (i < p->len && isdigit((unsigned char)p->s[i])) i++;
    } else {
        return fail(p, "bad number");
    }
    if (i < p->len && p->s[i] == '.') {
        integer = 0;
        i++;
        if (i >= p->len || !isdigit((unsigned char)p->s[i])) {
            p->i = i;
            return fail(p, "bad number: a digit must follow '.'");
        }
        while (i < p->len && isdigit((unsigned char)p->s[i])) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integer = 0;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || !isdigit((unsigned char)p->s[i])) {
            p->i = i;
            return fail(p, "bad number: a digit must follow the exponent");
        }
        while (i < p->len && isdigit((unsigned char)p->s[i])) i++;
    }
    char buf[64];
    if (i - s >= sizeof buf) return fail(p, "number too long");
    memcpy(buf, p->s + s, i - s);
    buf[i - s] = '\0';
    errno = 0;
    m->num = strtod(buf, NULL);
    if (!isfinite(m->num)) return fail(p, "number out of range");
    m->integer = integer;
    p->i = i;
    return 0;
}

static int word(parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->i >= n && memcmp(p->s + p->i, w, n) == 0) {
        p->i += n;
        return 1;
    }
    return 0;
}

const char *json_type_name(json_type t)
{
    switch (t) {
    case JV_STRING: return "a string";
    case JV_NUMBER: return "a number";
    case JV_BOOL: return "a boolean";
    case JV_NULL: return "null";
    default: return "an object or array";
    }
}

void json_free(json_object *o)
{
    for (size_t k = 0; k < o->n; k++) {
        free(o->m[k].key);
        free(o->m[k].str);
    }
    free(o->m);
    o->m = NULL;
    o->n = 0;
}

const json_member *json_get(const json_object *o, const char *key)
{
    for (size_t k = 0; k < o->n; k++)
        if (strcmp(o->m[k].key, key) == 0) return &o->m[k];
    return NULL;
}

int json_parse_flat(const char *text, size_t len, json_object *out, char *err, size_t errsize)
{
    parser p = {text, len, 0, err, errsize};
    out->m = NULL;
    out->n = 0;
    size_t cap = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.i = 3; /* a UTF-8 BOM */
    skip_ws(&p);
    if (p.i >= len) return fail(&p, "empty input: expected a JSON object '{...}'");
    if (text[p.i] != '{') return fail(&p, "expected a JSON object '{...}'");
    p.i++;
    skip_ws(&p);
    if (p.i < len && text[p.i] == '}') {
        p.i++;
        goto end;
    }
    for (;;) {
        skip_ws(&p);
        if (p.i >= len || text[p.i] != '"') {
            json_free(out);
            return fail(&p, "expected a key (a string in double quotes)");
        }
        json_member m;
        memset(&m, 0, sizeof m);
        if (parse_string(&p, &m.key)) {
            json_free(out);
            return -1;
        }
        if (json_get(out, m.key)) {
            char k[80];
            snprintf(k, sizeof k, "%.60s", m.key);
            free(m.key);
            json_free(out);
            return fail(&p, "duplicate key \"%s\"", k);
        }
        skip_ws(&p);
        if (p.i >= len || text[p.i] != ':') {
            free(m.key);
            json_free(out);
            return fail(&p, "expected ':' after the key");
        }
        p.i++;
        skip_ws(&p);
        m.line = cur_line(&p);
        int rc = 0;
        if (p.i >= len) {
            rc = fail(&p, "expected a value");
        } else if (text[p.i] == '"') {
            m.type = JV_STRING;
            rc = parse_string(&p, &m.str);
        } else if (text[p.i] == '-' || isdigit((unsigned char)text[p.i])) {
            m.type = JV_NUMBER;
            rc = parse_number(&p, &m);
        } else if (word(&p, "true")) {
            m.type = JV_BOOL;
            m.num = 1;
        } else if (word(&p, "false")) {
            m.type = JV_BOOL;
            m.num = 0;
        } else if (word(&p, "null")) {
            m.type = JV_NULL;
        } else if (text[p.i] == '{' || text[p.i] == '[') {
            rc = fail(&p, "key \"%.60s\": nested objects and arrays are not supported here",
                      m.key);
        } else {
            rc = fail(&p, "key \"%.60s\": expected a value (string, number, true, false or "
                      "null)", m.key);
        }
        if (rc) {
            free(m.key);
            free(m.str);
            json_free(out);
            return -1;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            json_member *nm = realloc(out->m, cap * sizeof *nm);
            if (!nm) {
                free(m.key);
                free(m.str);
                json_free(out);
                return fail(&p, "out of memory");
            }
            out->m = nm;
        }
        out->m[out->n++] = m;
        skip_ws(&p);
        if (p.i < len && text[p.i] == ',') {
            p.i++;
            continue;
        }
        if (p.i < len && text[p.i] == '}') {
            p.i++;
            break;
        }
        json_free(out);
        return fail(&p, "expected ',' or '}'");
    }
end:
    skip_ws(&p);
    if (p.i < len) {
        json_free(out);
        return fail(&p, "unexpected text after the object");
    }
    return 0;
}
