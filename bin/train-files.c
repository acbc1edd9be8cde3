/* train-files.c - megalodon-train: the checkpoint directory, the JSONL log on resume and the
 * loss plot (gnuplot). */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "train-cli.h"

/* ---------------------------------------------------------------- checkpoints */

char *tr_ckpt_path(const char *dir, int64_t step)
{
    size_t n = strlen(dir) + 48;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/step-%08lld.ckpt", dir, (long long)step);
    return p;
}

/* step of a name step-<digits>.ckpt, or -1 */
static int64_t ckpt_step(const char *name)
{
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5, *q = p;
    while (isdigit((unsigned char)*q)) q++;
    if (q == p || q - p > 18 || strcmp(q, ".ckpt") != 0) return -1;
    return strtoll(p, NULL, 10);
}

void tr_ckpt_list_free(char **paths, int64_t *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(steps);
}

int tr_ckpt_list(const char *dir, char ***paths_out, int64_t **steps_out, size_t *n_out)
{
    *paths_out = NULL;
    *steps_out = NULL;
    *n_out = 0;
    DIR *dh = opendir(dir);
    if (!dh) {
        if (errno == ENOENT) return TR_OK;
        return tr_error(TR_RUNTIME, "cannot read the checkpoint directory '%s': %s", dir,
                        strerror(errno));
    }
    char **paths = NULL;
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        int64_t s = ckpt_step(e->d_name);
        if (s < 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **np = realloc(paths, cap * sizeof *np);
            if (np) paths = np;
            int64_t *ns = realloc(steps, cap * sizeof *ns);
            if (ns) steps = ns;
            if (!np || !ns) {
                closedir(dh);
                tr_ckpt_list_free(paths, steps, n);
                return tr_error(TR_RUNTIME, "out of memory");
            }
        }
        if (!(paths[n] = tr_ckpt_path(dir, s))) {
            closedir(dh);
            tr_ckpt_list_free(paths, steps, n);
            return tr_error(TR_RUNTIME, "out of memory");
        }
        steps[n++] = s;
    }
    closedir(dh);
    /* newest first (insertion sort: few files) */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            int64_t ts = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = ts;
            char *tp = paths[j];
            paths[j] = paths[j - 1];
            paths[j - 1] = tp;
        }
    *paths_out = paths;
    *steps_out = steps;
    *n_out = n;
    return TR_OK;
}

void tr_ckpt_prune(const char *dir, int keep)
{
    if (keep <= 0) return;
    char **paths;
    int64_t *steps;
    size_t n;
    if (tr_ckpt_list(dir, &paths, &steps, &n)) return;
    for (size_t i = (size_t)keep; i < n; i++)
        if (unlink(paths[i]) != 0)
            tr_warn("cannot remove the old checkpoint '%s': %s", paths[i], strerror(errno));
    tr_ckpt_list_free(paths, steps, n);
}

void tr_ckpt_tidy(const char *dir, int64_t from)
{
    DIR *dh = opendir(dir);
    if (!dh) return;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        const char *name = e->d_name;
        size_t dl = strlen(dir) + strlen(name) + 2;
        char *full = malloc(dl);
        if (!full) break;
        snprintf(full, dl, "%s/%s", dir, name);
        /* the temporary file of a write that was killed: step-N.ckpt.tmp.XXXXXX */
        const char *t = strstr(name, ".ckpt.tmp.");
        if (strncmp(name, "step-", 5) == 0 && t) {
            char base[64];
            size_t bl = (size_t)(t - name) + 5;
            if (bl < sizeof base) {
                memcpy(base, name, bl);
                base[bl] = '\0';
                if (ckpt_step(base) >= 0 && unlink(full) == 0)
                    printf("removed %s (a checkpoint write that did not finish)\n", full);
            }
        } else if (from >= 0 && ckpt_step(name) > from) {
            size_t nl = dl + 16;
            char *to = malloc(nl);
            if (to) {
                snprintf(to, nl, "%s.abandoned", full);
                if (rename(full, to) == 0)
                    printf("renamed %s to %s: it is newer than the checkpoint resumed from\n",
                           full, to);
                free(to);
            }
        }
        free(full);
    }
    closedir(dh);
}

int tr_mkdirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return tr_error(TR_RUNTIME, "out of memory");
    for (char *q = p + 1;; q++) {
        if (*q == '/' || *q == '\0') {
            char c = *q;
            *q = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                int rc = tr_error(TR_RUNTIME, "cannot create the directory '%s': %s", p,
                                  strerror(e));
                free(p);
                return rc;
            }
            *q = c;
            if (!c) break;
        }
    }
    free(p);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return tr_error(TR_RUNTIME, "'%s' is not a directory", dir);
    return TR_OK;
}

/* ---------------------------------------------------------------- the log */

int tr_log_truncate(const char *path, int64_t step)
{
    struct stat st;
    if (stat(path, &st) != 0) return TR_OK;
    char *text;
    size_t len;
    int rc = run_read_file(path, &text, &len);
    if (rc) return rc;
    size_t tl = strlen(path) + 8;
    char *tmp = malloc(tl);
    if (!tmp) {
        free(text);
        return tr_error(TR_RUNTIME, "out of memory");
    }
    snprintf(tmp, tl, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = tr_error(TR_RUNTIME, "cannot write '%s': %s", tmp, strerror(errno));
        free(tmp);
        free(text);
        return rc;
    }
    size_t dropped = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        json_object o;
        char err[128];
        if (ll > 0) {
            if (json_parse_flat(line, ll, &o, err, sizeof err) == 0) {
                const json_member *s = json_get(&o, "step");
                if (s && s->type == JV_NUMBER && s->num <= (double)step)
                    fprintf(f, "%.*s\n", (int)ll, line);
                else
                    dropped++;
                json_free(&o);
            } else {
                dropped++; /* a line cut by a kill */
            }
        }
        line += ll + 1;
    }
    free(text);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        rc = tr_error(TR_RUNTIME, "cannot rewrite the log '%s': %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    (void)dropped;
    return rc;
}

/* ---------------------------------------------------------------- the plot */

/* the gnuplot to run, or NULL when there is none: $MEGALODON_GNUPLOT, else gnuplot in PATH */
static char *find_gnuplot(void)
{
    const char *env = getenv("MEGALODON_GNUPLOT");
    const char *name = env && *env ? env : "gnuplot";
    if (strchr(name, '/')) return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    for (const char *p = path;;) {
        const char *c = strchr(p, ':');
        size_t dl = c ? (size_t)(c - p) : strlen(p);
        size_t n = dl + strlen(name) + 2;
        char *full = malloc(n);
        if (!full) return NULL;
        snprintf(full, n, "%.*s/%s", (int)dl, dl ? p : ".", name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0) return full;
        free(full);
        if (!c) break;
        p = c + 1;
    }
    return NULL;
}

/* s as a gnuplot single-quoted string ('' is a quote) */
static void gp_str(strbuf *b, const char *s)
{
    sb_printf(b, "'");
    for (; *s; s++) {
        if (*s == '\'')
            sb_printf(b, "''");
        else if (*s != '\n' && *s != '\r')
            sb_printf(b, "%c", *s);
    }
    sb_printf(b, "'");
}

int tr_plot(const char *log_path, const char *png_path, const char *title)
{
    char *gp = find_gnuplot();
    if (!gp) {
        printf("note: gnuplot is not installed (or $MEGALODON_GNUPLOT is not there): no plot "
               "drawn; the losses are in %s\n", log_path);
        return 1;
    }
    char *text;
    size_t len;
    if (run_read_file(log_path, &text, &len)) {
        free(gp);
        return -1;
    }
    strbuf tr = {0}, va = {0}, sc = {0};
    size_t n_tr = 0, n_va = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        json_object o;
        char err[128];
        if (ll > 0 && json_parse_flat(line, ll, &o, err, sizeof err) == 0) {
            const json_member *t = json_get(&o, "type"), *s = json_get(&o, "step"),
                              *l = json_get(&o, "loss");
            if (t && t->type == JV_STRING && s && s->type == JV_NUMBER && l &&
                l->type == JV_NUMBER) {
                if (strcmp(t->str, "train") == 0) {
                    sb_printf(&tr, "%.0f %.9g\n", s->num, l->num);
                    n_tr++;
                } else if (strcmp(t->str, "val") == 0) {
                    sb_printf(&va, "%.0f %.9g\n", s->num, l->num);
                    n_va++;
                }
            }
            json_free(&o);
        }
        line += ll + 1;
    }
    free(text);
    sb_printf(&sc, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo "
                   "size 960,600 } else { set terminal png size 960,600 }\n");
    sb_printf(&sc, "set output ");
    gp_str(&sc, png_path);
    sb_printf(&sc, "\nset title ");
    gp_str(&sc, title);
    sb_printf(&sc, " noenhanced\nset xlabel 'step'\nset ylabel 'loss (nats per token)'\n"
                   "set grid\nset key top right\n");
    sb_printf(&sc, "$train << EOD\n%sEOD\n", tr.s ? tr.s : "");
    sb_printf(&sc, "$val << EOD\n%sEOD\n", va.s ? va.s : "");
    if (n_tr && n_va)
        sb_printf(&sc, "plot $train using 1:2 with lines lw 1.5 title 'train', "
                       "$val using 1:2 with linespoints lw 2 pt 7 title 'validation'\n");
    else if (n_tr)
        sb_printf(&sc, "plot $train using 1:2 with lines lw 1.5 title 'train'\n");
    else
        sb_printf(&sc, "plot $val using 1:2 with linespoints lw 2 pt 7 title 'validation'\n");
    sb_free(&tr);
    sb_free(&va);
    if (!n_tr && !n_va) {
        sb_free(&sc);
        free(gp);
        tr_warn("no losses in %s: no plot drawn", log_path);
        return -1;
    }
    if (sc.oom) {
        sb_free(&sc);
        free(gp);
        tr_warn("out of memory for the plot");
        return -1;
    }

    unlink(png_path); /* so that a stale picture cannot pass for a new one */
    int fds[2];
    if (pipe(fds) != 0) {
        sb_free(&sc);
        free(gp);
        tr_warn("cannot run gnuplot: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        execl(gp, gp, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    int ok = pid > 0;
    if (ok) {
        /* a gnuplot that stops reading must not kill us */
        void (*old)(int) = signal(SIGPIPE, SIG_IGN);
        size_t off = 0;
        while (off < sc.n) {
            ssize_t w = write(fds[1], sc.s + off, sc.n - off);
            if (w <= 0) {
                if (w < 0 && errno == EINTR) continue;
                break;
            }
            off += (size_t)w;
        }
        signal(SIGPIPE, old);
    }
    close(fds[1]);
    int status = 0;
    if (ok) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    sb_free(&sc);
    struct stat st;
    if (!ok || stat(png_path, &st) != 0 || st.st_size == 0) {
        tr_warn("gnuplot (%s) failed to draw %s", gp, png_path);
        free(gp);
        return -1;
    }
    free(gp);
    return 0;
}

/* ---------------------------------------------------------------- paths */

/* path with a trailing ".gguf" replaced by (or, without one, followed by) ext */
char *tr_derive(const char *path, const char *ext)
{
    size_t n = strlen(path);
    if (n > 5 && strcmp(path + n - 5, ".gguf") == 0) n -= 5;
    size_t sz = n + strlen(ext) + 1;
    char *s = malloc(sz);
    if (s) snprintf(s, sz, "%.*s%s", (int)n, path, ext);
    return s;
}

char *tr_dir_of(const char *path)
{
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}
