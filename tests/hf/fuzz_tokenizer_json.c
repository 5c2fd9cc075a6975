/* fuzz_tokenizer_json.c — libFuzzer harness for the tokenizer.json reader (src/hf/hf_tokenizer.c) and the
 * JSON parser: any text is accepted as a tokenizer or refused with a message, never read out of
 * bounds; an accepted tokenizer round-trips text (decode(encode(x)) == x) on a fixed sample and on the
 * input bytes themselves. Seeds: a small valid tokenizer.json written by the harness on first run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "hf/hf_tokenizer.h"

static void roundtrip(fm_tokenizer *t, const uint8_t *x, size_t n)
{
    fm_tokenizer_ids ids = {0};
    if (fm_tokenizer_encode(t, x, n, &ids)) abort();
    uint8_t *back = NULL;
    size_t bl = 0;
    if (fm_tokenizer_decode(t, ids.ids, ids.n, &back, &bl)) abort();
    if (bl != n || memcmp(back, x, n) != 0) abort();
    for (size_t i = 0; i < ids.n; i++)
        if (fm_tokenizer_is_special(t, ids.ids[i])) abort();
    free(back);
    fm_tokenizer_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_tokenizer *t = NULL;
    fm_status st = fm_hf_parse_tokenizer((const char *)data, size, "fuzz tokenizer.json", -1, &t);
    if (st) {
        if (!fm_status_message(st)[0]) abort();
        fm_status_free(&st);
        return 0;
    }
    static const char sample[] = "Hello world, it's 2024!\n\n  tabs\tand  spaces \xc3\xa9\xe4\xb8\xad\xff";
    roundtrip(t, (const uint8_t *)sample, sizeof sample - 1);
    roundtrip(t, data, size);
    fm_tokenizer_free(&t);
    return 0;
}
