/* simple.c - load a model, feed tokens, read logits, decode a few tokens greedily. */
#include <megalodon.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [TOKEN_ID ...]\n", argv[0]);
        return 2;
    }
    mg_model *model;
    if (mg_model_load(argv[1], NULL, &model) != MG_OK) {
        fprintf(stderr, "error: %s\n", mg_last_error());
        return 1;
    }
    mg_state *state;
    if (mg_state_new(model, NULL, &state) != MG_OK) {
        fprintf(stderr, "error: %s\n", mg_last_error());
        mg_model_free(model);
        return 1;
    }
    int32_t prompt[64] = {1, 2, 3};
    int n = argc > 2 ? 0 : 3;
    for (int i = 2; i < argc && n < 64; i++) prompt[n++] = atoi(argv[i]);

    int32_t n_vocab = mg_model_n_vocab(model);
    float *logits = malloc(sizeof(float) * n_vocab);
    int rc = logits ? mg_eval(state, prompt, n, logits, MG_LOGITS_LAST) : MG_ERR_NOMEM;
    printf("generated:");
    for (int step = 0; rc == MG_OK && step < 8; step++) {
        int32_t best = 0; /* greedy: the most likely next token */
        for (int32_t v = 1; v < n_vocab; v++)
            if (logits[v] > logits[best]) best = v;
        printf(" %d", best);
        rc = mg_eval(state, &best, 1, logits, MG_LOGITS_LAST);
    }
    printf("\n");
    if (rc != MG_OK) fprintf(stderr, "error: %s\n", mg_last_error());
    free(logits);
    mg_state_free(state);
    mg_model_free(model);
    return rc == MG_OK ? 0 : 1;
}
