/* run-tokenize.c - megalodon-run tokenize: the ids (or pieces) of a text. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

/* A vocabulary piece with space, backslash and control bytes escaped, so that the pieces
 * can be separated by spaces. */
static void print_piece(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", stdout);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p == '\t')
            fputs("\\t", stdout);
        else if (*p <= ' ' || *p == 0x7f)
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

int run_tokenize_mode(const run_opts *o)
{
    mg_model *model = NULL;
    int32_t *t = NULL;
    size_t n = 0;
    char *text = NULL;
    int rc = run_load_model(o, &model, NULL);
    if (rc) return rc;
    if (!mg_model_has_tokenizer(model)) {
        rc = run_error(EXIT_RUNTIME, "the model has no tokenizer");
        goto done;
    }
    size_t len;
    if (o->file) {
        if ((rc = run_read_file(o->file, &text, &len))) goto done;
    } else {
        len = strlen(o->prompt);
    }
    if ((rc = run_tokenize(model, text ? text : o->prompt, len, o->bos, &t, &n))) goto done;
    for (size_t i = 0; i < n; i++) {
        if (i) putchar(' ');
        if (o->pieces) {
            const char *p = mg_token_text(model, t[i]);
            print_piece(p ? p : "");
        } else {
            printf("%d", (int)t[i]);
        }
    }
    putchar('\n');
done:
    free(text);
    free(t);
    mg_model_free(model);
    return rc;
}
