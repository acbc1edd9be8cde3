/* fft.cl - CEMA by FFT (lib/backend.h: cema with MG_CEMA_FFT; docs/opencl.md), the OpenCL
 * counterpart of the CPU's fft path (lib/backend-cpu-cema.c):
 *
 *   y_t = sum_{j < kl} k_j x_{t-j} + Re(sum_n eta_n q_n^(t+1) h_{-1,n}) + omega x_t,
 *   k_j = Re(sum_n eta_n p_n q_n^j),   h_{L-1} = q^L h_{-1} + sum_j q^(L-1-j) p x_j,
 *
 * where kl = min(L, decay) and decay (cema_decay_steps) is where |q|^j < 2^-40 for every
 * channel: the kernel is cut there, as on the CPU.
 *
 * The causal convolution runs through our own Stockham FFT (radix 4, one radix-2 pass when
 * log2 n is odd; power-of-two n): autosort, so no bit reversal, every pass out of place
 * between two buffers, one work-item per butterfly, batched over sequences. The input is
 * real, so two channels share one complex sequence: channel 2c in the real part, 2c+1 in the
 * imaginary part (sequence c of the pairs; the last has no partner when D is odd). With
 * Z = FFT(a + i b) the two spectra are A_k = (Z_k + conj Z_{n-k}) / 2 and
 * B_k = (Z_k - conj Z_{n-k}) / 2i, and since a * ka and b * kb are real,
 * IFFT(A Ka + i B Kb) = a * ka + i (b * kb): one forward and one inverse complex transform per
 * pair of channels, half the work of transforming each channel alone.
 *
 * Sequences are interleaved, [block][point][pair] complex: row t of x (D floats) is, read
 * as D/2 complex pairs, one row of a block, so loading and storing copy rows and every pass
 * reads and writes contiguous runs (the pairs) with one twiddle per run.
 *
 * Overlap-save (as cema_fft_blocks on the CPU): block b covers the output rows
 * b M .. b M + M - 1 and holds the input rows b M - (kl - 1) .. at positions 0 .., zero
 * outside 0 .. L-1; its outputs are positions kl - 1 .. kl + M - 2, which the circular
 * convolution computes exactly: n >= M + kl - 1, and the kernel holds k_j for
 * j < min(n/2, decay), so it is kl long in blocks (n >= 4 kl) and, with one block
 * (M = L, n >= 2L when decay > L), its lags beyond kl - 1 meet only the zeros around the
 * input. One block unless L is long and the kernel short.
 *
 * The kernel's transform (mg_cema_fft_kernel, a forward FFT, mg_fft_split) is made once per
 * coefficient set and n and cached by the host; kept as (Ka_k, Kb_k) for k = 0 .. n/2, scaled
 * by 1/n, so that a call is: mg_fft_load, the passes, mg_fft_mul, the passes backwards,
 * mg_fft_store, then mg_cema_fft_carry (the carried-state term) and the new state
 * (mg_cema_block_end of cema.cl from row t_first, then mg_cema_tail_fold).
 *
 * Precision: the transforms are fp32 (twiddles rounded from double); powers of q and the
 * state fold are in acc_t (double with MG_ACC_DOUBLE), as are the kernel's lags. cmul and
 * row_block are cema.cl's (the files form one program, cema.cl first). */

#define FFT_ROWS 64 /* lags or rows per work-item of the kernel and carried-state passes */

/* q^m (m >= 0) in acc_t by binary powering */
static void cpow_acc(acc_t qr, acc_t qi, int m, acc_t *rr, acc_t *ri)
{
    acc_t ar = 1, ai = 0, br = qr, bi = qi;
    while (m > 0) {
        if (m & 1) {
            acc_t t = ar * br - ai * bi;
            ai = ar * bi + ai * br;
            ar = t;
        }
        m >>= 1;
        if (m) {
            acc_t t = br * br - bi * bi;
            bi = 2 * br * bi;
            br = t;
        }
    }
    *rr = ar;
    *ri = ai;
}

/* ---------------------------------------------------------------- Stockham passes */

/* Butterfly j of sequence c of block b in a radix-R pass, for work-item g = (b n/R + j) S + c
 * (point p of the sequence at [(b n + p) S + c]): in points to its first input, point j
 * (the others are n/R points apart), out to its first output, point (j / Ns) R Ns + k (the
 * others Ns points apart), k = j mod Ns; ok is 0 when g is past the last butterfly. */
typedef struct {
    __global const float2 *in;
    __global float2 *out;
    int k, ok;
} butterfly;

static butterfly butterfly_of(size_t g, int R, int n, int Ns, int S, int nblk,
                              __global const float2 *src, __global float2 *dst)
{
    butterfly f = {src, dst, 0, 0};
    const int m = n / R;
    if (g >= (size_t)nblk * m * S) return f;
    const int c = (int)(g % S), j = (int)((g / S) % m), b = (int)(g / ((size_t)S * m));
    f.k = j % Ns;
    f.in = src + ((size_t)b * n + j) * S + c;
    f.out = dst + ((size_t)b * n + (size_t)(j / Ns) * R * Ns + f.k) * S + c;
    f.ok = 1;
    return f;
}

/* One radix-4 pass over nseq sequences of n points (n/4 butterflies each), interleaved:
 * point p of sequence c of block b at [(b n + p) S + c], S = the pairs per block; work-items
 * go through c fastest, so that neighbours read and write neighbouring memory and share
 * their twiddles. Ns: the product of the radices of the passes before (1 for the first).
 * Butterfly j (k = j mod Ns) reads v_r = point j + r n/4, twists v_r by w^(r k n / (4 Ns)),
 * takes the 4-point DFT and writes it to points (j / Ns) 4 Ns + k + r Ns. w: the table
 * exp(-2 pi i m / n), m < n (made on the host in double: a lookup instead of a sine and a
 * cosine per twiddle, which cost more than the butterfly on a CPU device). sign -1:
 * forward; +1: inverse (conjugate twiddles, unscaled). */
__kernel void mg_fft_radix4(__global const float2 *src, __global float2 *dst, int n, int Ns,
                            float sign, int S, int nblk, __global const float2 *w)
{
    const butterfly f = butterfly_of(get_global_id(0), 4, n, Ns, S, nblk, src, dst);
    if (!f.ok) return;
    const int q4 = n / 4;
    const size_t st = (size_t)q4 * S;
    float2 v0 = f.in[0], v1 = f.in[st], v2 = f.in[2 * st], v3 = f.in[3 * st];
    if (Ns > 1) {
        const int step = f.k * (q4 / Ns); /* r k n / (4 Ns) = r step < n */
        const float2 cj = (float2)(1.0f, -sign);
        v1 = cmul(v1, w[step] * cj);
        v2 = cmul(v2, w[2 * step] * cj);
        v3 = cmul(v3, w[3 * step] * cj);
    }
    const float2 a = v0 + v2, bb = v0 - v2, cc = v1 + v3, e = v1 - v3;
    const float2 d = (float2)(-sign * e.y, sign * e.x); /* (v1 - v3) times sign i */
    const size_t os = (size_t)Ns * S;
    f.out[0] = a + cc;
    f.out[os] = bb + d;
    f.out[2 * os] = a - cc;
    f.out[3 * os] = bb - d;
}

/* The radix-2 pass, the same way: v_1 twisted by w^(k n / (2 Ns)). */
__kernel void mg_fft_radix2(__global const float2 *src, __global float2 *dst, int n, int Ns,
                            float sign, int S, int nblk, __global const float2 *w)
{
    const butterfly f = butterfly_of(get_global_id(0), 2, n, Ns, S, nblk, src, dst);
    if (!f.ok) return;
    const int h = n / 2;
    float2 v0 = f.in[0], v1 = f.in[(size_t)h * S];
    if (Ns > 1) v1 = cmul(v1, w[f.k * (h / Ns)] * (float2)(1.0f, -sign));
    f.out[0] = v0 + v1;
    f.out[(size_t)Ns * S] = v0 - v1;
}

/* ---------------------------------------------------------------- the convolution */

/* Point p of pair c of block b = (x[t, 2c], x[t, 2c+1]) with t = b M - (kl - 1) + p, zero
 * for t outside 0 .. L-1 (and for the missing partner of an odd D): row t of x, as pairs,
 * is row p of the block. */
__kernel void mg_fft_load(__global const float *x, int L, int D, int n, int kl, int M,
                          int nblk, __global float2 *Z)
{
    const size_t g = get_global_id(0); /* (b n + p) S + c */
    const int S = (D + 1) / 2;
    if (g >= (size_t)nblk * n * S) return;
    const int c = (int)(g % S), p = (int)((g / S) % n), b = (int)(g / ((size_t)S * n));
    const long t = (long)b * M - (kl - 1) + p;
    float2 v = (float2)(0.0f, 0.0f);
    if (t >= 0 && t < L) {
        __global const float *row = x + (size_t)t * D;
        v.x = row[2 * c];
        if (2 * c + 1 < D) v.y = row[2 * c + 1];
    }
    Z[g] = v;
}

/* In place on the transformed pairs: Y_k = A_k Ka_k + i B_k Kb_k and Y_{n-k} = conj(A_k Ka_k)
 * + i conj(B_k Kb_k) (A, B: the channels' spectra, split from Z_k and Z_{n-k} as above);
 * one work-item per k = 0 .. n/2 (and pair, block), so that each (k, n-k) is read and
 * written by one. K: (Ka_k, Kb_k) at [k S + c], already scaled by 1/n. */
__kernel void mg_fft_mul(__global float2 *Z, __global const float4 *K, int n, int S, int nblk)
{
    const size_t g = get_global_id(0); /* (b (n/2+1) + k) S + c */
    const int h = n / 2 + 1;
    if (g >= (size_t)nblk * h * S) return;
    const int c = (int)(g % S), k = (int)((g / S) % h), b = (int)(g / ((size_t)S * h));
    const int km = (n - k) & (n - 1);
    __global float2 *z = Z + (size_t)b * n * S + c;
    const float2 zk = z[(size_t)k * S], zm = z[(size_t)km * S];
    const float2 A = 0.5f * (float2)(zk.x + zm.x, zk.y - zm.y);
    const float2 B = 0.5f * (float2)(zk.y + zm.y, zm.x - zk.x); /* (zk - conj zm) / 2i */
    const float4 kv = K[(size_t)k * S + c];
    const float2 P = cmul(A, kv.xy), Q = cmul(B, kv.zw);
    z[(size_t)k * S] = (float2)(P.x - Q.y, P.y + Q.x);
    if (km != k) z[(size_t)km * S] = (float2)(P.x + Q.y, Q.x - P.y);
}

/* y[t, d] = (real part for even d, imaginary for odd) of point kl - 1 + (t - b M) of block
 * b = t / M, plus omega x[t, d]. */
__kernel void mg_fft_store(__global const float2 *Z, __global const float *x,
                           __global const float *omega, int L, int D, int n, int kl, int M,
                           __global float *y)
{
    const size_t g = get_global_id(0); /* t * D + d */
    if (g >= (size_t)L * D) return;
    const int d = (int)(g % D), t = (int)(g / D), b = t / M, S = (D + 1) / 2;
    const float2 v = Z[((size_t)b * n + kl - 1 + (t - b * M)) * S + d / 2];
    y[g] = ((d & 1) ? v.y : v.x) + omega[d] * x[g];
}

/* ---------------------------------------------------------------- the kernel's transform */

/* The CEMA kernel as pair sequences (one block): point j of pair c = (k_{2c}[j], k_{2c+1}[j])
 * for j < kk, zero for kk <= j < n. One work-item per (block of FFT_ROWS lags, pair); per
 * component the power eta p q^j0 is taken by binary powering, then stepped by q, all in
 * acc_t, and the lags are summed over n in order. */
__kernel void mg_cema_fft_kernel(int D, int N, int kk, int n, __global const float *p,
                                 __global const float2 *q, __global const float2 *eta,
                                 __global float2 *Z)
{
    const size_t g = get_global_id(0); /* b * S + c */
    const int S = (D + 1) / 2, nb = (n + FFT_ROWS - 1) / FFT_ROWS;
    if (g >= (size_t)nb * S) return;
    const int c = (int)(g % S), b = (int)(g / S);
    const int j0 = b * FFT_ROWS, j1 = min(n, j0 + FFT_ROWS), jk = min(j1, kk);
    __global float2 *z = Z + c;
    for (int j = j0; j < j1; j++) z[(size_t)j * S] = (float2)(0.0f, 0.0f);
    if (j0 >= kk) return;
    acc_t acc[2][FFT_ROWS];
    for (int s = 0; s < 2; s++)
        for (int j = 0; j < FFT_ROWS; j++) acc[s][j] = 0;
    for (int s = 0; s < 2 && 2 * c + s < D; s++) {
        const int d = 2 * c + s;
        for (int m = 0; m < N; m++) {
            const size_t dn = (size_t)d * N + m;
            const acc_t qr = q[dn].x, qi = q[dn].y, pp = p[dn];
            acc_t wr, wi;
            cpow_acc(qr, qi, j0, &wr, &wi);
            const acc_t er = eta[dn].x * pp, ei = eta[dn].y * pp;
            acc_t zr = er * wr - ei * wi, zi = er * wi + ei * wr; /* eta p q^j0 */
            for (int j = j0; j < jk; j++) {
                acc[s][j - j0] += zr;
                const acc_t t = qr * zr - qi * zi;
                zi = qr * zi + qi * zr;
                zr = t;
            }
        }
    }
    for (int j = j0; j < jk; j++)
        z[(size_t)j * S] = (float2)((float)acc[0][j - j0], (float)acc[1][j - j0]);
}

/* The spectra of the two channels of each pair from the transform of the pair sequence:
 * K[k S + c] = (Ka_k, Kb_k) / n for k = 0 .. n/2 (the rest by symmetry). */
__kernel void mg_fft_split(__global const float2 *Z, int n, int S, float scale,
                           __global float4 *K)
{
    const size_t g = get_global_id(0); /* k S + c */
    const int h = n / 2 + 1;
    if (g >= (size_t)h * S) return;
    const int c = (int)(g % S), k = (int)(g / S), km = (n - k) & (n - 1);
    const float2 zk = Z[(size_t)k * S + c], zm = Z[(size_t)km * S + c];
    K[g] = scale * 0.5f * (float4)(zk.x + zm.x, zk.y - zm.y, zk.y + zm.y, zm.x - zk.x);
}

/* ---------------------------------------------------------------- carried state, new state */

/* y[t, d] += Re(sum_n eta q^(t+1) h_n) for t < nt (nt = min(L, decay): beyond, q^(t+1) is
 * below 2^-40). One work-item per (block of FFT_ROWS rows, channel), like pass C of cema.cl
 * from the state q^t0 h with a zero input: the start powers in acc_t, then stepped by q,
 * four components at a time (one read-modify-write of y per row and four components). */
static float2 carry_start(__global const float2 *q, __global const float2 *eta,
                          __global const float2 *h, size_t dn, int e)
{
    acc_t wr, wi;
    cpow_acc(q[dn].x, q[dn].y, e, &wr, &wi);
    const acc_t hr = h[dn].x, hi = h[dn].y, er = eta[dn].x, ei = eta[dn].y;
    const acc_t sr = wr * hr - wi * hi, si = wr * hi + wi * hr; /* q^e h */
    return (float2)((float)(er * sr - ei * si), (float)(er * si + ei * sr));
}

__kernel void mg_cema_fft_carry(int nt, int D, int N, __global const float2 *q,
                                __global const float2 *eta, __global const float2 *h,
                                __global float *y)
{
    int d, b, t0, t1;
    if (!row_block(get_global_id(0), nt, D, FFT_ROWS, &d, &b, &t0, &t1)) return;
    const float2 zero = (float2)(0.0f, 0.0f);
    for (int k = 0; k < N; k += 4) {
        const size_t dn = (size_t)d * N + k;
        float2 q0 = q[dn], q1 = zero, q2 = zero, q3 = zero;
        float2 z0 = carry_start(q, eta, h, dn, t0 + 1), z1 = zero, z2 = zero, z3 = zero;
        if (k + 1 < N) q1 = q[dn + 1], z1 = carry_start(q, eta, h, dn + 1, t0 + 1);
        if (k + 2 < N) q2 = q[dn + 2], z2 = carry_start(q, eta, h, dn + 2, t0 + 1);
        if (k + 3 < N) q3 = q[dn + 3], z3 = carry_start(q, eta, h, dn + 3, t0 + 1);
        for (int t = t0; t < t1; t++) {
            y[(size_t)t * D + d] += ((z0.x + z1.x) + z2.x) + z3.x;
            z0 = cmul(q0, z0);
            z1 = cmul(q1, z1);
            z2 = cmul(q2, z2);
            z3 = cmul(q3, z3);
        }
    }
}

/* The new state needs only the last kl rows (t_first = L - kl): pass A of cema.cl
 * (mg_cema_block_end) with t_first, over rows t_first .. L-1 in blocks of B, each from the
 * zero state, ... */

/* ... then pass B of cema.cl (mg_cema_carry) folded down to the last state, in acc_t:
 * s = q^t_first h, s = q^len_b s + E_b over the blocks, h_out = s. */
__kernel void mg_cema_tail_fold(int L, int D, int N, int B, int t_first,
                                __global const float2 *q, __global const float2 *h0,
                                __global const float2 *E, __global float2 *h_out)
{
    const size_t g = get_global_id(0); /* d * N + n */
    if (g >= (size_t)D * N) return;
    const int nb = (L - t_first + B - 1) / B;
    const acc_t qr = q[g].x, qi = q[g].y;
    acc_t mr, mi, sr, si, br, bi;
    cpow_acc(qr, qi, t_first, &mr, &mi);
    sr = mr * h0[g].x - mi * h0[g].y;
    si = mr * h0[g].y + mi * h0[g].x;
    cpow_acc(qr, qi, B, &br, &bi);
    for (int b = 0; b < nb; b++) {
        const int len = min(B, L - t_first - b * B);
        if (len == B) {
            mr = br;
            mi = bi;
        } else {
            cpow_acc(qr, qi, len, &mr, &mi);
        }
        const float2 e = E[(size_t)b * D * N + g];
        const acc_t t = mr * sr - mi * si + e.x;
        si = mr * si + mi * sr + e.y;
        sr = t;
    }
    h_out[g] = (float2)((float)sr, (float)si);
}
