/* make-tiny-model - write a small random Megalodon model (random weights: for trying the
 * API and the programs, not for meaningful text). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "megalodon.h"
#include "tiny_model.h"

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(argc == 2 ? stdout : stderr,
                "usage: %s OUT.gguf\nWrites a 2-layer random Megalodon model (D=32, C=16, "
                "vocabulary 64).\n", argv[0]);
        return argc == 2 ? 0 : 2;
    }
    tiny_opts o = tiny_default_opts();
    if (tiny_model_write(argv[1], &o) != MG_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], mg_last_error());
        return 1;
    }
    return 0;
}
