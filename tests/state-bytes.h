/* state-bytes.h - everything an mg_state carries between calls, flattened into one buffer,
 * for bitwise comparisons of states in the tests (test-state, test-faults, test-kill-save). */
#ifndef MG_TEST_STATE_BYTES_H
#define MG_TEST_STATE_BYTES_H

#include <string.h>

#include "model.h"

/* Writes the bytes to buf when buf != NULL; returns their number. */
static inline size_t state_bytes(const mg_state *st, unsigned char *buf)
{
    const mg_hparams *hp = &st->model->hp;
    size_t o = 0;
    mg_state_sync((mg_state *)st); /* a backend may keep the state on the device */
#define PUT(p, n)                                                                          \
    do {                                                                                   \
        if (buf) memcpy(buf + o, (p), (n));                                                \
        o += (n);                                                                          \
    } while (0)
    PUT(&st->n_kv, sizeof st->n_kv);
    PUT(&st->n_past, sizeof st->n_past);
    for (int il = 0; il <= hp->n_layer; il++) {
        const mg_tnorm_state *tn = il < hp->n_layer ? &st->layers[il].tnorm : &st->out_norm;
        PUT(&tn->count, sizeof tn->count);
        PUT(tn->mean, sizeof(float) * hp->norm_groups);
        PUT(tn->var, sizeof(float) * hp->norm_groups);
        if (il == hp->n_layer) break;
        const mg_layer_state *ls = &st->layers[il];
        PUT(ls->h, sizeof(float) * hp->n_embd * hp->cema_ndim * 2);
        PUT(ls->k, sizeof(float) * (size_t)st->n_kv * hp->z_dim);
        PUT(ls->v, sizeof(float) * (size_t)st->n_kv * hp->value_dim);
    }
#undef PUT
    return o;
}

#endif
