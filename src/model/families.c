/* families.c — the table of model families (family.h). A new family is one file defining its
 * fm_family, its declaration in family.h and one line here. */
#include "model/family.h"

#include <stdio.h>
#include <string.h>

static const fm_family *const families[] = {
    &fm_family_gpt2,
    &fm_family_llama,
};
enum { N_FAMILIES = sizeof families / sizeof *families };

const fm_family *fm_family_find(const char *name)
{
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(families[i]->name, name) == 0) return families[i];
    return NULL;
}

const fm_family *fm_family_at(int i) { return i >= 0 && i < N_FAMILIES ? families[i] : NULL; }

const char *fm_family_names(char *buf, size_t n)
{
    size_t len = 0;
    if (n == 0) return buf;
    buf[0] = '\0';
    for (int i = 0; i < N_FAMILIES && len < n; i++) {
        int w = snprintf(buf + len, n - len, "%s%s", i ? ", " : "", families[i]->name);
        if (w < 0) break;
        len += (size_t)w;
    }
    return buf;
}
