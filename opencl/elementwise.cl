/* elementwise.cl - the elementwise ops and RoPE (lib/backend.h; the scalar reference is
 * simd/scalar.c). */

__kernel void mg_silu(__global const float *x, __global float *y, ulong n)
{
    size_t i = get_global_id(0);
    if (i < n) {
        float v = x[i];
        y[i] = v / (1.0f + exp(-v));
    }
}

__kernel void mg_mul(__global const float *a, __global const float *b, __global float *y, ulong n)
{
    size_t i = get_global_id(0);
    if (i < n) y[i] = a[i] * b[i];
}

__kernel void mg_add(__global const float *a, __global const float *b, __global float *y, ulong n)
{
    size_t i = get_global_id(0);
    if (i < n) y[i] = a[i] + b[i];
}

__kernel void mg_scale(__global const float *x, float a, __global float *y, ulong n)
{
    size_t i = get_global_id(0);
    if (i < n) y[i] = x[i] * a;
}

/* y[r,i] = x[r,i] s[i] + t[i] over rows of m (has_t 0: no t) */
__kernel void mg_affine_rows(__global const float *x, ulong n, int m, __global const float *s,
                             __global const float *t, int has_t, __global float *y)
{
    size_t i = get_global_id(0);
    if (i < n) {
        int c = (int)(i % (size_t)m);
        y[i] = x[i] * s[c] + (has_t ? t[c] : 0.0f);
    }
}

/* Interleaved RoPE of L rows of H heads of dh, row t at position pos0 + t; the angle is
 * formed in fp32 as the reference does. One work-item per rotated pair. */
__kernel void mg_rope(__global float *x, int L, int H, int dh, int pos0,
                      __global const float *freqs)
{
    const int half_ = dh / 2;
    size_t g = get_global_id(0);
    if (g >= (size_t)L * H * half_) return;
    int i = (int)(g % half_);
    size_t row = g / half_; /* t * H + h */
    int t = (int)(row / H);
    float th = (float)(pos0 + t) * freqs[i];
    float c = cos(th), s = sin(th);
    __global float *p = x + row * dh + 2 * i;
    float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}
