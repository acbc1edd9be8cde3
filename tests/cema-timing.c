/* cema-timing - ns per token-channel of the CEMA implementations of the CPU backend (scan,
 * scan-chunked, fft) over lengths and thread counts, and what the planner's estimate picks.
 * Not a test: a measuring tool for docs/cema.md and for re-fitting the cost model in
 * lib/cema-plan.c.
 *
 *   cema-timing [--D 1024] [--N 16] [--L 256,1024,4096,16384,65536] [--threads 1,2]
 *               [--reps 7] [--coeffs init|slow] [--algos scan,scan-chunked,fft] [--isa NAME]
 *               [--clock wall|cpu] [--backward S]
 *
 * --backward S times the training backward instead (backend.h: cema_backward over S
 * sequences of L rows from a zero state; algorithms scan and fft): the same table, in ns per
 * token-channel of the S L D token-channels, and what the backward planner's estimate picks
 * (lib/cema-plan.c: cema_estimate_backward, fitted to this output).
 *
 * Every call continues from a carried (non-zero) state, the streaming case; the FFT kernel
 * cache is warmed by one untimed call first. Times are wall clock (CLOCK_MONOTONIC) per
 * call (--clock cpu: process CPU time divided by the thread count, which ignores time
 * lost to other processes on a busy machine but also any imbalance); the table gives the
 * median and the minimum over --reps calls, in ns per token and channel (the call's time /
 * (L D)). Coefficients: `init` draws the parameters as the official initialisation does
 * (alpha, delta ~ N(0, 0.2): |q| mostly 0.7..0.8, at most ~0.9 over D = 1024, N = 16),
 * `slow` puts a third of the components at |q| = 0.999 (slow decay: the FFT's state terms
 * then cost a full pass each). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cema-plan.h"
#include "model.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1p-53;
}
static double nrand(void)
{
    double u = urand(), v = urand();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

static clockid_t clk = CLOCK_MONOTONIC;
static double now(void)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x <= 0) return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* name is an item of the comma-separated list */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *s = list; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == n && !strncmp(s, name, n)) return 1;
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int D = 1024, N = 16, reps = 7, slow = 0, cpu_clock = 0, S = 0;
    int Ls[32] = {256, 1024, 4096, 16384, 65536}, nL = 5, Ts[8] = {1, 2}, nT = 2;
    const char *isa = NULL, *algos = "scan,scan-chunked,fft";
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (ok && !strcmp(a, "--D")) D = atoi(v);
        else if (ok && !strcmp(a, "--N")) N = atoi(v);
        else if (ok && !strcmp(a, "--reps")) reps = atoi(v);
        else if (ok && !strcmp(a, "--L")) ok = (nL = parse_list(v, Ls, 32)) > 0;
        else if (ok && !strcmp(a, "--threads")) ok = (nT = parse_list(v, Ts, 8)) > 0;
        else if (ok && !strcmp(a, "--coeffs")) slow = !strcmp(v, "slow");
        else if (ok && !strcmp(a, "--algos")) algos = v;
        else if (ok && !strcmp(a, "--isa")) isa = v;
        else if (ok && !strcmp(a, "--backward")) ok = (S = atoi(v)) >= 1;
        else if (ok && !strcmp(a, "--clock")) {
            cpu_clock = !strcmp(v, "cpu");
            ok = cpu_clock || !strcmp(v, "wall");
        } else ok = 0;
        if (!ok || D < 1 || N < 1 || reps < 1) {
            fprintf(stderr, "usage: %s [--D n] [--N n] [--L list] [--threads list] [--reps n] "
                            "[--coeffs init|slow] [--algos list] [--isa name] "
                            "[--clock wall|cpu] [--backward S]\n", argv[0]);
            return 2;
        }
    }
    if (reps > 99) reps = 99;
    if (cpu_clock) clk = CLOCK_PROCESS_CPUTIME_ID;

    /* parameters as initialised officially (docs/model.md §12: layers.{i}.mega.cema.*) */
    float *alpha = malloc(sizeof(float) * D * N), *delta = malloc(sizeof(float) * D * N);
    float *theta = malloc(sizeof(float) * D), *gamma = malloc(sizeof(float) * D * N * 2);
    float *omega = malloc(sizeof(float) * D);
    for (int i = 0; i < D * N; i++) {
        alpha[i] = (float)(0.2 * nrand());
        delta[i] = (float)(0.2 * nrand());
        gamma[2 * i] = (float)nrand();
        gamma[2 * i + 1] = 0.0f;
    }
    for (int d = 0; d < D; d++) {
        double f = exp(-(d + 1) * log((double)D) / D);
        theta[d] = (float)log(f / (1.0 - f + 1e-12));
        omega[d] = (float)fmax(-1.0, fmin(1.0, 0.25 * nrand()));
    }
    mg_cema_coeffs c;
    if (mg_cema_coeffs_init(&c, D, N, alpha, delta, theta, gamma, omega)) return 1;
    if (slow)
        for (int i = 0; i < D * N; i += 3) {
            double ph = atan2(c.q[2 * i + 1], c.q[2 * i]);
            c.q[2 * i] = (float)(0.999 * cos(ph));
            c.q[2 * i + 1] = (float)(0.999 * sin(ph));
        }

    int maxL = 0;
    for (int i = 0; i < nL; i++) maxL = Ls[i] > maxL ? Ls[i] : maxL;
    const size_t rows = (size_t)maxL * (S > 0 ? S : 1);
    float *x = malloc(sizeof(float) * rows * D), *y = malloc(sizeof(float) * rows * D);
    float *dy = S ? malloc(sizeof(float) * rows * D) : NULL;
    float *gp = S ? calloc((size_t)D * N * 5 + D, sizeof(float)) : NULL;
    float *h0 = malloc(sizeof(float) * D * N * 2), *h = malloc(sizeof(float) * D * N * 2);
    if (!x || !y || !h0 || !h || (S && (!dy || !gp))) return 1;
    for (size_t i = 0; i < rows * D; i++) x[i] = (float)nrand(); /* TimestepNorm output */
    if (dy)
        for (size_t i = 0; i < rows * D; i++) dy[i] = (float)(0.01 * nrand());
    for (size_t i = 0; i < (size_t)D * N * 2; i++) h0[i] = (float)(0.5 * nrand());

    static const struct { const char *name; mg_cema_algo algo; } all[] = {
        {"scan", MG_CEMA_SCAN},
        {"scan-chunked", (mg_cema_algo)CEMA_ALGO_CHUNKED}, /* read back as a cema_algo */
        {"fft", MG_CEMA_FFT}};
    if (S) algos = "scan,fft";
    printf("%s D=%d N=%d coeffs=%s reps=%d; ns per token-channel, %s: median (min)\n",
           S ? "backward" : "forward", D, N, slow ? "slow" : "init", reps,
           cpu_clock ? "process CPU time (all threads) / threads" : "wall clock");
    if (S) printf("S=%d sequences per call\n", S);
    printf("| threads | L | scan | scan-chunked | fft | fft/scan | estimate picks |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int ti = 0; ti < nT; ti++) {
        mg_backend *be;
        if (mg_backend_cpu_new(Ts[ti], isa, &be)) {
            fprintf(stderr, "backend: %s\n", mg_last_error());
            return 1;
        }
        for (int li = 0; li < nL; li++) {
            const int L = Ls[li];
            double med[3] = {NAN, NAN, NAN}, mn[3] = {NAN, NAN, NAN};
            for (int a = 0; a < 3; a++) {
                if (!in_list(algos, all[a].name)) continue;
                double t[100];
                for (int r = -1; r < reps; r++) {
                    memcpy(h, h0, sizeof(float) * D * N * 2);
                    double t0 = now();
                    int rc = S ? be->cema_backward(be, all[a].algo, x, S, L, &c, dy, y, gp,
                                                   gp + D * N, gp + 3 * D * N, gp + 5 * D * N)
                               : be->cema(be, all[a].algo, x, L, &c, h, y);
                    if (rc) {
                        fprintf(stderr, "cema: %s\n", mg_last_error());
                        return 1;
                    }
                    if (r >= 0)
                        t[r] = (now() - t0) * 1e9 / ((double)L * D * (S ? S : 1)) /
                               (cpu_clock ? Ts[ti] : 1);
                }
                qsort(t, reps, sizeof t[0], cmpd);
                med[a] = t[reps / 2];
                mn[a] = t[0];
            }
            char cell[3][48];
            for (int a = 0; a < 3; a++)
                if (isnan(med[a])) snprintf(cell[a], sizeof cell[a], "-");
                else snprintf(cell[a], sizeof cell[a], "%.2f (%.2f)", med[a], mn[a]);
            const char *pick = S ? cpu_cema_backward_choice(be, MG_CEMA_AUTO, S, L, &c)
                                 : cpu_cema_choice(be, MG_CEMA_AUTO, L, &c);
            printf("| %d | %d | %s | %s | %s | %.1f | %s |\n", Ts[ti], L, cell[0], cell[1],
                   cell[2], med[2] / med[0], pick ? pick : "?");
            fflush(stdout);
        }
        be->free(be);
    }
    mg_cema_coeffs_free(&c);
    free(alpha); free(delta); free(theta); free(gamma); free(omega);
    free(x); free(y); free(h0); free(h); free(dy); free(gp);
    return 0;
}
