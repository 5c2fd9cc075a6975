/* test_formats.c — the Hugging Face file readers and writers of src/hf without Python:
 * the JSON parser (values, offsets in errors, every refusal), safetensors (header validation, dtype
 * conversions, write -> read round trip), tokenizer.json (write -> read gives the same tokenizer and
 * the same ids; refusals of what fmtrain would not encode identically), and the tokenizer rules that
 * export relies on (trained tokens have unique bytes; a version-1 tokenizer still loads and encodes
 * with its old rule, and is refused by export). */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fm_test.h"
#include "hf/hf_tokenizer.h"
#include "hf/json.h"
#include "hf/safetensors.h"

#define OK FM_ASSERT_OK

static const fm_json *parse_ok(const char *text, fm_json_doc **doc)
{
    OK(fm_json_parse(text, strlen(text), "t.json", 0, doc));
    return fm_json_root(*doc);
}

/* The error message of parsing `text`, which must fail with FM_ERR_INPUT (a static copy). */
static const char *parse_err(const char *text, size_t len)
{
    static char msg[1024];
    fm_json_doc *doc = NULL;
    fm_status st = fm_json_parse(text, len, "t.json", 100, &doc);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_null(doc);
    snprintf(msg, sizeof msg, "%s", fm_status_message(st));
    fm_status_free(&st);
    return msg;
}

static void test_json_values(void **state)
{
    (void)state;
    fm_json_doc *doc = NULL;
    const fm_json *r = parse_ok(" {\"a\": [1, -2.5e1, 9007199254740993, true, false, null],"
                                " \"s\": \"x\\u00e9\\ud83d\\ude42\\n\\\"\", \"e\": {}, \"z\": \"\\u0000!\"} ", &doc);
    assert_int_equal(r->type, FM_JSON_OBJECT);
    assert_int_equal(r->len, 4);
    const fm_json *a = fm_json_get(r, "a");
    assert_int_equal(a->len, 6);
    assert_true(a->items[0]->is_int && a->items[0]->i == 1);
    assert_false(a->items[1]->is_int);
    assert_true(a->items[1]->num == -25.0);
    assert_true(a->items[2]->is_int && a->items[2]->i == INT64_C(9007199254740993)); /* exact beyond 2^53 */
    assert_int_equal(a->items[3]->type, FM_JSON_TRUE);
    assert_int_equal(a->items[5]->type, FM_JSON_NULL);
    const fm_json *s = fm_json_get(r, "s");
    assert_int_equal(s->len, 1 + 2 + 4 + 2);
    assert_memory_equal(s->str, "x\xc3\xa9\xf0\x9f\x99\x82\n\"", s->len);
    assert_int_equal(fm_json_get(r, "z")->len, 2); /* an escaped NUL is kept, counted */
    assert_int_equal(fm_json_get(r, "e")->len, 0);
    assert_null(fm_json_get(r, "missing"));
    assert_int_equal(a->offset, 7);
    int64_t v;
    OK(fm_json_want_int(a->items[0], 0, 10, "a[0]", &v));
    fm_status st = fm_json_want_int(a->items[1], 0, 10, "a[1]", &v);
    assert_non_null(strstr(fm_status_message(st), "a[1]: expected a whole number"));
    fm_status_free(&st);
    st = fm_json_want(fm_json_get(r, "nope"), FM_JSON_STRING, "x.nope");
    assert_non_null(strstr(fm_status_message(st), "x.nope: expected a string, found nothing"));
    fm_status_free(&st);
    fm_json_doc_free(&doc);
    assert_null(doc);
}

static void test_json_refusals(void **state)
{
    (void)state;
    struct {
        const char *text, *want;
    } cases[] = {
        {"{\"a\": 1,}", "at byte 108: expected '\"' starting a key, found '}'"},
        {"[1 2]", "at byte 103: expected ',' or ']', found '2'"},
        {"{\"a\": 1} x", "expected the end of the text after the value"},
        {"NaN", "expected a value"},
        {"01", "expected the end of the text"},
        {"1.", "expected a digit after '.'"},
        {"\"a\tb\"", "control characters must be escaped"},
        {"\"\\ud800\"", "a \\u low surrogate after a high surrogate"},
        {"\"\\udc00\"", "not a lone low surrogate"},
        {"\"\\x\"", "one of \" \\ / b f n r t u after '\\'"},
        {"\"abc", "'\"' closing a string"},
        {"{\"k\": 1, \"k\": 2}", "the key \"k\" appears twice"},
        {"// c\n1", "expected a value"},
        {"", "expected a value, found the end of the text"},
        {"tru", "a value (true)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *m = parse_err(cases[i].text, strlen(cases[i].text));
        if (!strstr(m, cases[i].want)) fail_msg("case %zu: %s\nwanted: %s", i, m, cases[i].want);
        assert_non_null(strstr(m, "t.json: at byte"));
    }
    /* invalid UTF-8 inside a string, duplicate keys among many (hashed), depth */
    const char bad_utf8[] = "\"a\xc3\x28\"";
    assert_non_null(strstr(parse_err(bad_utf8, sizeof bad_utf8 - 1), "valid UTF-8"));
    char big[8192];
    size_t o = (size_t)snprintf(big, sizeof big, "{");
    for (int i = 0; i < 100; i++) o += (size_t)snprintf(big + o, sizeof big - o, "\"k%d\": %d, ", i, i);
    snprintf(big + o, sizeof big - o, "\"k57\": 0}");
    assert_non_null(strstr(parse_err(big, strlen(big)), "\"k57\" appears twice"));
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_non_null(strstr(parse_err(deep, 200), "nested more than 64 deep"));
    fm_json_doc *doc = NULL;
    OK(fm_json_parse(deep + 36, 128, "t", 0, &doc)); /* 64 levels are fine */
    fm_json_doc_free(&doc);
}

/* A safetensors file from a header text and `data` bytes. */
static void write_st(const char *path, const char *header, size_t data)
{
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data; i++) fputc((int)i, f);
    fclose(f);
}

static const char *open_err(const char *path)
{
    static char msg[1024];
    fm_safetensors *s = NULL;
    fm_status st = fm_safetensors_open(path, &s);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    snprintf(msg, sizeof msg, "%s", fm_status_message(st));
    fm_status_free(&st);
    return msg;
}

static void test_safetensors_header(void **state)
{
    (void)state;
    char path[] = "/tmp/fm_st_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    write_st(path, "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                   "\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 16);
    fm_safetensors *s = NULL;
    OK(fm_safetensors_open(path, &s));
    assert_int_equal(fm_safetensors_count(s), 2);
    assert_string_equal(fm_safetensors_metadata(s, "format"), "pt");
    const fm_st_tensor *a = fm_safetensors_find(s, "a");
    assert_int_equal(a->dtype, FM_ST_BF16);
    assert_int_equal(a->numel, 4);
    float v[4];
    OK(fm_safetensors_read_f32(s, a, v));
    assert_true(v[0] == fm_st_bf16_to_f32(0x0100));
    fm_safetensors_free(&s);
    struct {
        const char *header;
        size_t data;
        const char *want;
    } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "is 4 bytes, but the shape and dtype make 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "trailing bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "truncated file"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "without holes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[0,4]}}", 4, "without overlapping"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "is not a safetensors dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "expected a whole number in 0.."},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
         "more elements than any file can"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown key \"x\""},
        {"{\"a\":[1]}", 0, "expected an object, found an array"},
        {"[]", 0, "expected an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "at byte"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_st(path, bad[i].header, bad[i].data);
        const char *m = open_err(path);
        if (!strstr(m, bad[i].want)) fail_msg("case %zu: %s\nwanted: %s", i, m, bad[i].want);
        assert_non_null(strstr(m, path));
    }
    /* a header length beyond the file or the limit */
    FILE *f = fopen(path, "wb");
    uint8_t huge[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    fwrite(huge, 1, 8, f);
    fclose(f);
    assert_non_null(strstr(open_err(path), "more than the"));
    f = fopen(path, "wb");
    fwrite("\x10\0\0\0\0\0\0\0{}", 1, 10, f);
    fclose(f);
    assert_non_null(strstr(open_err(path), "truncated"));
    unlink(path);
}

static void test_conversions(void **state)
{
    (void)state;
    /* bf16: round to nearest even; exact for values with 8 significant bits */
    assert_int_equal(fm_st_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(fm_st_f32_to_bf16(1.00390625f), 0x3F80);      /* tie 1 + 2^-8: to even */
    assert_int_equal(fm_st_f32_to_bf16(1.01171875f), 0x3F82);      /* tie 1 + 3*2^-8: to even (up) */
    assert_int_equal(fm_st_f32_to_bf16(1.0039064f), 0x3F81);       /* just above the tie */
    assert_true(isnan(fm_st_bf16_to_f32(fm_st_f32_to_bf16(NAN))));
    assert_true(fm_st_bf16_to_f32(fm_st_f32_to_bf16(-3.140625f)) == -3.140625f);
    /* f16 */
    assert_int_equal(fm_st_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(fm_st_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(fm_st_f32_to_f16(65520.0f), 0x7C00); /* rounds to Inf */
    assert_int_equal(fm_st_f32_to_f16(5.9604645e-08f), 0x0001); /* smallest subnormal */
    assert_int_equal(fm_st_f32_to_f16(2.9802322e-08f), 0x0000); /* half of it: tie to even (0) */
    assert_int_equal(fm_st_f32_to_f16(-0.0f), 0x8000);
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue; /* NaN payloads */
        assert_int_equal(fm_st_f32_to_f16(fm_st_f16_to_f32((uint16_t)h)), h);
        if (((h >> 7) & 0xFF) != 0xFF) assert_int_equal(fm_st_f32_to_bf16(fm_st_bf16_to_f32((uint16_t)h)), h);
    }
}

static fm_status fill_ramp(void *user, int i, float *dst, size_t n)
{
    (void)user;
    for (size_t k = 0; k < n; k++) dst[k] = (float)i + (float)k * 0.25f - 3.0f;
    return NULL;
}

static void test_safetensors_roundtrip(void **state)
{
    (void)state;
    char path[] = "/tmp/fm_st_rt_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    fm_st_out t[3] = {{"x.weight", FM_ST_F32, 2, {3, 5}}, {"x.bias", FM_ST_BF16, 1, {7}}, {"y", FM_ST_F16, 1, {4}}};
    OK(fm_safetensors_write(path, t, 3, fill_ramp, NULL));
    fm_safetensors *s = NULL;
    OK(fm_safetensors_open(path, &s));
    assert_int_equal(fm_safetensors_count(s), 3);
    for (int i = 0; i < 3; i++) {
        const fm_st_tensor *r = fm_safetensors_at(s, i);
        assert_string_equal(r->name, t[i].name);
        float got[15], want[15];
        fill_ramp(NULL, i, want, r->numel);
        OK(fm_safetensors_read_f32(s, r, got));
        assert_memory_equal(got, want, r->numel * sizeof *got); /* quarter steps are exact in every dtype */
    }
    fm_safetensors_free(&s);
    unlink(path);
}

static const char kjv_like[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep. It's theirs, we'll see: 1234 5678 naïve café — “quoted”\n\n"
    "    indented\tcode(x) { return x->y; }\r\n";

/* Trained tokens have distinct bytes (what a tokenizer.json vocabulary needs), also where BPE would
 * reach one string by two merges ("ab"+"c" and "a"+"bc"): random words over three letters do. */
static void test_trained_tokens_unique(void **state)
{
    (void)state;
    char text[40000];
    size_t o = 0;
    uint64_t x = 12345;
    while (o + 12 < sizeof text) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int len = 1 + (int)((x >> 33) % 8);
        for (int i = 0; i < len; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            text[o++] = (char)('a' + (x >> 33) % 3);
        }
        text[o++] = ' ';
    }
    fm_tokenizer *t = NULL;
    OK(fm_tokenizer_train((const uint8_t *)text, o, 700, &t));
    for (uint32_t a = 0; a + 1 < fm_tokenizer_vocab_size(t); a++)
        for (uint32_t b = a + 1; b < fm_tokenizer_vocab_size(t); b++) {
            size_t la, lb;
            const uint8_t *pa = fm_tokenizer_token(t, a, &la), *pb = fm_tokenizer_token(t, b, &lb);
            if (la == lb && memcmp(pa, pb, la) == 0) fail_msg("tokens %u and %u have the same bytes", a, b);
        }
    fm_tokenizer_free(&t);
}

/* Exports t's tokenizer.json (and tokenizer_config.json) into a new temporary folder `dir` (a
 * mkdtemp template), reads tokenizer.json back into *u and removes both files; the caller removes
 * dir. */
static void export_and_read(const fm_tokenizer *t, char *dir, fm_tokenizer **u)
{
    assert_non_null(mkdtemp(dir));
    OK(fm_hf_export_tokenizer(t, dir, 64, NULL));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    OK(fm_hf_read_tokenizer(path, -1, u));
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
}

static void test_tokenizer_json_roundtrip(void **state)
{
    (void)state;
    fm_tokenizer *t = NULL, *u = NULL;
    OK(fm_tokenizer_train((const uint8_t *)kjv_like, sizeof kjv_like - 1, 330, &t));
    char dir[] = "/tmp/fm_tj_XXXXXX";
    export_and_read(t, dir, &u);
    assert_int_equal(fm_tokenizer_vocab_size(u), fm_tokenizer_vocab_size(t));
    assert_int_equal(fm_tokenizer_eot_id(u), fm_tokenizer_eot_id(t));
    assert_int_equal(fm_tokenizer_n_merges(u), fm_tokenizer_n_merges(t));
    assert_int_equal(fm_tokenizer_presplit(u), FM_PRESPLIT_FMTRAIN);
    fm_tokenizer_ids a = {0}, b = {0};
    OK(fm_tokenizer_encode(t, (const uint8_t *)kjv_like, sizeof kjv_like - 1, &a));
    OK(fm_tokenizer_encode(u, (const uint8_t *)kjv_like, sizeof kjv_like - 1, &b));
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids);
    fm_tokenizer_ids_free(&a);
    fm_tokenizer_ids_free(&b);
    fm_tokenizer_free(&u);
    rmdir(dir);
    fm_tokenizer_free(&t);
}

static const char *tj_err(const char *json)
{
    static char msg[1024];
    fm_tokenizer *t = NULL;
    fm_status st = fm_hf_parse_tokenizer(json, strlen(json), "tj", -1, &t);
    assert_non_null(st);
    assert_null(t);
    snprintf(msg, sizeof msg, "%s", fm_status_message(st));
    fm_status_free(&st);
    return msg;
}

/* A minimal valid byte-level model.vocab body (malloc'ed): the 256 byte characters (ids 0..255) and "ab"
 * (256). */
static char *byte_vocab(void)
{
    uint32_t next = 256;
    char *vocab = malloc(8192);
    assert_non_null(vocab);
    size_t o = 0;
    for (uint32_t b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? b : next++;
        char ch[8];
        if (cp == '"' || cp == '\\') snprintf(ch, sizeof ch, "\\%c", (char)cp);
        else if (cp < 0x80) snprintf(ch, sizeof ch, "%c", (char)cp);
        else snprintf(ch, sizeof ch, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
        o += (size_t)snprintf(vocab + o, 8192 - o, "\"%s\": %u, ", ch, b);
    }
    snprintf(vocab + o, 8192 - o, "\"ab\": 256");
    return vocab;
}

static void test_tokenizer_json_refusals(void **state)
{
    (void)state;
    /* a minimal valid byte-level vocabulary: the 256 byte characters, one merge, <|endoftext|> */
    char *vocab = byte_vocab();
    const char *bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    char *good = malloc(16384);
    snprintf(good, 16384, "{\"added_tokens\": [{\"id\": 257, \"content\": \"<|endoftext|>\", \"special\": true}], "
                          "\"normalizer\": null, \"pre_tokenizer\": %s, \"model\": {\"type\": \"BPE\", \"vocab\": {%s}, "
                          "\"merges\": [\"a b\"]}}", bl, vocab);
    fm_tokenizer *t = NULL;
    OK(fm_hf_parse_tokenizer(good, strlen(good), "tj", -1, &t));
    assert_int_equal(fm_tokenizer_eot_id(t), 257);
    assert_int_equal(fm_tokenizer_presplit(t), FM_PRESPLIT_GPT2);
    fm_tokenizer_ids ids = {0};
    OK(fm_tokenizer_encode(t, (const uint8_t *)"ab <|endoftext|>", 16, &ids));
    assert_int_equal(ids.ids[0], 256);
    for (size_t i = 1; i < ids.n; i++) assert_true(ids.ids[i] < 256); /* special text is ordinary text */
    fm_tokenizer_ids_free(&ids);
    fm_tokenizer_free(&t);
    char *bad = malloc(16384);
    struct {
        const char *pre, *extra, *merges, *want;
    } cases[] = {
        {"{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "", "\"a b\"", "add_prefix_space is true"},
        {"{\"type\": \"Whitespace\"}", "", "\"a b\"", "pre_tokenizer (byte"},
        {"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}, "
         "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
         "\"use_regex\": false}]}", "", "\"a b\"", "is not one fmtrain implements"},
        {NULL, "\"dropout\": 0.1, ", "\"a b\"", "model.dropout is set"},
        {NULL, "\"byte_fallback\": true, ", "\"a b\"", "byte_fallback is true"},
        {NULL, "", "\"a c\"", "names a result not in model.vocab"},
        {NULL, "", "\"ab\"", "is not \\\"left right\\\""},
        {NULL, "", "\"a b\", \"a b\"", "repeats the pair"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(bad, 16384, "{\"added_tokens\": [{\"id\": 257, \"content\": \"<|endoftext|>\", \"special\": true}], "
                             "\"pre_tokenizer\": %s, \"model\": {%s\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": [%s]}}",
                 cases[i].pre ? cases[i].pre : bl, cases[i].extra, vocab, cases[i].merges);
        const char *m = tj_err(bad);
        if (!strstr(m, cases[i].want) && !(strstr(cases[i].want, "left right") && strstr(m, "left right")))
            fail_msg("case %zu: %s\nwanted: %s", i, m, cases[i].want);
    }
    /* a normalizer, a non-special added token, a gap in the ids, a missing byte */
    snprintf(bad, 16384, "{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": %s, \"model\": {\"vocab\": {%s}, "
                         "\"merges\": []}}", bl, vocab);
    assert_non_null(strstr(tj_err(bad), "there is a normalizer"));
    snprintf(bad, 16384, "{\"added_tokens\": [{\"id\": 257, \"content\": \"<x>\", \"special\": false}], "
                         "\"pre_tokenizer\": %s, \"model\": {\"vocab\": {%s}, \"merges\": []}}", bl, vocab);
    assert_non_null(strstr(tj_err(bad), "is not special"));
    snprintf(bad, 16384, "{\"added_tokens\": [{\"id\": 300, \"content\": \"<|endoftext|>\", \"special\": true}], "
                         "\"pre_tokenizer\": %s, \"model\": {\"vocab\": {%s}, \"merges\": []}}", bl, vocab);
    assert_non_null(strstr(tj_err(bad), "without gaps"));
    free(bad);
    free(good);
    free(vocab);
}

/* Llama 3's post-processor (a Sequence of ByteLevel and the TemplateProcessing that prepends
 * <|begin_of_text|>) gives a begin-of-text id, which survives export -> read and HDF5 save -> load; other
 * post-processors are refused naming the post_processor; a tokenizer without one stores no bos_id. */
static void test_tokenizer_json_bos(void **state)
{
    (void)state;
    char *vocab = byte_vocab();
    const char *tp = "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                     "{\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                     "\"type_id\": 0}}], \"pair\": [{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", "
                     "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": "
                     "{\"id\": \"<|begin_of_text|>\", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", "
                     "\"type_id\": 1}}], \"special_tokens\": {\"<|begin_of_text|>\": {\"id\": "
                     "\"<|begin_of_text|>\", \"ids\": [%s], \"tokens\": [\"<|begin_of_text|>\"]}}}";
    const char *head = "{\"added_tokens\": [{\"id\": 257, \"content\": \"<|begin_of_text|>\", \"special\": true}, "
                       "{\"id\": 258, \"content\": \"<|end_of_text|>\", \"special\": true}], \"pre_tokenizer\": "
                       "{\"type\": \"ByteLevel\", \"use_regex\": true}, \"post_processor\": ";
    char *json = malloc(20000), *pp = malloc(4000), *tpl = malloc(2000);
    assert_true(json && pp && tpl);
#define TJ(...)                                                                                            \
    do {                                                                                                   \
        snprintf(pp, 4000, __VA_ARGS__);                                                                   \
        snprintf(json, 20000, "%s%s, \"model\": {\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": [\"a b\"]}}", head, \
                 pp, vocab);                                                                               \
    } while (0)
    snprintf(tpl, 2000, tp, "257");
    TJ("{\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
       "\"trim_offsets\": false, \"use_regex\": true}, %s]}", tpl);
    fm_tokenizer *t = NULL, *u = NULL, *h = NULL;
    OK(fm_hf_parse_tokenizer(json, strlen(json), "tj", -1, &t));
    assert_int_equal(fm_tokenizer_bos_id(t), 257);
    assert_int_equal(fm_tokenizer_eot_id(t), 258);
    TJ("%s", tpl); /* the template alone */
    OK(fm_hf_parse_tokenizer(json, strlen(json), "tj", -1, &u));
    assert_int_equal(fm_tokenizer_bos_id(u), 257);
    fm_tokenizer_free(&u);
    TJ("{\"type\": \"ByteLevel\"}");
    OK(fm_hf_parse_tokenizer(json, strlen(json), "tj", -1, &u));
    assert_int_equal(fm_tokenizer_bos_id(u), -1);
    fm_tokenizer_free(&u);
    /* export -> read keeps it; so does the HDF5 group */
    char dir[] = "/tmp/fm_tjb_XXXXXX";
    export_and_read(t, dir, &u);
    assert_int_equal(fm_tokenizer_bos_id(u), 257);
    assert_int_equal(fm_tokenizer_eot_id(u), 258);
    char path[256];
    snprintf(path, sizeof path, "%s/t.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    OK(fm_tokenizer_save(u, f, "with"));
    fm_tokenizer *plain = NULL;
    OK(fm_tokenizer_train((const uint8_t *)kjv_like, sizeof kjv_like - 1, 300, &plain));
    assert_int_equal(fm_tokenizer_bos_id(plain), -1);
    OK(fm_tokenizer_save(plain, f, "without"));
    assert_true(H5Aexists_by_name(f, "without", "bos_id", H5P_DEFAULT) == 0);
    OK(fm_tokenizer_load(f, "with", &h));
    assert_int_equal(fm_tokenizer_bos_id(h), 257);
    fm_tokenizer_free(&h);
    OK(fm_tokenizer_load(f, "without", &h));
    assert_int_equal(fm_tokenizer_bos_id(h), -1);
    fm_tokenizer_free(&h);
    fm_tokenizer_free(&plain);
    H5Fclose(f);
    unlink(path);
    rmdir(dir);
    fm_tokenizer_free(&u);
    fm_tokenizer_free(&t);
    /* refusals, each naming the post_processor */
    TJ("{\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 0]}");
    assert_non_null(strstr(tj_err(json), "post_processor (byte"));
    snprintf(tpl, 2000, tp, "258"); /* special_tokens gives another token's id */
    TJ("%s", tpl);
    assert_non_null(strstr(tj_err(json), "not the special token of that text"));
    snprintf(tpl, 2000, tp, "257");
    TJ("{\"type\": \"Sequence\", \"processors\": [%s, %s]}", tpl, tpl);
    assert_non_null(strstr(tj_err(json), "two templates"));
    TJ("{\"type\": \"TemplateProcessing\", \"single\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
       "{\"SpecialToken\": {\"id\": \"<|end_of_text|>\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {}}");
    assert_non_null(strstr(tj_err(json), "has templates other than"));
#undef TJ
    free(tpl);
    free(pp);
    free(json);
    free(vocab);
}

/* A version-1 tokenizer group, as fmtrain wrote it before tokenizer version 2: it loads, keeps its rule
 * (words cut at 256 bytes), is saved back as version 1, and export refuses it. */
static void test_tokenizer_v1(void **state)
{
    (void)state;
    char path[] = "/tmp/fm_tok_v1_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sc = H5Screate(H5S_SCALAR);
    hid_t st_t = H5Tcopy(H5T_C_S1);
    H5Tset_size(st_t, 9);
    hid_t at = H5Acreate2(g, "kind", st_t, sc, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(at, st_t, "byte-bpe");
    H5Aclose(at);
    int32_t ver = 1;
    at = H5Acreate2(g, "version", H5T_STD_I32LE, sc, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(at, H5T_NATIVE_INT32, &ver);
    H5Aclose(at);
    uint64_t vals[3] = {258, 257, 1}; /* vocab_size, eot_id, n_merges */
    const char *names[3] = {"vocab_size", "eot_id", "n_merges"};
    for (int i = 0; i < 3; i++) {
        at = H5Acreate2(g, names[i], H5T_STD_U64LE, sc, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(at, H5T_NATIVE_UINT64, &vals[i]);
        H5Aclose(at);
    }
    uint32_t merges[2] = {'a', 'a'};
    hsize_t dm[2] = {1, 2};
    hid_t sp = H5Screate_simple(2, dm, NULL);
    hid_t ds = H5Dcreate2(g, "merges", H5T_STD_U32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, merges);
    H5Dclose(ds);
    H5Sclose(sp);
    uint64_t off[259];
    uint8_t bytes[256 + 2 + 13];
    for (int i = 0; i < 256; i++) off[i] = (uint64_t)i, bytes[i] = (uint8_t)i;
    off[256] = 256;
    bytes[256] = 'a';
    bytes[257] = 'a';
    off[257] = 258;
    memcpy(bytes + 258, "<|endoftext|>", 13);
    off[258] = 271;
    hsize_t doff = 259, db = 271;
    sp = H5Screate_simple(1, &doff, NULL);
    ds = H5Dcreate2(g, "token_offsets", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(1, &db, NULL);
    ds = H5Dcreate2(g, "token_bytes", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(st_t);
    H5Sclose(sc);
    H5Gclose(g);
    fm_tokenizer *t = NULL;
    OK(fm_tokenizer_load(f, "tokenizer", &t));
    assert_int_equal(fm_tokenizer_version(t), 1);
    assert_int_equal(fm_tokenizer_presplit(t), FM_PRESPLIT_FMTRAIN_V1);
    /* 600 letters: version 1 cut the word at 256 bytes (an odd cut: 'aa' pairs restart), version 2 would
     * cut at 256 characters too for ASCII — but a run of 2-byte letters shows the difference */
    uint8_t text[600];
    for (int i = 0; i < 600; i += 2) text[i] = 0xC3, text[i + 1] = 0xA9; /* é x 300 */
    assert_int_equal(fm_presplit_next(FM_PRESPLIT_FMTRAIN_V1, text, 600, 1, NULL), 256);
    assert_int_equal(fm_presplit_next(FM_PRESPLIT_FMTRAIN, text, 600, 1, NULL), 512);
    fm_tokenizer_ids ids = {0};
    OK(fm_tokenizer_encode(t, (const uint8_t *)"aaaaa", 5, &ids));
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[0], 256);
    fm_tokenizer_ids_free(&ids);
    /* saved again: still version 1 */
    OK(fm_tokenizer_save(t, f, "again"));
    fm_tokenizer *u = NULL;
    OK(fm_tokenizer_load(f, "again", &u));
    assert_int_equal(fm_tokenizer_version(u), 1);
    fm_tokenizer_free(&u);
    H5Fclose(f);
    fm_status st = fm_hf_export_tokenizer(t, "/tmp", 64, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    assert_non_null(strstr(fm_status_message(st), "version-1"));
    fm_status_free(&st);
    fm_tokenizer_free(&t);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_values),
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_safetensors_header),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_safetensors_roundtrip),
        cmocka_unit_test(test_trained_tokens_unique),
        cmocka_unit_test(test_tokenizer_json_roundtrip),
        cmocka_unit_test(test_tokenizer_json_refusals),
        cmocka_unit_test(test_tokenizer_json_bos),
        cmocka_unit_test(test_tokenizer_v1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
