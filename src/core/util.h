/* util.h — small helpers shared by several modules: strings, edit distance, time, files.
 * Nothing here holds state. */
#ifndef FM_UTIL_H
#define FM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Levenshtein distance between a and b (case-sensitive), capped at `cap` (returns cap when larger).
 * Used for "did you mean" suggestions. */
int fm_util_edit_distance(const char *a, const char *b, int cap);

/* Copies src into dst (size dstsize, always NUL-terminated). Returns non-zero if src was truncated. */
int fm_util_strlcpy(char *dst, const char *src, size_t dstsize);

/* Trims leading and trailing ASCII whitespace in place; returns s. */
char *fm_util_trim(char *s);

/* Monotonic clock in seconds. */
double fm_util_now(void);

/* Wall clock as seconds since the epoch. */
double fm_util_wall_time(void);

/* Non-zero when the stream's file descriptor is a terminal. */
int fm_util_isatty_fd(int fd);

/* Reads a whole file into a malloc'ed, NUL-terminated buffer (*len excludes the NUL).
 * Errors name the path and the system's reason. */
fm_status fm_util_read_file(const char *path, char **data, size_t *len);

/* Creates a directory and its parents (mode 0755); an existing directory is fine. */
fm_status fm_util_mkdir_p(const char *path);

/* Formats a byte count as "1.23 GiB" into buf. Returns buf. */
const char *fm_util_format_bytes(double bytes, char *buf, size_t bufsize);

#endif /* FM_UTIL_H */
