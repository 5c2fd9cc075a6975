/* fuzz_safetensors.c — libFuzzer harness for the safetensors header reader (src/hf/safetensors.c) and
 * the JSON parser under it: any bytes as a header (the first 8 bytes choose the file size the header is
 * checked against) must be accepted with consistent tensors or refused with a message, never read out
 * of bounds. An accepted header is checked: tensors contiguous from 0, each within the data. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8) return 0;
    uint64_t extra = 0;
    for (int i = 0; i < 8; i++) extra = extra << 8 | data[i];
    extra %= (uint64_t)1 << 20;
    const uint8_t *h = data + 8;
    uint64_t n = size - 8;
    fm_safetensors *f = NULL;
    fm_status st = fm_safetensors_parse_header("fuzz.safetensors", h, n, 8 + n + extra, &f);
    if (st) {
        if (!fm_status_message(st)[0]) abort();
        fm_status_free(&st);
        return 0;
    }
    uint64_t total = 0;
    for (int i = 0; i < fm_safetensors_count(f); i++) {
        const fm_st_tensor *t = fm_safetensors_at(f, i);
        if (t->end < t->begin || t->end > extra || !t->name[0]) abort();
        total += t->end - t->begin;
        if (fm_safetensors_find(f, t->name) == NULL) abort();
    }
    if (total != extra) abort();
    fm_safetensors_free(&f);
    return 0;
}
