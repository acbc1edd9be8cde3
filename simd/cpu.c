/* cpu.c - choose the kernel table for this machine.
 *
 * Only the scalar table exists so far; the SIMD tables (AVX2, AVX-512, NEON) register
 * here with their CPU checks when they are added. MEGALODON_ISA overrides the choice. */
#include "config.h"

#include "kernels.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const mg_kernels *table;
    int (*supported)(void); /* CPU and OS support */
} isa_entry;

static int always(void) { return 1; }

/* Best first. */
static const isa_entry isa_list[] = {
    {&mg_kernels_scalar, always},
};

const mg_kernels *mg_kernels_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof isa_list / sizeof isa_list[0]; i++)
        if (strcmp(isa_list[i].table->name, name) == 0 && isa_list[i].supported())
            return isa_list[i].table;
    return NULL;
}

const mg_kernels *mg_kernels_best(void)
{
    const char *env = getenv("MEGALODON_ISA");
    if (env && *env) return mg_kernels_by_name(env); /* NULL: not available here */
    for (size_t i = 0; i < sizeof isa_list / sizeof isa_list[0]; i++)
        if (isa_list[i].supported()) return isa_list[i].table;
    return &mg_kernels_scalar;
}
