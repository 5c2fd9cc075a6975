/* status.c — implementation of the fm_status error values (see status.h). */
#include "core/status.h"

#include <stdlib.h>
#include <string.h>

#define FM_STATUS_MAX_FRAMES 32

struct fm_status_s {
    fm_code code;
    char *message;
    int collective;
    int nframes;
    struct {
        const char *file;
        const char *func;
        int line;
    } frames[FM_STATUS_MAX_FRAMES];
};

/* Returned when allocating an error itself fails: immutable, never freed. */
static const struct fm_status_s fm_status_oom = {FM_ERR_NOMEM, (char *)"out of memory", 0, 0, {{0}}};

static char *fm_vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) n = 0;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

fm_status fm_status_vnew(fm_code code, const char *file, int line, const char *func,
                         const char *fmt, va_list ap)
{
    fm_status st = calloc(1, sizeof *st);
    if (!st) return (fm_status)&fm_status_oom;
    st->code = code == FM_OK ? FM_ERR_INTERNAL : code;
    st->message = fm_vformat(fmt, ap);
    if (!st->message) {
        free(st);
        return (fm_status)&fm_status_oom;
    }
    return fm_status_trace(st, file, line, func);
}

fm_status fm_status_new(fm_code code, const char *file, int line, const char *func,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fm_status st = fm_status_vnew(code, file, line, func, fmt, ap);
    va_end(ap);
    return st;
}

fm_status fm_status_trace(fm_status st, const char *file, int line, const char *func)
{
    if (!st || st == &fm_status_oom) return st;
    if (st->nframes < FM_STATUS_MAX_FRAMES) {
        st->frames[st->nframes].file = file;
        st->frames[st->nframes].line = line;
        st->frames[st->nframes].func = func;
        st->nframes++;
    }
    return st;
}

fm_status fm_status_prefix(fm_status st, const char *fmt, ...)
{
    if (!st || st == &fm_status_oom) return st;
    va_list ap;
    va_start(ap, fmt);
    char *pre = fm_vformat(fmt, ap);
    va_end(ap);
    if (!pre) return st;
    size_t n = strlen(pre) + 2 + strlen(st->message) + 1;
    char *m = malloc(n);
    if (m) {
        snprintf(m, n, "%s: %s", pre, st->message);
        free(st->message);
        st->message = m;
    }
    free(pre);
    return st;
}

fm_status fm_status_collective(fm_status st)
{
    if (st && st != &fm_status_oom) st->collective = 1;
    return st;
}

int fm_status_is_collective(fm_status st) { return st ? st->collective : 0; }

fm_code fm_status_code(fm_status st) { return st ? st->code : FM_OK; }

const char *fm_status_message(fm_status st) { return st ? st->message : ""; }

int fm_status_exit_code(fm_status st)
{
    switch (fm_status_code(st)) {
    case FM_OK: return FM_EXIT_OK;
    case FM_ERR_USAGE:
    case FM_ERR_CONFIG: return FM_EXIT_USAGE;
    case FM_ERR_INPUT: return FM_EXIT_INPUT;
    case FM_ERR_NUMERIC: return FM_EXIT_NUMERIC;
    case FM_ERR_STOPPED: return FM_EXIT_STOPPED;
    default: return FM_EXIT_FAILURE;
    }
}

const char *fm_code_name(fm_code code)
{
    switch (code) {
    case FM_OK: return "ok";
    case FM_ERR_USAGE: return "usage error";
    case FM_ERR_CONFIG: return "configuration error";
    case FM_ERR_INPUT: return "input error";
    case FM_ERR_IO: return "I/O error";
    case FM_ERR_NOMEM: return "out of memory";
    case FM_ERR_MPI: return "MPI error";
    case FM_ERR_DEVICE: return "device error";
    case FM_ERR_NUMERIC: return "numerical error";
    case FM_ERR_INTERNAL: return "internal error";
    case FM_ERR_STOPPED: return "stopped";
    }
    return "error";
}

void fm_status_print(fm_status st, FILE *out, int traceback)
{
    if (!st) return;
    fprintf(out, "fmtrain: %s: %s\n", fm_code_name(st->code), st->message);
    if (traceback)
        for (int i = 0; i < st->nframes; i++)
            fprintf(out, "  at %s:%d (%s)\n", st->frames[i].file, st->frames[i].line,
                    st->frames[i].func);
}

void fm_status_free(fm_status *st)
{
    if (!st || !*st) return;
    if (*st != &fm_status_oom) {
        free((*st)->message);
        free(*st);
    }
    *st = NULL;
}
