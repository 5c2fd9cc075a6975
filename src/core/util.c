/* util.c — see util.h. */
#define _POSIX_C_SOURCE 200809L
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

int fm_util_edit_distance(const char *a, const char *b, int cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 256 || lb > 256) return cap;
    int row[257];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        int best = row[0];
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1;
            int ins = row[j - 1] + 1;
            int v = sub < del ? sub : del;
            row[j] = v < ins ? v : ins;
            prev = cur;
            if (row[j] < best) best = row[j];
        }
        if (best >= cap) return cap;
    }
    return row[lb] < cap ? row[lb] : cap;
}

int fm_util_strlcpy(char *dst, const char *src, size_t dstsize)
{
    size_t n = strlen(src);
    if (dstsize == 0) return n > 0;
    size_t c = n < dstsize - 1 ? n : dstsize - 1;
    memcpy(dst, src, c);
    dst[c] = '\0';
    return c < n;
}

char *fm_util_trim(char *s)
{
    char *p = s;
    while (*p && isspace((unsigned char)*p)) p++;
    size_t n = strlen(p);
    while (n > 0 && isspace((unsigned char)p[n - 1])) n--;
    memmove(s, p, n);
    s[n] = '\0';
    return s;
}

double fm_util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double fm_util_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fm_util_isatty_fd(int fd) { return isatty(fd); }

fm_status fm_util_read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return FM_ERR(errno == ENOENT ? FM_ERR_INPUT : FM_ERR_IO, "cannot open %s: %s", path,
                      strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return FM_ERR(FM_ERR_IO, "error reading %s", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return NULL;
}

fm_status fm_util_mkdir_p(const char *path)
{
    char tmp[4096];
    if (fm_util_strlcpy(tmp, path, sizeof tmp))
        return FM_ERR(FM_ERR_CONFIG, "path too long: %s", path);
    size_t n = strlen(tmp);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return FM_ERR(FM_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
            tmp[i] = c;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return FM_ERR(FM_ERR_IO, "%s exists and is not a directory", path);
    return NULL;
}

const char *fm_util_format_bytes(double bytes, char *buf, size_t bufsize)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, bufsize, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
    return buf;
}
