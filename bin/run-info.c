/* run-info.c - megalodon-run info: what the public API says about a model (and a state). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"

static void print_token(const mg_model *model, const char *what, int32_t id)
{
    if (id < 0) {
        printf("  %-22s none\n", what);
        return;
    }
    const char *text = mg_token_text(model, id);
    printf("  %-22s %d '%s'\n", what, (int)id, text ? text : "?");
}

/* "weights: q4_K (12 tensors), q6_K (5), f32 (45), i32 (5)": the tensors of each type, in
 * the order the types first appear in the file. */
static void print_weight_types(const mg_model *model)
{
    enum { MAX_TYPES = 16 };
    const char *names[MAX_TYPES];
    int64_t counts[MAX_TYPES];
    int n = 0;
    for (int64_t i = 0; i < mg_model_n_tensors(model); i++) {
        mg_tensor_info ti;
        if (mg_model_tensor_info(model, i, &ti) != MG_OK) continue;
        int k = 0;
        while (k < n && strcmp(names[k], ti.type_name) != 0) k++;
        if (k == n) {
            if (n == MAX_TYPES) continue;
            names[n] = ti.type_name;
            counts[n++] = 0;
        }
        counts[k]++;
    }
    printf("weights:");
    for (int k = 0; k < n; k++)
        printf("%s %s (%lld%s)", k ? "," : "", names[k], (long long)counts[k],
               k ? "" : counts[k] == 1 ? " tensor" : " tensors");
    printf("\n");
}

int run_info(const run_opts *o)
{
    mg_model *model = NULL;
    mg_state *state = NULL;
    double load_ms;
    int rc = run_load_model(o, &model, &load_ms);
    if (rc) return rc;
    const mg_hparams *hp = mg_model_hparams(model);
    struct stat st;
    printf("model: %s", o->model);
    if (stat(o->model, &st) == 0) printf(" (%lld bytes)", (long long)st.st_size);
    printf("\nlibmegalodon: %s; load time %.2f ms\n\n", mg_version(), load_ms);

    printf("hyper-parameters:\n");
    char v[32];
#define HP(name, key, fmt, val)                                                            \
    (snprintf(v, sizeof v, fmt, val), printf("  %-18s %-10s %s\n", name, v, key))
    HP("n_layer", "megalodon.block_count", "%d", (int)hp->n_layer);
    HP("n_embd (D)", "megalodon.embedding_length", "%d", (int)hp->n_embd);
    HP("z_dim (Z)", "megalodon.z_dim", "%d", (int)hp->z_dim);
    HP("value_dim (E)", "megalodon.value_dim", "%d", (int)hp->value_dim);
    HP("n_head (H)", "megalodon.head_count", "%d", (int)hp->n_head);
    HP("n_ff (F)", "megalodon.feed_forward_length", "%d", (int)hp->n_ff);
    HP("cema_ndim (N)", "megalodon.cema_ndim", "%d", (int)hp->cema_ndim);
    HP("chunk_size (C)", "megalodon.chunk_size", "%d", (int)hp->chunk_size);
    HP("norm_groups (G)", "megalodon.norm_groups", "%d", (int)hp->norm_groups);
    HP("n_vocab (V)", "megalodon.vocab_size", "%d", (int)hp->n_vocab);
    HP("n_output (V')", "megalodon.output_size", "%d", (int)hp->n_output);
    HP("norm_eps", "megalodon.norm_epsilon", "%g", (double)hp->norm_eps);
    HP("rope_base", "megalodon.rope_freq_base", "%g", (double)hp->rope_base);
    HP("swiglu", "megalodon.swiglu", "%d", (int)hp->swiglu);
    HP("scale_emb", "megalodon.scale_emb", "%d", (int)hp->scale_emb);
    HP("share_emb", "megalodon.share_emb", "%d", (int)hp->share_emb);
    HP("rescale_nffn", "megalodon.rescale_nffn", "%d", (int)hp->rescale_nffn);
    HP("norm_affine", "megalodon.norm_affine", "%d", (int)hp->norm_affine);
#undef HP
    uint64_t np = mg_model_n_params(model);
    printf("\nparameters: %llu (%.3f M)\n", (unsigned long long)np, np / 1e6);
    printf("logits per token: %d\n", (int)mg_model_n_vocab(model));
    print_weight_types(model);

    const char *name = mg_model_meta_str(model, "general.name");
    const char *kind = mg_model_meta_str(model, "tokenizer.ggml.model");
    if (name) printf("name: %s\n", name);
    printf("backend: %s (kernel tables here: %s)\n", mg_model_backend_name(model),
           mg_isa_available());
    printf("\ntokenizer: %s\n", mg_model_has_tokenizer(model) ? (kind ? kind : "yes")
                                                              : "none (token ids only)");
    if (mg_model_has_tokenizer(model)) {
        print_token(model, "BOS", mg_token_bos(model));
        print_token(model, "EOS", mg_token_eos(model));
        printf("  %-22s", "first pieces");
        for (int32_t i = 0; i < hp->n_vocab && i < 8; i++) {
            const char *t = mg_token_text(model, i);
            printf(" %d='%s'", (int)i, t ? t : "?");
        }
        printf("\n");
    }

    if ((rc = run_new_state(o, model, 0, &state))) goto done;
    printf("\nstate: %zu bytes per sequence (independent of the context length)\n",
           mg_state_size(state));
    if (o->state_in)
        printf("state file %s: %llu tokens consumed (%llu in the current chunk)\n", o->state_in,
               (unsigned long long)mg_state_n_past(state),
               (unsigned long long)(mg_state_n_past(state) % (uint64_t)hp->chunk_size));
    int64_t nt = mg_model_n_tensors(model);
    printf("\ntensors: %lld\n", (long long)nt);
    for (int64_t i = 0; i < nt; i++) {
        mg_tensor_info ti;
        if (mg_model_tensor_info(model, i, &ti) != MG_OK) continue;
        char shape[96] = "";
        for (int d = 0; d < ti.n_dims; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "",
                     (long long)ti.ne[d]);
        printf("  %-32s %-5s [%s] %llu bytes\n", ti.name, ti.type_name, shape,
               (unsigned long long)ti.n_bytes);
    }
done:
    mg_state_free(state);
    mg_model_free(model);
    return rc;
}
