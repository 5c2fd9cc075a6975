/* presplit.h — the pre-split rules of byte-level BPE tokenizers: how text is cut into words before
 * merging (merges never cross a word boundary).
 *
 * What it is: each rule is exactly one regular expression of Hugging Face `tokenizers` (a Split
 * pre-tokenizer, "Isolated"), matched leftmost-first over the text from its start, implemented here by
 * hand for speed and so that fmtrain needs no regex engine. Character classes (\p{L}, \p{N}, \s) come
 * from unicode_tables.h, generated from `tokenizers` itself. Tests compare every rule with `tokenizers`
 * on the King James text, licences, C source, non-ASCII text, long whitespace runs and random strings
 * (tests/hf/test_presplit.py).
 *   FM_PRESPLIT_FMTRAIN   fmtrain's own rule (tokenizers it trains, tokenizer version 2):
 *       letter = ASCII letter or any non-ASCII character; digit = 0-9; space = ' ' \t \n \v \f \r;
 *       other = any other ASCII character. A word is, trying in this order:
 *       1. a contraction 's 't 'm 'd 're 've 'll (lower case)
 *       2. an optional ' ' and 1..256 letters   3. the same with digits   4. the same with others
 *       5. a run of 1..256 spaces: the whole run when it ends in a space other than ' ' (and is at most
 *          256 long) or ends the text; otherwise without its last ' ', which starts the next word
 *          (" word"), as GPT-2's \s+(?!\S). Longer runs are cut every 256 characters.
 *       The regular expression is fm_presplit_regex(FM_PRESPLIT_FMTRAIN).
 *   FM_PRESPLIT_FMTRAIN_V1  the rule of tokenizer version 1 (fmtrain before version 2): the same on
 *       bytes, but words longer than 256 BYTES were cut at 256 bytes, which no regular expression over
 *       characters expresses (a cut could fall inside a UTF-8 character): kept so that old datasets
 *       encode as before; such tokenizers cannot be exported as tokenizer.json.
 *   FM_PRESPLIT_GPT2      GPT-2's (ByteLevel with use_regex):
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   FM_PRESPLIT_LLAMA3    Llama 3's: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *       ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * Text that is not valid UTF-8 (which `tokenizers` cannot take at all) is split deterministically:
 * each invalid byte is one character, a letter for the fmtrain rules and an "other" character for the
 * Unicode rules (as U+FFFD would be); decode(encode(x)) == x holds for any bytes.
 *
 * Streaming: a word at the end of a buffer may change when more text follows ("he" + "llo").
 * fm_presplit_next says whether the word is certain; fm_presplit_cut finds how much of a buffer can be
 * encoded without knowing what follows.
 * Threads: pure functions.
 */
#ifndef FM_PRESPLIT_H
#define FM_PRESPLIT_H

#include <stddef.h>
#include <stdint.h>

typedef enum fm_presplit {
    FM_PRESPLIT_FMTRAIN_V1 = 1,
    FM_PRESPLIT_FMTRAIN = 2,
    FM_PRESPLIT_GPT2 = 3,
    FM_PRESPLIT_LLAMA3 = 4
} fm_presplit;

#define FM_PRESPLIT_MAX_RUN 256 /* FM_PRESPLIT_FMTRAIN: characters per run (bytes for _V1) */

/* The first word of text[0..len): its length in bytes (>= 1 when len > 0, 0 when len == 0).
 * at_end != 0: the text ends at len. Otherwise more text may follow, and *certain (may be NULL) is set
 * to 0 when it could change this word (the word reaches len, or the rule looked past it), else 1. */
size_t fm_presplit_next(fm_presplit rule, const uint8_t *text, size_t len, int at_end, int *certain);

/* The largest c <= len such that the words of text[0..c) are the same whatever follows text[0..len):
 * the end of the last certain word. 0 when the first word is not certain. */
size_t fm_presplit_cut(fm_presplit rule, const uint8_t *text, size_t len);

/* The rule's regular expression for a `tokenizers` Split pre-tokenizer; NULL for FM_PRESPLIT_FMTRAIN_V1. */
const char *fm_presplit_regex(fm_presplit rule);

/* The rule whose regular expression is `regex` (exactly); returns 0 when there is none. */
int fm_presplit_from_regex(const char *regex, fm_presplit *rule);

/* "fmtrain", "fmtrain-v1", "gpt2", "llama3". */
const char *fm_presplit_name(fm_presplit rule);

#endif /* FM_PRESPLIT_H */
