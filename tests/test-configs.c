/* test-configs - the official configurations (docs/model.md §13) are accepted and imply exactly
 * the published parameter counts; every option combination of a real file loads, and the
 * parameters counted from its tensors equal those implied by its hyper-parameters;
 * inconsistent hyper-parameters are refused with a message naming the problem. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "test.h"
#include "tiny_model.h"

static mg_hparams official(int L, int D, int H, int Z, int E, int F, int G, int swiglu,
                           int share_scale)
{
    mg_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_layer = L;
    hp.n_embd = D;
    hp.n_head = H;
    hp.z_dim = Z;
    hp.value_dim = E;
    hp.n_ff = F;
    hp.norm_groups = G;
    hp.cema_ndim = 16;
    hp.chunk_size = 2048;
    hp.n_vocab = hp.n_output = 32000;
    hp.norm_eps = 1e-5f;
    hp.rope_base = 10000.0f;
    hp.swiglu = swiglu;
    hp.scale_emb = hp.share_emb = share_scale;
    hp.norm_affine = 1;
    return hp;
}

int main(void)
{
    struct { const char *name; mg_hparams hp; uint64_t params; } cfg[] = {
        {"mega200M", official(12, 1024, 1, 256, 2048, 2560, 32, 0, 0), 220627968ull},
        {"mega1.3B", official(24, 2048, 2, 512, 4096, 4864, 64, 0, 0), 1342832640ull},
        {"mega1.3B_pg19", official(24, 2048, 2, 512, 4096, 3584, 64, 1, 1), 1327628288ull},
        {"mega7.1B", official(32, 4096, 4, 1024, 8192, 11264, 64, 0, 0), 7117381632ull},
        {"mega7.3B", official(32, 4096, 4, 1024, 8192, 8192, 64, 1, 0), 7385817088ull},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        int rc = mg_hparams_validate(&cfg[i].hp);
        CHECK(rc == MG_OK, "%s refused: %s", cfg[i].name, mg_last_error());
        uint64_t n = mg_hparams_n_params(&cfg[i].hp);
        CHECK(n == cfg[i].params, "%s: %llu parameters, docs/model.md §13 says %llu", cfg[i].name,
              (unsigned long long)n, (unsigned long long)cfg[i].params);
        printf("  %-14s ok, %llu parameters\n", cfg[i].name, (unsigned long long)n);
    }

    /* inconsistent hyper-parameters */
    struct { const char *what; const char *msg; } bad[] = {
        {"Z % H", "z_dim 256 is not divisible by head_count 3"},
        {"D % G", "embedding_length 1024 is not divisible by norm_groups 48"},
        {"eps", "norm_epsilon"},
        {"tied head size", "share_emb needs output_size"},
        {"zero chunk", "chunk_size = 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mg_hparams hp = cfg[0].hp;
        switch (i) {
        case 0: hp.n_head = 3; break;
        case 1: hp.norm_groups = 48; break;
        case 2: hp.norm_eps = 0.0f; break;
        case 3: hp.share_emb = 1; hp.n_output = 32001; break;
        case 4: hp.chunk_size = 0; break;
        }
        int rc = mg_hparams_validate(&hp);
        CHECK(rc == MG_ERR_MODEL && strstr(mg_last_error(), bad[i].msg), "%s: %d %s", bad[i].what,
              rc, mg_last_error());
    }

    /* a real file for every option combination: tensors counted = parameters implied */
    char dir[] = "/tmp/mg-test-configs-XXXXXX", path[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    for (int bits = 0; bits < 32; bits++) {
        tiny_opts o = tiny_default_opts();
        o.swiglu = bits & 1;
        o.scale_emb = (bits >> 1) & 1;
        o.share_emb = (bits >> 2) & 1;
        o.rescale_nffn = (bits >> 3) & 1;
        o.norm_affine = (bits >> 4) & 1;
        CHECK(tiny_model_write(path, &o) == MG_OK, "write: %s", mg_last_error());
        mg_model *m;
        int rc = mg_model_load(path, NULL, &m);
        CHECK(rc == MG_OK, "options 0x%02x: %s", bits, mg_last_error());
        if (rc) continue;
        CHECK(mg_model_n_params(m) == mg_hparams_n_params(mg_model_hparams(m)),
              "options 0x%02x: %llu parameters in the file, %llu implied", bits,
              (unsigned long long)mg_model_n_params(m),
              (unsigned long long)mg_hparams_n_params(mg_model_hparams(m)));
        mg_model_free(m);
    }
    unlink(path);
    rmdir(dir);
    return test_finish("test-configs");
}
