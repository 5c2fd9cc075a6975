/* checkpoint_dir.c — the checkpoint directory: names, listing, latest, pruning (see checkpoint_dir.h). */
#define _POSIX_C_SOURCE 200809L
#include "ckpt/checkpoint_dir.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

int fm_checkpoint_dir_parse_name(const char *name, int64_t *step)
{
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits < 8 || strcmp(p, ".h5") != 0) return 0;
    if (step) *step = v;
    return 1;
}

fm_status fm_checkpoint_dir_of_run(const char *run_dir, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%s", run_dir, FM_CHECKPOINT_SUBDIR);
    if (n < 0 || (size_t)n >= size)
        return FM_ERR(FM_ERR_CONFIG, "run directory path too long: %s", run_dir);
    return NULL;
}

fm_status fm_checkpoint_dir_file_path(const char *run_dir, int64_t step, char *buf, size_t size)
{
    if (step < 0) return FM_ERR(FM_ERR_INTERNAL, "negative checkpoint step %lld", (long long)step);
    int n = snprintf(buf, size, "%s/%s/step-%08lld.h5", run_dir, FM_CHECKPOINT_SUBDIR,
                     (long long)step);
    if (n < 0 || (size_t)n >= size)
        return FM_ERR(FM_ERR_CONFIG, "run directory path too long: %s", run_dir);
    return NULL;
}

static int cmp_newest_first(const void *a, const void *b)
{
    const fm_checkpoint_entry *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return strcmp(x->name, y->name);
}

fm_status fm_checkpoint_dir_list(const char *dir, fm_checkpoint_entry **entries, int *n)
{
    *entries = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return NULL;
        return FM_ERR(FM_ERR_IO, "cannot list checkpoint directory %s: %s", dir, strerror(errno));
    }
    fm_checkpoint_entry *v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        if (!fm_checkpoint_dir_parse_name(e->d_name, &step)) continue;
        if (strlen(e->d_name) >= sizeof v[0].name) continue;
        struct stat sb; /* only regular files (or links to them) are checkpoints */
        if (fstatat(dirfd(d), e->d_name, &sb, 0) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            fm_checkpoint_entry *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return FM_ERR(FM_ERR_NOMEM, "out of memory listing %s", dir);
            }
            v = nv;
        }
        v[cnt].step = step;
        fm_util_strlcpy(v[cnt].name, e->d_name, sizeof v[cnt].name);
        cnt++;
    }
    closedir(d);
    if (cnt > 1) qsort(v, (size_t)cnt, sizeof *v, cmp_newest_first);
    *entries = v;
    *n = cnt;
    return NULL;
}

fm_status fm_checkpoint_dir_read_latest(const char *dir, char *name, size_t size)
{
    name[0] = '\0';
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, FM_CHECKPOINT_LATEST);
    char *text = NULL;
    size_t len = 0;
    fm_status st = fm_util_read_file(path, &text, &len);
    if (st) {
        if (fm_status_code(st) == FM_ERR_INPUT) { /* missing */
            fm_status_free(&st);
            return NULL;
        }
        return st;
    }
    fm_util_trim(text);
    if (fm_util_strlcpy(name, text, size)) {
        free(text);
        return FM_ERR(FM_ERR_INPUT, "%s holds a name too long to be a checkpoint", path);
    }
    free(text);
    return NULL;
}

static fm_status sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return FM_ERR(FM_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd), err = errno;
    close(fd);
    if (rc != 0 && err != EINVAL && err != EROFS)
        return FM_ERR(FM_ERR_IO, "fsync of directory %s failed: %s", dir, strerror(err));
    return NULL;
}

fm_status fm_checkpoint_dir_write_latest(const char *dir, const char *name)
{
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/%s", dir, FM_CHECKPOINT_LATEST);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return FM_ERR(FM_ERR_IO, "cannot update %s: it is a directory, not the file fmtrain writes "
                                 "there; move or remove it", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return FM_ERR(FM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    char line[4200];
    int n = snprintf(line, sizeof line, "%s\n", name);
    ssize_t w = n > 0 && (size_t)n < sizeof line ? write(fd, line, (size_t)n) : -1;
    int err = errno;
    int rc = w == (ssize_t)n ? fsync(fd) : -1;
    if (rc != 0 && w == (ssize_t)n) err = errno;
    close(fd);
    if (w != (ssize_t)n || rc != 0) {
        unlink(tmp);
        return FM_ERR(FM_ERR_IO, "cannot write %s: %s", tmp, w < 0 || rc != 0 ? strerror(err) : "short write");
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return FM_ERR(FM_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(err));
    }
    return sync_dir(dir);
}

fm_status fm_checkpoint_dir_prune(const char *dir, int keep_last, const char *keep_name)
{
    if (keep_last < 1) return NULL;
    fm_checkpoint_entry *v = NULL;
    int n = 0;
    FM_TRY(fm_checkpoint_dir_list(dir, &v, &n));
    fm_status st = NULL;
    for (int i = keep_last; i < n && !st; i++) {
        if (keep_name && strcmp(v[i].name, keep_name) == 0) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
        if (unlink(path) != 0 && errno != ENOENT)
            st = FM_ERR(FM_ERR_IO, "cannot delete old checkpoint %s: %s", path, strerror(errno));
    }
    free(v);
    if (!st) st = sync_dir(dir);
    return st;
}

fm_status fm_checkpoint_dir_remove_stale(const char *dir, int *removed)
{
    if (removed) *removed = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return NULL;
        return FM_ERR(FM_ERR_IO, "cannot list checkpoint directory %s: %s", dir, strerror(errno));
    }
    fm_status st = NULL;
    struct dirent *e;
    while (!st && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        int stale = strcmp(e->d_name, FM_CHECKPOINT_LATEST ".tmp") == 0;
        if (!stale && len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
            char base[256];
            if (len - 4 < sizeof base) {
                memcpy(base, e->d_name, len - 4);
                base[len - 4] = '\0';
                stale = fm_checkpoint_dir_parse_name(base, NULL);
            }
        }
        if (!stale) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            st = FM_ERR(FM_ERR_IO, "cannot remove stale %s: %s", path, strerror(errno));
        else if (removed)
            (*removed)++;
    }
    closedir(d);
    return st;
}

int fm_checkpoint_dir_odd_entries(const char *dir, char *msg, size_t size)
{
    if (size) msg[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!fm_checkpoint_dir_parse_name(e->d_name, NULL) &&
            strcmp(e->d_name, FM_CHECKPOINT_LATEST) != 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, 0) == 0 && S_ISREG(sb.st_mode)) continue;
        count++;
        size_t used = strlen(msg);
        if (count <= 3 && used + 1 < size)
            snprintf(msg + used, size - used, "%s%s/%s", count > 1 ? ", " : "", dir, e->d_name);
    }
    closedir(d);
    return count;
}
