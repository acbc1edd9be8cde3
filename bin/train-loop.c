/* train-loop.c - megalodon-train's training loop: the rows of each step, the progress lines
 * and the JSONL log, validation, checkpoints, and stopping on SIGINT or SIGTERM after the
 * step in progress (docs/megalodon-train.md). */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "train-cli.h"

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) { g_stop = sig; }

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* a second signal of the same kind ends the program at once */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void tr_log_line(tr_run *r, const char *line)
{
    if (!r->log) return;
    fputs(line, r->log);
    fputc('\n', r->log);
    fflush(r->log);
}

double tr_unix_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, size, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, size, "%lds", t);
}

/* Fill r->rows with the batch `a` of optimizer step `step` (0-based). */
static void fill_rows(tr_run *r, int64_t step, int a)
{
    const train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    for (int b = 0; b < B; b++) {
        size_t s = tr_row_start(&r->data, o->order, o->seed, step, B * o->accum, a * B + b, L);
        memcpy(r->rows + (size_t)b * (L + 1), r->data.ids + s, (size_t)(L + 1) * sizeof(int32_t));
    }
}

/* validation: the first windows of the validation part, in batches of at most B rows */
static int evaluate(tr_run *r, double *loss, int64_t *tokens)
{
    const train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    const int32_t *val = r->data.ids + r->data.n_train;
    size_t windows = tr_n_windows(r->data.n - r->data.n_train, L);
    size_t rows = (size_t)o->eval_batches * (size_t)B;
    if (rows > windows) rows = windows;
    double sum = 0;
    for (size_t done = 0; done < rows;) {
        int nb = rows - done < (size_t)B ? (int)(rows - done) : B;
        for (int b = 0; b < nb; b++)
            memcpy(r->rows + (size_t)b * (L + 1), val + (done + (size_t)b) * (size_t)L,
                   (size_t)(L + 1) * sizeof(int32_t));
        double l;
        if (mg_trainer_eval(r->tr, r->rows, nb, L, &l) != MG_OK)
            return tr_error(TR_RUNTIME, "validation failed: %s", mg_last_error());
        sum += l * nb;
        done += (size_t)nb;
    }
    *loss = sum / (double)rows;
    *tokens = (int64_t)rows * L;
    return TR_OK;
}

static int write_checkpoint(tr_run *r, int64_t step)
{
    char *path = tr_ckpt_path(r->ckpt_dir, step);
    if (!path) return tr_error(TR_RUNTIME, "out of memory");
    strbuf meta = {0};
    tr_meta_build(r->o, &r->data, r->model_desc, step, &meta);
    if (meta.oom) {
        sb_free(&meta);
        free(path);
        return tr_error(TR_RUNTIME, "out of memory");
    }
    if (mg_trainer_save_checkpoint(r->tr, path, meta.s) != MG_OK) {
        int rc = tr_error(TR_RUNTIME, "cannot write the checkpoint %s: %s", path, mg_last_error());
        sb_free(&meta);
        free(path);
        return rc;
    }
    sb_free(&meta);
    strbuf b = {0};
    sb_printf(&b, "{\"type\": \"checkpoint\", \"step\": %" PRId64 ", \"path\": ", step);
    sb_json_str(&b, path);
    sb_printf(&b, "}");
    tr_log_line(r, b.s);
    sb_free(&b);
    tr_ckpt_prune(r->ckpt_dir, r->o->keep);
    free(r->last_ckpt_buf);
    r->last_ckpt_buf = path;
    r->last_ckpt = path;
    return TR_OK;
}

void tr_log_end(tr_run *r, const char *status, const char *message)
{
    strbuf b = {0};
    sb_printf(&b, "{\"type\": \"end\", \"step\": %" PRId64 ", \"status\": \"%s\", \"message\": ",
              mg_trainer_step_count(r->tr), status);
    sb_json_str(&b, message);
    sb_printf(&b, ", \"time\": %.3f}", tr_unix_time());
    tr_log_line(r, b.s);
    sb_free(&b);
}

/* the training loop; returns the exit code */
int tr_train_loop(tr_run *r)
{
    train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    const int64_t total = o->tp.total_steps;
    const int64_t first = mg_trainer_step_count(r->tr);
    const double t0 = run_now_ms();
    double train_ms = 0, win_loss = 0;
    int64_t win_n = 0, tokens_done = 0;
    install_signals();
    for (int64_t step = first; step < total; step++) {
        const double ts = run_now_ms();
        for (int a = 0; a < o->accum; a++) {
            fill_rows(r, step, a);
            double l;
            int rc = mg_trainer_accumulate(r->tr, r->rows, B, L, &l);
            if (rc != MG_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "step %" PRId64 ": %s", step + 1, mg_last_error());
                tr_log_end(r, "error", msg);
                return tr_error(TR_RUNTIME, "step %" PRId64 " (batch %d): %s", step + 1, a + 1,
                                mg_last_error());
            }
        }
        mg_train_stats st;
        int rc = mg_trainer_update(r->tr, &st);
        if (rc != MG_OK) {
            char msg[700];
            if (rc == MG_ERR_NUMERIC)
                snprintf(msg, sizeof msg, "training stopped at step %" PRId64 ", the loss or the "
                         "gradient is not finite: %s; the last checkpoint is %s", step + 1,
                         mg_last_error(), r->last_ckpt ? r->last_ckpt : "(none written)");
            else
                snprintf(msg, sizeof msg, "step %" PRId64 ": %s", step + 1, mg_last_error());
            tr_log_end(r, "error", msg);
            return tr_error(TR_RUNTIME, "%s", msg);
        }
        const double now = run_now_ms();
        train_ms += now - ts;
        tokens_done += st.n_tokens;
        const double tok_s = train_ms > 0 ? tokens_done / (train_ms / 1e3) : 0;
        const int64_t done = st.step - first;
        const double eta = (now - t0) / 1e3 / (double)done * (double)(total - st.step);

        strbuf b = {0};
        sb_printf(&b, "{\"type\": \"train\", \"step\": %" PRId64 ", \"loss\": ", st.step);
        sb_json_num(&b, st.loss);
        sb_printf(&b, ", \"lr\": ");
        sb_json_num(&b, st.lr);
        sb_printf(&b, ", \"grad_norm\": ");
        sb_json_num(&b, st.grad_norm);
        sb_printf(&b, ", \"tokens\": %" PRId64 ", \"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}",
                  st.n_tokens, tok_s, (now - t0) / 1e3);
        tr_log_line(r, b.s);
        sb_free(&b);

        win_loss += st.loss;
        win_n++;
        if (st.step % o->log_every == 0 || st.step == total || st.step == first + 1 || g_stop) {
            char e[32];
            fmt_duration(eta, e, sizeof e);
            printf("step %" PRId64 "/%" PRId64 "  loss %.4f  lr %.3e  grad %.4f  %.0f tok/s  "
                   "ETA %s\n", st.step, total, win_loss / win_n, st.lr, st.grad_norm, tok_s, e);
            fflush(stdout);
            win_loss = 0;
            win_n = 0;
        }

        const int have_val = r->data.n > r->data.n_train;
        if (have_val && o->eval_every > 0 && (st.step % o->eval_every == 0 || st.step == total)) {
            double vl = 0;
            int64_t vt = 0;
            if ((rc = evaluate(r, &vl, &vt))) {
                tr_log_end(r, "error", "validation failed");
                return rc;
            }
            strbuf v = {0};
            sb_printf(&v, "{\"type\": \"val\", \"step\": %" PRId64 ", \"loss\": ", st.step);
            sb_json_num(&v, vl);
            sb_printf(&v, ", \"ppl\": ");
            sb_json_num(&v, exp(vl));
            sb_printf(&v, ", \"tokens\": %" PRId64 "}", vt);
            tr_log_line(r, v.s);
            sb_free(&v);
            printf("step %" PRId64 "/%" PRId64 "  validation loss %.4f  ppl %.3f  (%" PRId64
                   " tokens)\n", st.step, total, vl, exp(vl), vt);
            fflush(stdout);
        }

        int ckpt_due = o->ckpt_every > 0 && (st.step % o->ckpt_every == 0 || st.step == total);
        if (ckpt_due || g_stop) {
            if ((rc = write_checkpoint(r, st.step))) {
                tr_log_end(r, "error", "cannot write a checkpoint");
                return rc;
            }
        }
        if (g_stop) {
            char msg[600];
            snprintf(msg, sizeof msg, "stopped by %s after step %" PRId64 "; checkpoint %s; "
                     "continue with --resume", g_stop == SIGINT ? "SIGINT" : "SIGTERM", st.step,
                     r->last_ckpt);
            tr_log_end(r, "interrupted", msg);
            fflush(stdout);
            fprintf(stderr, "megalodon-train: %s\n", msg);
            return TR_INTERRUPTED;
        }
    }
    return TR_OK;
}
