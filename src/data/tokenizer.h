/* tokenizer.h — fmtrain's byte-level BPE tokenizer: training, encoding, decoding, HDF5 storage.
 *
 * What it is: a GPT-2-style byte-level byte-pair encoder. The vocabulary is
 *   ids 0..255                  the 256 single bytes (so every byte sequence is encodable),
 *   ids 256..vocab_size-2       one per merge, in merge order (merge k makes id 256+k from two ids),
 *   id  vocab_size-1            the end-of-text token "<|endoftext|>" (eot_id); encode never
 *                               produces it — `fmtrain prepare` inserts it between documents.
 * decode(encode(x)) == x for ANY byte string x (tested on random bytes and by a fuzzer).
 *
 * Pre-split (what a "word" is; merges never cross word boundaries), on bytes, GPT-2-like:
 *   letter = ASCII letter or any byte >= 0x80 (UTF-8 sequences count as letters);
 *   digit  = '0'..'9'; space = ' ', '\t', '\n', '\v', '\f', '\r'; other = any remaining byte.
 *   A word is, trying in this order at each position:
 *     1. a contraction  's 't 'm 'd 're 've 'll   (lower case, apostrophe 0x27)
 *     2. an optional ' ' then a run of letters
 *     3. an optional ' ' then a run of digits
 *     4. an optional ' ' then a run of "other" bytes
 *     5. a run of spaces; when the run is followed by a non-space byte and ends in ' ', that last
 *        ' ' is left to start the next word (" word"), as in GPT-2's \s+(?!\S).
 *   A word longer than FM_TOKENIZER_MAX_WORD bytes is cut into pieces of that length (bounds the
 *   cost of merging one word; long runs are rare in text and still round-trip).
 *
 * Training (deterministic): words are counted; then repeatedly the most frequent adjacent pair of
 * ids (counted over words x their counts) is merged. Ties: the larger count wins; among equal counts
 * the pair with the smaller left id wins, then the smaller right id. Pair counts are updated
 * incrementally (only words containing the merged pair are touched) with a lazy max-heap, so
 * training cost is about proportional to the number of pair occurrences changed, not
 * merges x corpus. If the corpus runs out of pairs (every word is a single token) before
 * vocab_size is reached, training fails with FM_ERR_INPUT saying how many tokens it supports.
 *
 * HDF5 layout of a stored tokenizer (a group, "/tokenizer" in datasets and checkpoints):
 *   attributes: kind = "byte-bpe" (string), version = 1 (int32), vocab_size (uint64),
 *               eot_id (uint64), n_merges (uint64)
 *   merges         uint32 (n_merges, 2)   merge k joins ids merges[k][0], merges[k][1] -> 256+k
 *   token_offsets  uint64 (vocab_size+1)  token id's bytes are token_bytes[off[id]:off[id+1]]
 *   token_bytes    uint8  (total)         all tokens' byte strings, concatenated
 * (token bytes are derivable from merges but stored so that h5py alone can decode.)
 *
 * Threads: a tokenizer is read-only after training or loading EXCEPT that fm_tokenizer_encode
 * keeps a bounded cache of encoded words inside it: do not encode with one tokenizer from two
 * threads at once. Decoding and token lookup are safe from any number of threads.
 */
#ifndef FM_TOKENIZER_H
#define FM_TOKENIZER_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FM_TOKENIZER_KIND "byte-bpe"
#define FM_TOKENIZER_VERSION 1
#define FM_TOKENIZER_MIN_VOCAB 257u        /* 256 bytes + end-of-text */
#define FM_TOKENIZER_MAX_VOCAB 16777216u   /* 2^24: far beyond any useful BPE vocabulary */
#define FM_TOKENIZER_EOT_TEXT "<|endoftext|>"
#define FM_TOKENIZER_MAX_WORD 256

typedef struct fm_tokenizer fm_tokenizer;                 /* opaque, owned by the caller */
typedef struct fm_tokenizer_trainer fm_tokenizer_trainer; /* opaque, streaming word counter */

/* A growable array of token ids (encode appends to it). Zero-initialise; free with
 * fm_tokenizer_ids_free. */
typedef struct fm_tokenizer_ids {
    uint32_t *ids;
    size_t n;   /* ids in use */
    size_t cap; /* allocated */
} fm_tokenizer_ids;
void fm_tokenizer_ids_free(fm_tokenizer_ids *v);

/* ---- pre-split ------------------------------------------------------------------------------ */

/* Length of the first word of text[0..len) by the pre-split rules above (>= 1 when len > 0). */
size_t fm_tokenizer_word_length(const uint8_t *text, size_t len);

/* Largest cut c <= len such that pre-splitting text[0..c) and text[c..) separately gives the same
 * words as pre-splitting text[0..len+more) would, for any continuation: a position after a
 * non-space byte and before " x" (a space then a non-space), or after a whitespace byte other than
 * ' ' and before a non-space byte. Returns 0 when text has no such
 * position (the caller then cuts where it must; the result still round-trips, only the word
 * boundary is artificial). Streaming callers feed/encode text[0..c) and keep the rest. */
size_t fm_tokenizer_safe_cut(const uint8_t *text, size_t len);

/* ---- training ------------------------------------------------------------------------------- */

/* Streaming training: count words chunk by chunk, then merge. Each fed chunk is pre-split on its
 * own, so feed chunks cut with fm_tokenizer_safe_cut. Memory: the table of distinct words
 * (about 40 bytes + the word's length per distinct word) — the caller bounds it by how much text
 * it feeds (fmtrain prepare: --tokenizer-train-bytes). */
fm_status fm_tokenizer_trainer_new(fm_tokenizer_trainer **out);
fm_status fm_tokenizer_trainer_feed(fm_tokenizer_trainer *tr, const uint8_t *text, size_t len);
size_t fm_tokenizer_trainer_distinct_words(const fm_tokenizer_trainer *tr);
/* Runs the merges and returns a tokenizer with exactly `vocab_size` ids (FM_TOKENIZER_MIN_VOCAB ..
 * FM_TOKENIZER_MAX_VOCAB, else FM_ERR_USAGE). `progress`, when not NULL, is called now and then with
 * (merges done, merges wanted, user). The trainer may be freed afterwards; finishing twice is an
 * FM_ERR_INTERNAL error. */
fm_status fm_tokenizer_trainer_finish(fm_tokenizer_trainer *tr, uint32_t vocab_size,
                                      void (*progress)(uint64_t done, uint64_t total, void *user),
                                      void *user, fm_tokenizer **out);
void fm_tokenizer_trainer_free(fm_tokenizer_trainer **tr);

/* Convenience: trains on one in-memory text (cut internally at safe points every 1 MiB). */
fm_status fm_tokenizer_train(const uint8_t *text, size_t len, uint32_t vocab_size, fm_tokenizer **out);

/* ---- use ------------------------------------------------------------------------------------ */

uint32_t fm_tokenizer_vocab_size(const fm_tokenizer *tok);
uint32_t fm_tokenizer_eot_id(const fm_tokenizer *tok); /* vocab_size - 1 */

/* Appends the ids of text[0..len) to `out` (grown as needed). The text is pre-split on its own:
 * encoding a long stream in pieces gives the same ids as encoding it whole when the pieces are cut
 * with fm_tokenizer_safe_cut. Never produces eot_id. Errors: FM_ERR_NOMEM only. */
fm_status fm_tokenizer_encode(fm_tokenizer *tok, const uint8_t *text, size_t len,
                              fm_tokenizer_ids *out);

/* Decodes ids[0..n) into a malloc'ed buffer *text (length *len, plus a NUL not counted) that the
 * caller frees. eot_id decodes to "<|endoftext|>". An id >= vocab_size is FM_ERR_INPUT naming its
 * position. */
fm_status fm_tokenizer_decode(const fm_tokenizer *tok, const uint32_t *ids, size_t n, uint8_t **text,
                              size_t *len);

/* The byte string of one token (owned by tok; not NUL-terminated); NULL when id >= vocab_size. */
const uint8_t *fm_tokenizer_token(const fm_tokenizer *tok, uint32_t id, size_t *len);

/* ---- storage -------------------------------------------------------------------------------- */

/* Writes the tokenizer as group `name` (e.g. "tokenizer") under `loc` (a file or group id).
 * Works for serial files and for files opened with the MPI-IO driver: with MPI-IO it is
 * collective — every rank of the file's communicator must call it with identical tokenizers;
 * rank 0 writes the data (collective transfer), the others take part with empty selections.
 * Errors: FM_ERR_IO naming the group. */
fm_status fm_tokenizer_save(const fm_tokenizer *tok, hid_t loc, const char *name);

/* Reads group `name` under `loc` and validates it fully (kind, version, shapes, every merge refers
 * to earlier ids, token bytes equal the concatenation the merges imply). Damaged or foreign data is
 * FM_ERR_INPUT with a message that says what is wrong. Any rank may call it independently. */
fm_status fm_tokenizer_load(hid_t loc, const char *name, fm_tokenizer **out);

/* Same group as fm_tokenizer_load, but only reports whether `name` exists under `loc`. */
int fm_tokenizer_exists(hid_t loc, const char *name);

void fm_tokenizer_free(fm_tokenizer **tok);

#endif /* FM_TOKENIZER_H */
