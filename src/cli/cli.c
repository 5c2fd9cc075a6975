/* cli.c — see cli.h. */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static fm_status list_push(fm_cli_list *l, const char *s)
{
    const char **n = realloc(l->items, sizeof *n * (size_t)(l->n + 1));
    if (!n) return FM_ERR(FM_ERR_NOMEM, "out of memory parsing the command line");
    l->items = n;
    l->items[l->n++] = s;
    return NULL;
}

void fm_cli_list_free(fm_cli_list *list)
{
    if (!list) return;
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

fm_status fm_cli_parse(const char *cmd, int argc, char **argv, const fm_cli_opt *opts, int nopts,
                       fm_cli_list *positional)
{
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            FM_TRY(list_push(positional, a));
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (a[1] != '-')
            return FM_ERR(FM_ERR_USAGE, "fmtrain %s: options are spelt --name (got '%s'); see 'fmtrain help %s'",
                          cmd, a, cmd);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const fm_cli_opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0) o = &opts[k];
        if (!o) {
            char given[128];
            fm_util_strlcpy(given, name, nlen + 1 < sizeof given ? nlen + 1 : sizeof given);
            const char *best = NULL;
            int bestd = 4;
            for (int k = 0; k < nopts; k++) {
                int d = fm_util_edit_distance(given, opts[k].name, 4);
                if (d < bestd) {
                    bestd = d;
                    best = opts[k].name;
                }
            }
            if (best)
                return FM_ERR(FM_ERR_USAGE, "fmtrain %s: unknown option --%s (did you mean --%s?)", cmd,
                              given, best);
            return FM_ERR(FM_ERR_USAGE, "fmtrain %s: unknown option --%s; see 'fmtrain help %s'", cmd,
                          given, cmd);
        }
        if (o->kind == FM_CLI_FLAG) {
            if (eq)
                return FM_ERR(FM_ERR_USAGE, "fmtrain %s: option --%s takes no value", cmd, o->name);
            *(int *)o->dest = 1;
            continue;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return FM_ERR(FM_ERR_USAGE, "fmtrain %s: option --%s needs a value", cmd, o->name);
            val = argv[++i];
        }
        if (o->kind == FM_CLI_STRING)
            *(const char **)o->dest = val;
        else
            FM_TRY(list_push((fm_cli_list *)o->dest, val));
    }
    return NULL;
}

fm_status fm_cli_int(const char *option, const char *text, long long min, long long max,
                     long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0')
        return FM_ERR(FM_ERR_USAGE, "%s: expected a whole number, got '%s'", option, text);
    if (v < min || v > max)
        return FM_ERR(FM_ERR_USAGE, "%s: %lld is out of range [%lld, %lld]", option, v, min, max);
    *out = v;
    return NULL;
}

fm_status fm_cli_double(const char *option, const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(v))
        return FM_ERR(FM_ERR_USAGE, "%s: expected a number, got '%s'", option, text);
    if (v < min || v > max)
        return FM_ERR(FM_ERR_USAGE, "%s: %g is out of range [%g, %g]", option, v, min, max);
    *out = v;
    return NULL;
}
