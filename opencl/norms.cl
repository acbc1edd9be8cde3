/* norms.cl - RMS norm, layer norm (one work-group per row, tree reductions in acc_t) and the
 * timestep norm as a parallel prefix computation over time. */

__kernel void mg_rms_norm(__global const float *x, int n, __global const float *w, int has_w,
                          float eps, __global float *y, __local acc_t *tmp)
{
    const size_t r = get_group_id(0);
    const int lid = get_local_id(0), ls = get_local_size(0);
    __global const float *xr = x + r * n;
    __global float *yr = y + r * n;
    acc_t s = 0;
    for (int i = lid; i < n; i += ls) s += (acc_t)xr[i] * xr[i];
    tmp[lid] = s;
    REDUCE_SUM(tmp, lid, ls);
    float rr = (float)(1.0 / sqrt(tmp[0] / n + (acc_t)eps));
    for (int i = lid; i < n; i += ls) yr[i] = xr[i] * rr * (has_w ? 1.0f + w[i] : 1.0f);
}

/* The mean and the biased variance of xs[0 .. n), by the work-group in two passes (the mean,
 * then the squared deviations from it, as the reference): every work-item gets both. All
 * work-items of the group must call it; tmp holds the group size of acc_t. */
static void group_mean_var(__global const float *xs, int n, __local acc_t *tmp, acc_t *mean,
                           acc_t *var)
{
    const int lid = get_local_id(0), ls = get_local_size(0);
    acc_t s = 0;
    for (int i = lid; i < n; i += ls) s += xs[i];
    tmp[lid] = s;
    REDUCE_SUM(tmp, lid, ls);
    const acc_t m = tmp[0] / n;
    barrier(CLK_LOCAL_MEM_FENCE); /* everyone has read tmp[0] before it is written again */
    s = 0;
    for (int i = lid; i < n; i += ls) s += ((acc_t)xs[i] - m) * ((acc_t)xs[i] - m);
    tmp[lid] = s;
    REDUCE_SUM(tmp, lid, ls);
    *mean = m;
    *var = tmp[0] / n;
}

__kernel void mg_layer_norm(__global const float *x, int n, __global const float *w, int has_w,
                            __global const float *b, int has_b, float eps, __global float *y,
                            __local acc_t *tmp)
{
    const size_t r = get_group_id(0);
    const int lid = get_local_id(0), ls = get_local_size(0);
    __global const float *xr = x + r * n;
    __global float *yr = y + r * n;
    acc_t mean, var;
    group_mean_var(xr, n, tmp, &mean, &var);
    float rr = (float)(1.0 / sqrt(var + (acc_t)eps)), m = (float)mean;
    for (int i = lid; i < n; i += ls)
        yr[i] = (xr[i] - m) * rr * (has_w ? 1.0f + w[i] : 1.0f) + (has_b ? b[i] : 0.0f);
}

/* Timestep norm, pass 1: the moments of every (row t, group g): one work-group each.
 * gm[t*G+g] = mean, gv[t*G+g] = biased variance (two passes, as the reference). */
__kernel void mg_tnorm_moments(__global const float *x, int D, int G, __global acc_t *gm,
                               __global acc_t *gv, __local acc_t *tmp)
{
    const size_t tg = get_group_id(0); /* t * G + g */
    const int lid = get_local_id(0), Dg = D / G;
    const size_t t = tg / G, g = tg % G;
    acc_t mean, var;
    group_mean_var(x + t * D + g * Dg, Dg, tmp, &mean, &var);
    if (lid == 0) {
        gm[tg] = mean;
        gv[tg] = var;
    }
}

/* The running statistics after each step are a prefix "sum" under Chan's combination of
 * (count n, mean m, M2 = n var):
 *   (na, ma, Ma) + (nb, mb, Mb) = (n, ma + (mb - ma) nb / n, Ma + Mb + (mb - ma)^2 na nb / n)
 * which is associative, and equals the reference's step-by-step Welford update when every
 * step is (1, gm_t, gv_t). Pass 2: one work-group per group g scans the L steps in blocks of
 * the group size (Hillis-Steele in local memory), carrying the running total from block to
 * block; it starts from (count, mean[g], count var[g]). Writes mean_t and var_t in place of
 * gm and gv. */
typedef struct { acc_t n, m, M2; } tn_stat;

static tn_stat tn_combine(tn_stat a, tn_stat b)
{
    tn_stat r;
    r.n = a.n + b.n;
    if (r.n == 0) return a;
    acc_t d = b.m - a.m;
    r.m = a.m + d * (b.n / r.n);
    r.M2 = a.M2 + b.M2 + d * d * (a.n * b.n / r.n);
    return r;
}

__kernel void mg_tnorm_scan(int L, int G, acc_t count0, __global const float *mean0,
                            __global const float *var0, __global acc_t *gm,
                            __global acc_t *gv, __local tn_stat *buf)
{
    const int g = get_group_id(0), lid = get_local_id(0), ls = get_local_size(0);
    tn_stat carry;
    carry.n = count0;
    carry.m = mean0[g];
    carry.M2 = count0 * (acc_t)var0[g];
    for (int t0 = 0; t0 < L; t0 += ls) {
        const int t = t0 + lid;
        tn_stat v;
        if (t < L) {
            v.n = 1;
            v.m = gm[(size_t)t * G + g];
            v.M2 = gv[(size_t)t * G + g];
        } else {
            v.n = 0;
            v.m = 0;
            v.M2 = 0;
        }
        buf[lid] = v;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int off = 1; off < ls; off <<= 1) {
            tn_stat left = v;
            if (lid >= off) left = tn_combine(buf[lid - off], v);
            barrier(CLK_LOCAL_MEM_FENCE);
            v = left;
            buf[lid] = v;
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        tn_stat tot = tn_combine(carry, v);
        if (t < L) {
            gm[(size_t)t * G + g] = tot.m;
            gv[(size_t)t * G + g] = tot.M2 / tot.n;
        }
        carry = tn_combine(carry, buf[ls - 1]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Pass 3: y[t,k] = (x[t,k] - mean_t) rsqrt(var_t + eps) (1 + w[k]) + b[k]. */
__kernel void mg_tnorm_apply(__global const float *x, int L, int D, int G,
                             __global const acc_t *mu, __global const acc_t *var,
                             __global const float *w, int has_w, __global const float *b,
                             int has_b, float eps, __global float *y)
{
    size_t i = get_global_id(0);
    if (i >= (size_t)L * D) return;
    const int k = (int)(i % D), Dg = D / G;
    const size_t t = i / D, tg = t * G + k / Dg;
    float r = (float)(1.0 / sqrt(var[tg] + (acc_t)eps)), m = (float)mu[tg];
    y[i] = (x[i] - m) * r * (has_w ? 1.0f + w[k] : 1.0f) + (has_b ? b[k] : 0.0f);
}

/* The statistics after step `last` (gm, gv: L x G in acc_t) into the float mean and var of
 * a state kept on the device (state.c, the resident streaming state): the same
 * rounding as the host's copy of them. */
__kernel void mg_tnorm_store(int G, int last, __global const acc_t *gm, __global const acc_t *gv,
                             __global float *mean, __global float *var)
{
    const int g = get_global_id(0);
    if (g >= G) return;
    mean[g] = (float)gm[(size_t)last * G + g];
    var[g] = (float)gv[(size_t)last * G + g];
}
