/* cmd_plot.c — `fmtrain plot RUN_DIR [--output FILE]`: the loss curve of a run as a PNG.
 *
 * Reads RUN_DIR/metrics.jsonl (metrics.h describes the records), and pipes a gnuplot script with the
 * train and val losses against tokens (inline data blocks, no temporary files) into gnuplot, found on
 * PATH. Without gnuplot it says how to install it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/util.h"

static const char plot_help[] =
    "Usage: fmtrain plot RUN_DIR [--output FILE]\n"
    "\n"
    "Draws the training and validation loss of a run against the number of tokens seen, from\n"
    "RUN_DIR/metrics.jsonl, into RUN_DIR/loss.png (or FILE). Needs gnuplot on PATH (Debian:\n"
    "apt-get install gnuplot-nox; on a supercomputer: module load gnuplot).\n"
    "\n"
    "Options:\n"
    "  --output FILE  where to write the PNG (default RUN_DIR/loss.png)\n"
    "  --help         show this help\n";

/* The number after "key": in a JSON object line; 0 when absent or null. */
static int json_number(const char *line, const char *key, double *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    p += strlen(pat);
    while (*p == ' ') p++;
    char *end = NULL;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno) return 0;
    *out = v;
    return 1;
}

/* Finds an executable `name` on PATH; 0 when there is none. */
static int find_on_path(const char *name, char *out, size_t outsize)
{
    const char *path = getenv("PATH");
    if (!path) return 0;
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len > 0 && (size_t)snprintf(out, outsize, "%.*s/%s", (int)len, path, name) < outsize &&
            access(out, X_OK) == 0)
            return 1;
        path += len;
        if (*path == ':') path++;
    }
    return 0;
}

/* Writes `s` as a gnuplot single-quoted string ('' stands for a quote). */
static void gp_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static fm_status plot_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    const char *output = NULL;
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {{"output", FM_CLI_STRING, &output}};
    fm_status st = NULL;
    char *text = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("plot", argc, argv, opts, 1, &pos));
    if (pos.n != 1) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain plot: expected one run directory, got %d arguments; "
                                  "usage: fmtrain plot RUN_DIR [--output FILE]", pos.n);
        goto done;
    }
    const char *dir = pos.items[0];
    char jsonl[4200], png[4200], gnuplot[4200];
    snprintf(jsonl, sizeof jsonl, "%s/metrics.jsonl", dir);
    snprintf(png, sizeof png, "%s/loss.png", dir);
    if (output) fm_util_strlcpy(png, output, sizeof png);
    size_t len = 0;
    st = fm_util_read_file(jsonl, &text, &len);
    if (st) {
        st = fm_status_prefix(st, "fmtrain plot: %s has no readable metrics.jsonl (is it a run "
                                  "directory?): ", dir);
        goto done;
    }
    /* One NUL-terminated string per line, so that searches stay inside their record. */
    char *end = text + len;
    for (char *p = text; p < end; p++)
        if (*p == '\n') *p = '\0';
    int n_train = 0, n_eval = 0;
    for (char *line = text; line < end; line += strlen(line) + 1) {
        double x, y;
        if (strstr(line, "\"type\":\"train\"") && json_number(line, "tokens", &x) &&
            json_number(line, "loss", &y))
            n_train++;
        if (strstr(line, "\"type\":\"eval\"") && json_number(line, "tokens", &x) &&
            json_number(line, "val_loss", &y))
            n_eval++;
    }
    if (n_train + n_eval == 0) {
        st = FM_ERR(FM_ERR_INPUT, "%s has no train or eval records with a finite loss: nothing to plot",
                    jsonl);
        goto done;
    }
    if (!find_on_path("gnuplot", gnuplot, sizeof gnuplot)) {
        st = FM_ERR(FM_ERR_USAGE,
                    "fmtrain plot: gnuplot is not installed (not found on PATH). Install it with "
                    "`sudo apt-get install gnuplot-nox` (Debian/Ubuntu), `module load gnuplot` on a "
                    "supercomputer, or plot %s yourself (JSON Lines: tokens, loss, val_loss)",
                    jsonl);
        goto done;
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "'%s'", gnuplot); /* PATH entries with quotes are not supported */
    if (strchr(gnuplot, '\'')) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain plot: gnuplot's path %s contains a quote", gnuplot);
        goto done;
    }
    FILE *gp = popen(cmd, "w");
    if (!gp) {
        st = FM_ERR(FM_ERR_IO, "fmtrain plot: cannot run %s: %s", gnuplot, strerror(errno));
        goto done;
    }
    fputs("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 1000,600 } "
          "else { set terminal png size 1000,600 }\n", gp);
    fputs("set output ", gp);
    gp_quoted(gp, png);
    fputs("\nset title ", gp);
    gp_quoted(gp, dir);
    fputs(" noenhanced\nset xlabel 'tokens'\nset ylabel 'loss (nats per token)'\nset grid\nset key top right\n"
          "set format x '%.1s%c'\n", gp);
    for (int pass = 0; pass < 2; pass++) {
        fputs(pass == 0 ? "$train << EOD\n" : "$val << EOD\n", gp);
        for (char *line = text; line < end; line += strlen(line) + 1) {
            double x, y;
            if (strstr(line, pass == 0 ? "\"type\":\"train\"" : "\"type\":\"eval\"") &&
                json_number(line, "tokens", &x) && json_number(line, pass == 0 ? "loss" : "val_loss", &y))
                fprintf(gp, "%.17g %.9g\n", x, y);
        }
        fputs("EOD\n", gp);
    }
    if (n_train && n_eval)
        fputs("plot $train using 1:2 with lines lw 2 title 'train', "
              "$val using 1:2 with linespoints lw 2 pt 7 title 'val'\n", gp);
    else if (n_train)
        fputs("plot $train using 1:2 with lines lw 2 title 'train'\n", gp);
    else
        fputs("plot $val using 1:2 with linespoints lw 2 pt 7 title 'val'\n", gp);
    int rc = pclose(gp);
    if (rc != 0) {
        st = FM_ERR(FM_ERR_IO, "fmtrain plot: gnuplot (%s) failed writing %s (status %d)", gnuplot, png, rc);
        goto done;
    }
    if (access(png, R_OK) != 0) {
        st = FM_ERR(FM_ERR_IO, "fmtrain plot: gnuplot did not write %s", png);
        goto done;
    }
    printf("wrote %s (%d train and %d val points)\n", png, n_train, n_eval);
done:
    free(text);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_plot = {"plot", "draw a run's loss curve (loss.png) with gnuplot", plot_help, 0,
                                plot_run};
