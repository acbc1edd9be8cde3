/* soak_f64.c - a float64 twin of the whole Megalodon forward pass, for the numerical soak
 * test (tests/test-soak.c).
 *
 * A second, independent implementation: plain loops in double, one token at a time, written
 * from the formulas of lib/forward.c, attention.c, ffn.c and simd/kernels.h, not from their
 * code. It reads the fp32 weights the library loaded (struct mg_model), but derives what the
 * library derives at load in fp32 (the CEMA coefficients p, q, eta; the q/k scales) again in
 * double from the parameters in the model file. So the twin differs from the library only
 * by fp32 rounding (the weights are the same numbers), which is what the soak measures; and
 * where the twin and the library agree to ~1e-6 the twin also cross-checks the library.
 *
 *   x      = embed[token] (* sqrt(D) with scale_emb)
 *   per layer:
 *     xt   = TimestepNorm(x)        running (count, mean[G], var[G]), Welford merge
 *     c    = CEMA(xt)               h = q h + p xt ;  c = Re(sum_n eta_n h_n) + omega xt
 *     mx   = c / rms(c) * (1 + w)
 *     z    = RMSNorm_head(mx Wz^T + bz)   (per head over dz, no affine)
 *     q, k = z (1 + gamma_{0,1}) / sqrt(dz) + beta_{0,1}, RoPE at the position in the chunk
 *     v    = silu(xt Wv^T + bv) ;  r = silu(mx Wr^T + br)
 *     a    = softmax(q k^T) v over the chunk's keys so far (no 1/sqrt(d) scale)
 *     y    = x + mx Wh1^T + bh1 + (a * r) Wh2^T
 *     x    = x + FFN(LayerNorm(y))  (silu(xn W1^T) [* xn W3^T]) W2^T [* alpha]
 *   logits = TimestepNorm_final(x) Wout^T
 *
 * The declarations are repeated in test-soak.c (the only user). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "model.h"

typedef struct { /* one allocation, p its start */
    double *p, *q, *eta, *omega; /* D*N, D*N*2, D*N*2, D */
    double *qk_scale;            /* 2*Z */
} f64_layer;

typedef struct f64_model {
    const mg_model *m;
    f64_layer *layers;
} f64_model;

typedef struct {
    int64_t count;
    double *mean, *var;
} f64_tnorm;

typedef struct f64_state {
    const f64_model *fm;
    int64_t n_past;
    int n_kv;
    f64_tnorm *tn; /* n_layer + 1: the last is the final norm */
    double **h;    /* per layer D*N*2 */
    double **k, **v; /* per layer C*Z, C*E */
    /* activations of one token */
    double *x, *xt, *c, *mx, *z, *qv, *kv, *vv, *rv, *a, *y, *hh, *xn, *u, *u3, *o, *sc;
} f64_state;

/* ---------------------------------------------------------------- model */

static const float *file_tensor(const mg_model *m, const char *name, uint64_t n)
{
    int64_t i = gguf_find_tensor(m->file, name);
    if (i < 0) return NULL;
    const gguf_tensor_info *t = gguf_tensor(m->file, i);
    if (t->type != GGML_TYPE_F32 || t->n_elements != n) return NULL;
    return t->data;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

void f64_model_free(f64_model *fm)
{
    if (!fm) return;
    if (fm->layers)
        for (int il = 0; il < fm->m->hp.n_layer; il++) free(fm->layers[il].p); /* its one block */
    free(fm->layers);
    free(fm);
}

/* The twin of a loaded model (f32 CEMA and q/k parameters in its file). NULL with the error
 * set if the file stores them otherwise. */
f64_model *f64_model_new(const mg_model *m)
{
    const mg_hparams *hp = &m->hp;
    const int D = hp->n_embd, N = hp->cema_ndim, Z = hp->z_dim;
    f64_model *fm = calloc(1, sizeof *fm);
    if (!fm) return NULL;
    fm->m = m;
    fm->layers = calloc((size_t)hp->n_layer, sizeof *fm->layers);
    if (!fm->layers) {
        f64_model_free(fm);
        return NULL;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        char name[96];
        const float *alpha, *delta, *theta, *gamma, *omega, *qkg;
#define GET(var, n, ...)                                                                    \
    do {                                                                                    \
        snprintf(name, sizeof name, __VA_ARGS__);                                           \
        if (!(var = file_tensor(m, name, (uint64_t)(n)))) {                                 \
            mg_seterr(MG_ERR_MODEL, "f64 twin: tensor %s is missing or not f32", name);     \
            f64_model_free(fm);                                                             \
            return NULL;                                                                    \
        }                                                                                   \
    } while (0)
        GET(alpha, D * N, "blk.%d.cema.alpha", il);
        GET(delta, D * N, "blk.%d.cema.delta", il);
        GET(theta, D, "blk.%d.cema.theta", il);
        GET(gamma, 2 * D * N, "blk.%d.cema.gamma", il);
        GET(omega, D, "blk.%d.cema.omega", il);
        GET(qkg, 2 * Z, "blk.%d.attn_qk.gamma", il);
#undef GET
        f64_layer *l = &fm->layers[il];
        /* one block: p (D N), q and eta (2 D N each), omega (D), qk_scale (2 Z) */
        l->p = malloc(sizeof(double) * ((size_t)5 * D * N + D + 2 * Z));
        if (!l->p) {
            f64_model_free(fm);
            return NULL;
        }
        l->q = l->p + (size_t)D * N;
        l->eta = l->q + (size_t)2 * D * N;
        l->omega = l->eta + (size_t)2 * D * N;
        l->qk_scale = l->omega + D;
        const double pi = 3.14159265358979323846;
        for (int d = 0; d < D; d++) {
            for (int n = 0; n < N; n++) {
                const int i = d * N + n;
                const double pa = sigmoid(alpha[i]);
                const double mag = 1.0 - pa * sigmoid(delta[i]);
                const double phi = (n + 1) * sigmoid(theta[d]) * 2.0 * pi / N;
                l->p[i] = pa;
                l->q[2 * i] = mag * cos(phi);
                l->q[2 * i + 1] = mag * sin(phi);
                l->eta[2 * i] = gamma[2 * i] * sqrt(1.0 / N);
                l->eta[2 * i + 1] = gamma[2 * i + 1] * sqrt(1.0 / N);
            }
            l->omega[d] = omega[d];
        }
        const double rs = 1.0 / sqrt((double)(Z / hp->n_head));
        for (int j = 0; j < 2 * Z; j++) l->qk_scale[j] = (1.0 + (double)qkg[j]) * rs;
    }
    return fm;
}

/* ---------------------------------------------------------------- state */

static void tnorm_reset(f64_tnorm *t, const mg_tnorm_params *p, int G)
{
    t->count = p->prior_count;
    for (int g = 0; g < G; g++) {
        t->mean[g] = p->prior_mean[g];
        t->var[g] = exp((double)p->prior_logv[g]);
    }
}

void f64_state_free(f64_state *s)
{
    if (!s) return;
    const mg_hparams *hp = &s->fm->m->hp;
    if (s->tn)
        for (int il = 0; il <= hp->n_layer; il++) {
            free(s->tn[il].mean);
            free(s->tn[il].var);
        }
    for (int il = 0; il < hp->n_layer; il++) {
        if (s->h) free(s->h[il]);
        if (s->k) free(s->k[il]);
        if (s->v) free(s->v[il]);
    }
    free(s->tn);
    free(s->h);
    free(s->k);
    free(s->v);
    double *bufs[] = {s->x, s->xt, s->c, s->mx, s->z, s->qv, s->kv, s->vv, s->rv,
                      s->a, s->y, s->hh, s->xn, s->u, s->u3, s->o, s->sc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(s);
}

/* A fresh state (position 0, prior statistics); NULL when out of memory. */
f64_state *f64_state_new(const f64_model *fm)
{
    const mg_model *m = fm->m;
    const mg_hparams *hp = &m->hp;
    const size_t D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff,
                 N = hp->cema_ndim, C = hp->chunk_size, G = hp->norm_groups;
    f64_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fm = fm;
    int ok = (s->tn = calloc((size_t)hp->n_layer + 1, sizeof *s->tn)) != NULL &&
             (s->h = calloc((size_t)hp->n_layer, sizeof *s->h)) != NULL &&
             (s->k = calloc((size_t)hp->n_layer, sizeof *s->k)) != NULL &&
             (s->v = calloc((size_t)hp->n_layer, sizeof *s->v)) != NULL;
    for (int il = 0; ok && il <= hp->n_layer; il++) {
        ok = (s->tn[il].mean = malloc(sizeof(double) * G)) != NULL &&
             (s->tn[il].var = malloc(sizeof(double) * G)) != NULL;
        if (ok) tnorm_reset(&s->tn[il], il < hp->n_layer ? &m->layers[il].tnorm : &m->out_norm,
                            (int)G);
        if (ok && il < hp->n_layer)
            ok = (s->h[il] = calloc(D * N * 2, sizeof(double))) != NULL &&
                 (s->k[il] = calloc(C * Z, sizeof(double))) != NULL &&
                 (s->v[il] = calloc(C * E, sizeof(double))) != NULL;
    }
    const size_t mx = D > E ? D : E;
    if (ok)
        ok = (s->x = malloc(sizeof(double) * D)) && (s->xt = malloc(sizeof(double) * D)) &&
             (s->c = malloc(sizeof(double) * D)) && (s->mx = malloc(sizeof(double) * D)) &&
             (s->z = malloc(sizeof(double) * Z)) && (s->qv = malloc(sizeof(double) * Z)) &&
             (s->kv = malloc(sizeof(double) * Z)) && (s->vv = malloc(sizeof(double) * E)) &&
             (s->rv = malloc(sizeof(double) * E)) && (s->a = malloc(sizeof(double) * E)) &&
             (s->y = malloc(sizeof(double) * D)) && (s->hh = malloc(sizeof(double) * mx)) &&
             (s->xn = malloc(sizeof(double) * D)) && (s->u = malloc(sizeof(double) * F)) &&
             (s->u3 = malloc(sizeof(double) * F)) && (s->o = malloc(sizeof(double) * D)) &&
             (s->sc = malloc(sizeof(double) * C));
    if (!ok) {
        f64_state_free(s);
        return NULL;
    }
    return s;
}

/* ---------------------------------------------------------------- the forward pass */

/* y[n_out] = W[n_out, n_in] x + b */
static void linear(const float *W, const float *b, const double *x, int n_in, int n_out,
                   double *y)
{
    for (int o = 0; o < n_out; o++) {
        const float *w = W + (size_t)o * n_in;
        double acc = b ? (double)b[o] : 0.0;
        for (int i = 0; i < n_in; i++) acc += (double)w[i] * x[i];
        y[o] = acc;
    }
}

static double silu(double x) { return x / (1.0 + exp(-x)); }

/* grouped timestep norm of one token, statistics updated */
static void tnorm(f64_tnorm *t, const mg_tnorm_params *p, int D, int G, double eps,
                  const double *x, double *y)
{
    const int Dg = D / G;
    const double n = (double)t->count, c1 = n / (n + 1.0), c2 = 1.0 / (n + 1.0);
    for (int g = 0; g < G; g++) {
        const double *xg = x + g * Dg;
        double s = 0.0, sv = 0.0;
        for (int k = 0; k < Dg; k++) s += xg[k];
        const double gm = s / Dg;
        for (int k = 0; k < Dg; k++) sv += (xg[k] - gm) * (xg[k] - gm);
        const double gv = sv / Dg, d = gm - t->mean[g];
        t->mean[g] = c1 * t->mean[g] + c2 * gm;
        t->var[g] = c1 * t->var[g] + c2 * gv + c1 * c2 * d * d;
        const double r = 1.0 / sqrt(t->var[g] + eps);
        for (int k = 0; k < Dg; k++) {
            const int j = g * Dg + k;
            y[j] = (xg[k] - t->mean[g]) * r * (1.0 + (double)p->w[j]) + (double)p->b[j];
        }
    }
    t->count++;
}

static void rms_norm(const double *x, const float *w, double eps, int n, double *y)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * r * (w ? 1.0 + (double)w[i] : 1.0);
}

static void layer_norm(const double *x, const float *w, const float *b, double eps, int n,
                       double *y)
{
    double s = 0.0, v = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    const double mean = s / n;
    for (int i = 0; i < n; i++) v += (x[i] - mean) * (x[i] - mean);
    const double r = 1.0 / sqrt(v / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] - mean) * r * (w ? 1.0 + (double)w[i] : 1.0) + (b ? (double)b[i] : 0.0);
}

static void rope(double *x, int dh, int pos, const float *freqs)
{
    for (int i = 0; i < dh / 2; i++) {
        const double th = pos * (double)freqs[i], c = cos(th), s = sin(th);
        const double a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/* One token; logits: n_output doubles (or NULL). */
void f64_eval_token(f64_state *s, int32_t token, double *logits)
{
    const f64_model *fm = s->fm;
    const mg_model *m = fm->m;
    const mg_hparams *hp = &m->hp;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head, F = hp->n_ff,
              N = hp->cema_ndim, G = hp->norm_groups, dz = Z / H, dv = E / H;
    const double eps = hp->norm_eps;
    const int pos = s->n_kv;

    for (int i = 0; i < D; i++) s->x[i] = mg_weight_f32(&m->tok_embd)[(size_t)token * D + i];
    if (hp->scale_emb)
        for (int i = 0; i < D; i++) s->x[i] *= sqrt((double)D);

    for (int il = 0; il < hp->n_layer; il++) {
        const mg_layer *w = &m->layers[il];
        const f64_layer *l = &fm->layers[il];
        /* MEGA */
        tnorm(&s->tn[il], &w->tnorm, D, G, eps, s->x, s->xt);
        double *h = s->h[il];
        for (int d = 0; d < D; d++) {
            const double xt = s->xt[d];
            double acc = l->omega[d] * xt;
            for (int n = 0; n < N; n++) {
                const int i = d * N + n;
                const double hr = h[2 * i], hi = h[2 * i + 1];
                const double qr = l->q[2 * i], qi = l->q[2 * i + 1];
                const double nr = qr * hr - qi * hi + l->p[i] * xt, ni = qr * hi + qi * hr;
                h[2 * i] = nr;
                h[2 * i + 1] = ni;
                acc += l->eta[2 * i] * nr - l->eta[2 * i + 1] * ni;
            }
            s->c[d] = acc;
        }
        rms_norm(s->c, w->attn_norm_w, eps, D, s->mx);
        linear(mg_weight_f32(&w->wz), w->bz, s->mx, D, Z, s->z);
        for (int hd = 0; hd < H; hd++) rms_norm(s->z + hd * dz, NULL, eps, dz, s->z + hd * dz);
        for (int j = 0; j < Z; j++) {
            s->qv[j] = s->z[j] * l->qk_scale[j] + (double)w->qk_shift[j];
            s->kv[j] = s->z[j] * l->qk_scale[Z + j] + (double)w->qk_shift[Z + j];
        }
        linear(mg_weight_f32(&w->wv), w->bv, s->xt, D, E, s->vv);
        for (int j = 0; j < E; j++) s->vv[j] = silu(s->vv[j]);
        linear(mg_weight_f32(&w->wr), w->br, s->mx, D, E, s->rv);
        for (int j = 0; j < E; j++) s->rv[j] = silu(s->rv[j]);
        for (int hd = 0; hd < H; hd++) {
            rope(s->qv + hd * dz, dz, pos, m->rope_freqs);
            rope(s->kv + hd * dz, dz, pos, m->rope_freqs);
        }
        memcpy(s->k[il] + (size_t)pos * Z, s->kv, sizeof(double) * Z);
        memcpy(s->v[il] + (size_t)pos * E, s->vv, sizeof(double) * E);
        for (int hd = 0; hd < H; hd++) {
            double mxs = -INFINITY, sum = 0.0;
            for (int j = 0; j <= pos; j++) {
                double dot = 0.0;
                for (int c = 0; c < dz; c++)
                    dot += s->qv[hd * dz + c] * s->k[il][(size_t)j * Z + hd * dz + c];
                s->sc[j] = dot;
                if (dot > mxs) mxs = dot;
            }
            for (int j = 0; j <= pos; j++) sum += s->sc[j] = exp(s->sc[j] - mxs);
            for (int c = 0; c < dv; c++) {
                double acc = 0.0;
                for (int j = 0; j <= pos; j++) acc += s->sc[j] * s->v[il][(size_t)j * E + hd * dv + c];
                s->a[hd * dv + c] = acc / sum;
            }
        }
        for (int j = 0; j < E; j++) s->a[j] *= s->rv[j];
        linear(mg_weight_f32(&w->wh1), w->bh1, s->mx, D, D, s->y);
        linear(mg_weight_f32(&w->wh2), NULL, s->a, E, D, s->hh);
        for (int i = 0; i < D; i++) s->y[i] += s->hh[i] + s->x[i];
        /* FFN with the two-hop residual */
        layer_norm(s->y, w->ffn_norm_w, w->ffn_norm_b, eps, D, s->xn);
        linear(mg_weight_f32(&w->ffn_up), NULL, s->xn, D, F, s->u);
        for (int j = 0; j < F; j++) s->u[j] = silu(s->u[j]);
        if (w->ffn_gate.data) {
            linear(mg_weight_f32(&w->ffn_gate), NULL, s->xn, D, F, s->u3);
            for (int j = 0; j < F; j++) s->u[j] *= s->u3[j];
        }
        linear(mg_weight_f32(&w->ffn_down), NULL, s->u, F, D, s->o);
        for (int i = 0; i < D; i++)
            s->x[i] += s->o[i] * (w->ffn_alpha ? (double)w->ffn_alpha[i] : 1.0);
    }
    tnorm(&s->tn[hp->n_layer], &m->out_norm, D, G, eps, s->x, s->y);
    if (logits) linear(mg_weight_f32(&m->output), NULL, s->y, D, hp->n_output, logits);
    s->n_kv = (pos + 1) % hp->chunk_size;
    s->n_past++;
}

/* Read access for the comparisons: layer n_layer is the final norm. */
int64_t f64_tnorm_count(const f64_state *s, int layer) { return s->tn[layer].count; }
const double *f64_tnorm_mean(const f64_state *s, int layer) { return s->tn[layer].mean; }
const double *f64_tnorm_var(const f64_state *s, int layer) { return s->tn[layer].var; }
const double *f64_cema_h(const f64_state *s, int layer) { return s->h[layer]; }
const double *f64_keys(const f64_state *s, int layer) { return s->k[layer]; }
const double *f64_values(const f64_state *s, int layer) { return s->v[layer]; }
int f64_n_kv(const f64_state *s) { return s->n_kv; }
