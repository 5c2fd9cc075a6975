/* metrics.c — see metrics.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

struct fm_metrics {
    FILE *console;
    int tty;
    int progress_open; /* a progress line is on the terminal without its newline */
    int64_t total_steps;
    FILE *jsonl;
    FILE *log;
    char jsonl_path[4200];
    char log_path[4200];
};

static fm_status open_append(const char *dir, const char *name, char *path, size_t pathsize,
                             FILE **f)
{
    if ((size_t)snprintf(path, pathsize, "%s/%s", dir, name) >= pathsize)
        return FM_ERR(FM_ERR_IO, "run directory path too long: %s", dir);
    *f = fopen(path, "a");
    if (!*f) return FM_ERR(FM_ERR_IO, "cannot open %s for appending: %s", path, strerror(errno));
    return NULL;
}

fm_status fm_metrics_open(const fm_metrics_options *opts, fm_metrics **out)
{
    *out = NULL;
    fm_metrics *m = calloc(1, sizeof *m);
    FM_CHECK_ALLOC(m, sizeof *m);
    m->console = opts->console;
    m->tty = opts->console_is_tty;
    m->total_steps = opts->total_steps;
    fm_status st = NULL;
    if (opts->run_dir) {
        FM_TRY_GOTO(st, fail, fm_util_mkdir_p(opts->run_dir));
        FM_TRY_GOTO(st, fail, open_append(opts->run_dir, "metrics.jsonl", m->jsonl_path,
                                          sizeof m->jsonl_path, &m->jsonl));
        FM_TRY_GOTO(st, fail, open_append(opts->run_dir, "train.log", m->log_path,
                                          sizeof m->log_path, &m->log));
    }
    *out = m;
    return NULL;
fail:
    fm_metrics_close(&m);
    return st;
}

static void end_progress(fm_metrics *m)
{
    if (m->progress_open && m->console) {
        fputc('\n', m->console);
        fflush(m->console);
    }
    m->progress_open = 0;
}

void fm_metrics_close(fm_metrics **pm)
{
    if (!pm || !*pm) return;
    fm_metrics *m = *pm;
    end_progress(m);
    if (m->jsonl) fclose(m->jsonl);
    if (m->log) fclose(m->log);
    free(m);
    *pm = NULL;
}

static void log_line(fm_metrics *m, const char *text)
{
    if (!m->log) return;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    size_t n = strlen(text);
    fprintf(m->log, "%s %s%s", stamp, text, (n && text[n - 1] == '\n') ? "" : "\n");
    fflush(m->log);
}

static void vmessage(fm_metrics *m, int to_console, const char *fmt, va_list ap)
{
    char buf[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    if (to_console && m->console) {
        end_progress(m);
        size_t n = strlen(buf);
        fprintf(m->console, "%s%s", buf, (n && buf[n - 1] == '\n') ? "" : "\n");
        fflush(m->console);
    }
    log_line(m, buf);
}

void fm_metrics_printf(fm_metrics *m, const char *fmt, ...)
{
    if (!m) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(m, 1, fmt, ap);
    va_end(ap);
}

void fm_metrics_logf(fm_metrics *m, const char *fmt, ...)
{
    if (!m) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(m, 0, fmt, ap);
    va_end(ap);
}

const char *fm_metrics_format_duration(double s, char *buf, size_t bufsize)
{
    if (!(s >= 0.0) || !isfinite(s) || s > 1e9) {
        snprintf(buf, bufsize, "?");
        return buf;
    }
    long long t = llround(s);
    if (t < 60)
        snprintf(buf, bufsize, "%llds", t);
    else if (t < 3600)
        snprintf(buf, bufsize, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, bufsize, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
    return buf;
}

/* A JSON number, or null when not finite. */
static void json_num(char *buf, size_t n, double v)
{
    if (isfinite(v))
        snprintf(buf, n, "%.9g", v);
    else
        snprintf(buf, n, "null");
}

static fm_status check_write(FILE *f, const char *path)
{
    if (fflush(f) != 0 || ferror(f))
        return FM_ERR(FM_ERR_IO, "writing %s failed: %s", path, strerror(errno));
    return NULL;
}

static const char *format_rate(double tps, char *buf, size_t n)
{
    if (!isfinite(tps) || tps < 0) snprintf(buf, n, "?");
    else if (tps >= 1e6) snprintf(buf, n, "%.2fM", tps / 1e6);
    else if (tps >= 1e3) snprintf(buf, n, "%.1fk", tps / 1e3);
    else snprintf(buf, n, "%.0f", tps);
    return buf;
}

fm_status fm_metrics_log_step(fm_metrics *m, const fm_metrics_step *r)
{
    if (!m) return NULL;
    char rate[32], eta[32], mfu[32];
    if (r->mfu >= 0 && isfinite(r->mfu)) snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * r->mfu);
    else snprintf(mfu, sizeof mfu, "?");
    char line[640], spread[96] = "";
    int w = 1;
    for (int64_t t = m->total_steps; t >= 10; t /= 10) w++;
    if (r->ranks > 1)
        snprintf(spread, sizeof spread, " | ranks %.1f-%.1f ms (slowest %d)", r->compute_ms_min,
                 r->compute_ms_max, r->slowest_rank);
    snprintf(line, sizeof line,
             "step %*lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.1f ms/step | %s tok/s | MFU %s | "
             "ETA %s%s%s",
             w, (long long)r->step, (long long)m->total_steps, r->loss, r->lr, r->grad_norm, r->step_ms,
             format_rate(r->tokens_per_s, rate, sizeof rate), mfu,
             fm_metrics_format_duration(r->eta_s, eta, sizeof eta), r->skipped ? " | SKIPPED" : "",
             spread);
    if (m->console) {
        if (m->tty) {
            fprintf(m->console, "\r%s\033[K", line);
            m->progress_open = 1;
        } else {
            fprintf(m->console, "%s\n", line);
        }
        fflush(m->console);
    }
    log_line(m, line);
    if (m->jsonl) {
        char loss[40], lr[40], gn[40], ms[40], tps[40], mf[40], el[40];
        json_num(loss, sizeof loss, r->loss);
        json_num(lr, sizeof lr, r->lr);
        json_num(gn, sizeof gn, r->grad_norm);
        json_num(ms, sizeof ms, r->step_ms);
        json_num(tps, sizeof tps, r->tokens_per_s);
        json_num(mf, sizeof mf, r->mfu >= 0 ? r->mfu : NAN);
        json_num(el, sizeof el, r->elapsed_s);
        char ranks[200] = "";
        if (r->ranks > 1) {
            char a[40], b[40], c[40];
            json_num(a, sizeof a, r->compute_ms_min);
            json_num(b, sizeof b, r->compute_ms_median);
            json_num(c, sizeof c, r->compute_ms_max);
            snprintf(ranks, sizeof ranks,
                     ",\"compute_ms_min\":%s,\"compute_ms_median\":%s,\"compute_ms_max\":%s,"
                     "\"slowest_rank\":%d",
                     a, b, c, r->slowest_rank);
        }
        fprintf(m->jsonl,
                "{\"type\":\"train\",\"step\":%lld,\"tokens\":%lld,\"loss\":%s,\"lr\":%s,"
                "\"grad_norm\":%s,\"step_ms\":%s,\"tokens_per_s\":%s,\"mfu\":%s,\"elapsed_s\":%s,"
                "\"skipped\":%d%s}\n",
                (long long)r->step, (long long)r->tokens, loss, lr, gn, ms, tps, mf, el,
                r->skipped ? 1 : 0, ranks);
        FM_TRY(check_write(m->jsonl, m->jsonl_path));
    }
    return NULL;
}

fm_status fm_metrics_log_eval(fm_metrics *m, int64_t step, int64_t tokens, double val_loss,
                              double elapsed_s)
{
    if (!m) return NULL;
    fm_metrics_printf(m, "eval at step %lld: val loss %.4f", (long long)step, val_loss);
    if (m->jsonl) {
        char vl[40], el[40];
        json_num(vl, sizeof vl, val_loss);
        json_num(el, sizeof el, elapsed_s);
        fprintf(m->jsonl, "{\"type\":\"eval\",\"step\":%lld,\"tokens\":%lld,\"val_loss\":%s,"
                          "\"elapsed_s\":%s}\n",
                (long long)step, (long long)tokens, vl, el);
        FM_TRY(check_write(m->jsonl, m->jsonl_path));
    }
    return NULL;
}

fm_status fm_metrics_log_checkpoint(fm_metrics *m, const fm_metrics_checkpoint *rec)
{
    if (!m || !m->jsonl) return NULL;
    char w[40], g[40], x[40];
    json_num(w, sizeof w, rec->write_s);
    json_num(g, sizeof g, rec->write_s > 0 ? (double)rec->tensor_bytes / rec->write_s / 1e9 : 0.0);
    json_num(x, sizeof x, rec->stall_s);
    fprintf(m->jsonl,
            "{\"type\":\"checkpoint\",\"step\":%lld,\"file\":\"%s\",\"reason\":\"%s\","
            "\"async\":%s,\"tensor_bytes\":%llu,\"file_bytes\":%llu,\"write_s\":%s,"
            "\"write_gb_per_s\":%s,\"checkpoint_stall_s\":%s}\n",
            (long long)rec->step, rec->file, rec->reason, rec->async ? "true" : "false",
            (unsigned long long)rec->tensor_bytes, (unsigned long long)rec->file_bytes, w, g, x);
    return check_write(m->jsonl, m->jsonl_path);
}

fm_status fm_metrics_measure_peak_flops(fm_backend *be, double *flops)
{
    const int n = 1024;
    size_t elems = (size_t)n * (size_t)n, bytes = elems * sizeof(float);
    float *host = malloc(bytes);
    FM_CHECK_ALLOC(host, bytes);
    void *a = NULL, *b = NULL, *c = NULL;
    fm_status st = NULL;
    FM_TRY_GOTO(st, done, be->ops->alloc(be, &a, bytes));
    FM_TRY_GOTO(st, done, be->ops->alloc(be, &b, bytes));
    FM_TRY_GOTO(st, done, be->ops->alloc(be, &c, bytes));
    for (size_t i = 0; i < elems; i++) host[i] = (float)((i * 7) % 13) * 0.01f;
    FM_TRY_GOTO(st, done, be->ops->upload(be, a, host, bytes));
    FM_TRY_GOTO(st, done, be->ops->upload(be, b, host, bytes));
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) { /* best of 6: a shared machine's noise only slows */
        FM_TRY_GOTO(st, done, be->ops->sync(be));
        double t0 = fm_util_now();
        be->ops->matmul_forward(be, c, a, b, NULL, n, n, n);
        FM_TRY_GOTO(st, done, be->ops->sync(be));
        double dt = fm_util_now() - t0;
        if (rep > 0 && dt < best) best = dt; /* rep 0 warms up caches and threads */
    }
    *flops = 2.0 * (double)n * (double)n * (double)n / (best > 1e-9 ? best : 1e-9);
done:
    if (c) be->ops->free(be, c);
    if (b) be->ops->free(be, b);
    if (a) be->ops->free(be, a);
    free(host);
    return st;
}
