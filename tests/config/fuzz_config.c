/* fuzz_config.c — libFuzzer harness for the parameter-file parser.
 *
 * Each input is parsed as a parameter file on top of the defaults. Whatever the parser accepts must
 * also pass through the effective-configuration writer and parse back to the identical struct, and
 * fm_config_validate / --set on the input's first line must not crash. Built by
 * tests/config/CMakeLists.txt with clang -fsanitize=fuzzer,address,undefined when clang is found.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_config *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    fm_config_defaults(a);
    fm_status st = fm_config_parse(a, "fuzz.ini", (const char *)data, size);
    if (!st) {
        fm_status vst = fm_config_validate(a);
        fm_status_free(&vst);
        char *text = NULL;
        st = fm_config_to_string(a, &text);
        if (!st) {
            fm_config_defaults(b);
            fm_status pst = fm_config_parse(b, "fuzz-effective.ini", text, strlen(text));
            /* Accepted input must round-trip exactly; anything else is a bug worth a crash report.
             */
            if (pst || memcmp(a, b, sizeof *a) != 0) abort();
            free(text);
        }
    }
    fm_status_free(&st);

    /* The same bytes as one --set assignment (up to the first NUL or newline). */
    size_t n = 0;
    while (n < size && data[n] != '\0' && data[n] != '\n') n++;
    char *assign = malloc(n + 1);
    if (assign) {
        memcpy(assign, data, n);
        assign[n] = '\0';
        fm_config_defaults(a);
        fm_status sst = fm_config_set(a, assign);
        fm_status_free(&sst);
        free(assign);
    }
    free(a);
    free(b);
    return 0;
}
