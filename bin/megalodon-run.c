/* megalodon-run - the inference program of libmegalodon.
 *
 *     megalodon-run [generate] -m MODEL [-p TEXT | -f FILE | --tokens FILE] [options]
 *     megalodon-run perplexity -m MODEL (-f FILE | --tokens FILE) [--kl-base FILE [--kl-save]] [options]
 *     megalodon-run tokenize -m MODEL (-p TEXT | -f FILE) [--bos] [--pieces]
 *     megalodon-run info -m MODEL
 *
 * The mode is the first argument (generate when it is not a mode word). It uses only the
 * public API (megalodon.h). Exit status: 0 success, 1 runtime error, 2 usage error.
 * docs/megalodon-run.md describes every mode. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "args.h"

int main(int argc, char **argv)
{
    run_mode mode = argc > 1 ? run_mode_from_word(argv[1]) : MODE_COUNT;
    int mode_given = mode != MODE_COUNT;
    if (!mode_given) mode = MODE_GENERATE;
    /* drop the mode word: the parser sees argv[0] and the options */
    if (mode_given) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    run_opts o;
    int rc = run_parse_args(mode, mode_given, argc, argv, &o);
    if (rc >= 0) return rc;
    switch (mode) {
    case MODE_PERPLEXITY: return run_perplexity(&o);
    case MODE_TOKENIZE: return run_tokenize_mode(&o);
    case MODE_INFO: return run_info(&o);
    default: return run_generate(&o);
    }
}
