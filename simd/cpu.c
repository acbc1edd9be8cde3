/* cpu.c - choose the kernel table for this machine.
 *
 * The SIMD tables are compiled in when the build defines MG_HAVE_AVX2, MG_HAVE_AVX512 or
 * MG_HAVE_NEON (config.h); each lives in its own file compiled with its own instruction-set
 * flags. This file is compiled without any, so the checks below run on every CPU of the
 * architecture: a table is used only when the CPU has its instructions AND the OS saves the
 * registers they use (XCR0, read with xgetbv after checking OSXSAVE). MEGALODON_ISA
 * overrides the choice. */
#include "config.h"

#include "kernels.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MG_X86 1
#endif

typedef struct {
    const mg_kernels *table;
    int (*supported)(void); /* CPU and OS support */
} isa_entry;

static int always(void) { return 1; }

#if defined(MG_X86) && (defined(MG_HAVE_AVX2) || defined(MG_HAVE_AVX512))
/* XCR0: which register states the OS saves and restores */
static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" /* xgetbv */ : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* CPUID.1:ECX and CPUID.(7,0):EBX, or 0 where the leaf is missing */
static void cpu_features(uint32_t *ecx1, uint32_t *ebx7)
{
    unsigned a, b, c, d;
    *ecx1 = *ebx7 = 0;
    if (__get_cpuid_max(0, NULL) < 1) return;
    if (__get_cpuid(1, &a, &b, &c, &d)) *ecx1 = c;
    if (__get_cpuid_max(0, NULL) >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) *ebx7 = b;
}

#define ECX1_FMA (1u << 12)
#define ECX1_OSXSAVE (1u << 27)
#define ECX1_AVX (1u << 28)
#define ECX1_F16C (1u << 29)
#define EBX7_AVX2 (1u << 5)
#define EBX7_AVX512F (1u << 16)
#define EBX7_AVX512DQ (1u << 17)
#define EBX7_AVX512BW (1u << 30)
#define EBX7_AVX512VL (1u << 31)
#define XCR0_YMM 0x06u /* SSE (bit 1) and AVX (bit 2) state */
#define XCR0_ZMM 0xe0u /* opmask (5), ZMM0-15 upper halves (6), ZMM16-31 (7) */

#if defined(MG_HAVE_AVX2)
/* AVX, AVX2, FMA, F16C and YMM state saved by the OS */
static int have_avx2(void)
{
    uint32_t ecx1, ebx7;
    cpu_features(&ecx1, &ebx7);
    const uint32_t need1 = ECX1_FMA | ECX1_OSXSAVE | ECX1_AVX | ECX1_F16C;
    if ((ecx1 & need1) != need1 || !(ebx7 & EBX7_AVX2)) return 0;
    return (xcr0() & XCR0_YMM) == XCR0_YMM;
}
#endif

#if defined(MG_HAVE_AVX512)
/* AVX, AVX2, FMA, F16C, AVX-512 F, BW, DQ, VL and YMM, opmask and ZMM state saved by the OS */
static int have_avx512(void)
{
    uint32_t ecx1, ebx7;
    cpu_features(&ecx1, &ebx7);
    const uint32_t need1 = ECX1_FMA | ECX1_OSXSAVE | ECX1_AVX | ECX1_F16C;
    const uint32_t need7 = EBX7_AVX2 | EBX7_AVX512F | EBX7_AVX512DQ | EBX7_AVX512BW | EBX7_AVX512VL;
    if ((ecx1 & need1) != need1 || (ebx7 & need7) != need7) return 0;
    return (xcr0() & (XCR0_YMM | XCR0_ZMM)) == (XCR0_YMM | XCR0_ZMM);
}
#endif
#endif

/* Best first. */
static const isa_entry isa_list[] = {
#if defined(MG_X86) && defined(MG_HAVE_AVX512)
    {&mg_kernels_avx512, have_avx512},
#endif
#if defined(MG_X86) && defined(MG_HAVE_AVX2)
    {&mg_kernels_avx2, have_avx2},
#endif
#if defined(__aarch64__) && defined(MG_HAVE_NEON)
    {&mg_kernels_neon, always}, /* Advanced SIMD is part of AArch64 */
#endif
    {&mg_kernels_scalar, always},
};
#define ISA_COUNT (sizeof isa_list / sizeof isa_list[0])

const mg_kernels *mg_kernels_by_name(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < ISA_COUNT; i++)
        if (strcmp(isa_list[i].table->name, name) == 0 && isa_list[i].supported())
            return isa_list[i].table;
    return NULL;
}

const mg_kernels *mg_kernels_best(void)
{
    const char *env = getenv("MEGALODON_ISA");
    if (env && *env) return mg_kernels_by_name(env); /* NULL: not available here */
    for (size_t i = 0; i < ISA_COUNT; i++)
        if (isa_list[i].supported()) return isa_list[i].table;
    return &mg_kernels_scalar;
}

/* A constant string per subset of the SIMD tables (no buffer, so thread-safe): bit 2
 * avx512, bit 1 avx2, bit 0 neon; the scalar table is always there. */
const char *mg_kernels_available(void)
{
    static const char *const names[8] = {
        "scalar",             "neon scalar",             "avx2 scalar",
        "avx2 neon scalar",   "avx512 scalar",           "avx512 neon scalar",
        "avx512 avx2 scalar", "avx512 avx2 neon scalar",
    };
    unsigned set = 0;
    for (size_t i = 0; i < ISA_COUNT; i++) {
        const char *nm = isa_list[i].table->name;
        if (!isa_list[i].supported()) continue;
        if (strcmp(nm, "avx512") == 0) set |= 4;
        else if (strcmp(nm, "avx2") == 0) set |= 2;
        else if (strcmp(nm, "neon") == 0) set |= 1;
    }
    return names[set];
}
