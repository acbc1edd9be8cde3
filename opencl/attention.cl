/* attention.cl - causal chunk attention, bottom-right aligned (lib/backend.h: attention):
 * query i of L sees keys 0 .. Lk-L+i; per head out = softmax(q k^T) v (no 1/sqrt(d) scale).
 *
 * One work-group per (query, head) walks the keys in tiles of as many keys as it has
 * work-items: each work-item scores one key of the tile, the tile's maximum and sum are
 * reduced in local memory and merged into the running ones (online softmax), and the
 * output accumulator (dv floats, local memory) is rescaled and updated. No more than one
 * tile of scores ever exists. Local memory: dk + dv + 2 x work-group floats. */
__kernel void mg_attention(__global const float *q, __global const float *k,
                           __global const float *v, int L, int Lk, int H, int dk, int dv,
                           __global float *out, __local float *qs, __local float *acc,
                           __local float *sc, __local float *red)
{
    const int i = get_group_id(0), hh = get_group_id(1);
    const int lid = get_local_id(0), ls = get_local_size(0);
    const int nk = Lk - L + i + 1;
    const size_t qstride = (size_t)H * dk, vstride = (size_t)H * dv;
    __global const float *qi = q + i * qstride + (size_t)hh * dk;
    __global const float *kh = k + (size_t)hh * dk;
    __global const float *vh = v + (size_t)hh * dv;
    for (int c = lid; c < dk; c += ls) qs[c] = qi[c];
    for (int c = lid; c < dv; c += ls) acc[c] = 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 < nk; j0 += ls) {
        const int j = j0 + lid, nt = min(ls, nk - j0);
        float s = -INFINITY;
        if (j < nk) {
            __global const float *kj = kh + (size_t)j * qstride;
            s = 0.0f;
            for (int c = 0; c < dk; c++) s = fma(qs[c], kj[c], s);
        }
        red[lid] = s;
        REDUCE_MAX(red, lid, ls);
        const float mn = fmax(m, red[0]);
        const float corr = exp(m - mn);
        const float e = j < nk ? exp(s - mn) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        sc[lid] = e;
        red[lid] = e;
        REDUCE_SUM(red, lid, ls);
        l = l * corr + red[0];
        for (int c = lid; c < dv; c += ls) {
            float a = acc[c] * corr;
            for (int jj = 0; jj < nt; jj++) a = fma(sc[jj], vh[(size_t)(j0 + jj) * vstride + c], a);
            acc[c] = a;
        }
        m = mn;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    __global float *o = out + i * vstride + (size_t)hh * dv;
    const float rl = 1.0f / l;
    for (int c = lid; c < dv; c += ls) o[c] = acc[c] * rl;
}

/* mg_attention_block: one work-group per (block of QB queries, head). Key and value tiles of
 * TK rows are staged in local memory once for the whole block (on a GPU this is the reuse
 * that matters: every key is read once per block instead of once per query); the QB x TK
 * scores of a tile are the only scores that exist. One work-item per query row merges a
 * tile into that row's running maximum and sum; the QB x dv accumulators live in local
 * memory. QB and TK are chosen by the host to fit the device's local memory. */
__kernel void mg_attention_block(__global const float *q, __global const float *k,
                                 __global const float *v, int L, int Lk, int H, int dk, int dv,
                                 __global float *out, int QB, int TK, __local float *qs,
                                 __local float *ks, __local float *vs, __local float *s,
                                 __local float *acc, __local float *st)
{
    const int i0 = get_group_id(0) * QB, hh = get_group_id(1);
    const int lid = get_local_id(0), ls = get_local_size(0);
    const int nq = min(QB, L - i0), off = Lk - L;
    const size_t qstride = (size_t)H * dk, vstride = (size_t)H * dv;
    __local float *mrow = st, *lrow = st + QB, *crow = st + 2 * QB;
    for (int e = lid; e < nq * dk; e += ls)
        qs[e] = q[(size_t)(i0 + e / dk) * qstride + (size_t)hh * dk + e % dk];
    for (int e = lid; e < QB * dv; e += ls) acc[e] = 0.0f;
    for (int r = lid; r < QB; r += ls) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
    }
    const int nk = off + i0 + nq; /* keys the block's last query sees */
    for (int j0 = 0; j0 < nk; j0 += TK) {
        const int nt = min(TK, nk - j0);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < nt * dk; e += ls)
            ks[e] = k[(size_t)(j0 + e / dk) * qstride + (size_t)hh * dk + e % dk];
        for (int e = lid; e < nt * dv; e += ls)
            vs[e] = v[(size_t)(j0 + e / dv) * vstride + (size_t)hh * dv + e % dv];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < nq * TK; e += ls) {
            const int r = e / TK, j = e % TK;
            float sc = -INFINITY;
            if (j < nt && j0 + j <= off + i0 + r) {
                sc = 0.0f;
                for (int c = 0; c < dk; c++) sc = fma(qs[r * dk + c], ks[j * dk + c], sc);
            }
            s[e] = sc;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int r = lid; r < nq; r += ls) {
            float mx = mrow[r];
            for (int j = 0; j < nt; j++) mx = fmax(mx, s[r * TK + j]);
            const float corr = exp(mrow[r] - mx);
            float sum = 0.0f;
            for (int j = 0; j < nt; j++) {
                const float p = exp(s[r * TK + j] - mx);
                s[r * TK + j] = p;
                sum += p;
            }
            lrow[r] = lrow[r] * corr + sum;
            mrow[r] = mx;
            crow[r] = corr;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < nq * dv; e += ls) {
            const int r = e / dv, c = e % dv;
            float a = acc[e] * crow[r];
            for (int j = 0; j < nt; j++) a = fma(s[r * TK + j], vs[j * dv + c], a);
            acc[e] = a;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int e = lid; e < nq * dv; e += ls) {
        const int r = e / dv;
        out[(size_t)(i0 + r) * vstride + (size_t)hh * dv + e % dv] = acc[e] / lrow[r];
    }
}
