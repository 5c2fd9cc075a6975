/* tokenizer.h — fmtrain's byte-level BPE tokenizer: training, encoding, decoding, HDF5 storage.
 *
 * What it is: a GPT-2-style byte-level byte-pair encoder. A tokenizer is a vocabulary of byte strings
 * (ids 0..vocab_size-1), the id of each single byte, an ordered list of merges (a, b) -> c, a set of
 * special tokens, an end-of-text id and a pre-split rule (data/presplit.h). Encoding pre-splits the
 * text into words, then, within each word (starting from its bytes' ids), repeatedly applies the merge
 * of lowest rank among adjacent pairs (the leftmost among equal ranks) — the algorithm of Hugging
 * Face's BPE model, with which results are identical (tests/hf). With `ignore_merges` (Llama 3's
 * tokenizers) a word that is itself a vocabulary entry is emitted as that id without merging.
 * Special tokens (end-of-text, Llama 3's <|begin_of_text|>, ...) decode to their text but encode never
 * produces them: text that spells one is encoded as ordinary text (as Hugging Face's tokenizers do
 * with encode_special_tokens = True).
 * A tokenizer may record a begin-of-text id (bos_id): the special token that Hugging Face's tokenizer
 * prepends to each sequence when it encodes with add_special_tokens = True (Llama 3's post-processor
 * template "<|begin_of_text|> $A"). fmtrain's encode never adds it (datasets hold documents separated by
 * end-of-text, nothing else); it is kept so that `fmtrain export` writes the template back
 * (hf/hf_tokenizer.h). Tokenizers fmtrain trains have none.
 * decode(encode(x)) == x for ANY byte string x (tested on random bytes and by a fuzzer).
 *
 * Tokenizers fmtrain trains (`fmtrain prepare --vocab-size N`):
 *   ids 0..255                  the 256 single bytes (so every byte sequence is encodable),
 *   ids 256..vocab_size-2       one per merge, in merge order (merge k makes id 256+k from two ids),
 *   id  vocab_size-1            the end-of-text token "<|endoftext|>" (eot_id, special) —
 *                               `fmtrain prepare` inserts it between documents;
 * pre-split rule FM_PRESPLIT_FMTRAIN (words of at most FM_TOKENIZER_MAX_WORD characters per run).
 * Tokenizers read from Hugging Face's tokenizer.json (hf/hf_tokenizer.h) may number their ids in any
 * order, have several merges that make the same token, and use GPT-2's or Llama 3's pre-split rule.
 *
 * Training (deterministic): words are counted; then repeatedly the most frequent adjacent pair of
 * ids (counted over words x their counts) is merged. Ties: the larger count wins; among equal counts
 * the pair with the smaller left id wins, then the smaller right id. A pair whose merged bytes are
 * already a token is never merged (each token's bytes are unique, as Hugging Face's vocabulary
 * requires). Pair counts are updated incrementally (only words containing the merged pair are
 * touched) with a lazy max-heap, so training cost is about proportional to the number of pair
 * occurrences changed, not merges x corpus. If the corpus runs out of pairs (every word is a single
 * token) before vocab_size is reached, training fails with FM_ERR_INPUT saying how many tokens it
 * supports.
 *
 * HDF5 layout of a stored tokenizer (a group, "/tokenizer" in datasets and checkpoints), version 2:
 *   attributes: kind = "byte-bpe" (string), version = 2 (int32), vocab_size (uint64),
 *               eot_id (uint64), n_merges (uint64), pre_split (string: "fmtrain", "gpt2", "llama3"),
 *               pre_split_regex (string: the rule's regular expression, informative),
 *               ignore_merges (int32: 0 or 1),
 *               bos_id (uint64, optional: only when the tokenizer has a begin-of-text id, a special token;
 *                       absent in files written before it existed, which read as "none")
 *   merges         uint32 (n_merges, 2)   merge k joins ids merges[k][0], merges[k][1] ...
 *   merge_ids      uint32 (n_merges)      ... into id merge_ids[k] (256+k for tokenizers fmtrain trains)
 *   byte_ids       uint32 (256)           the id of each single byte
 *   special_ids    uint32 (n_special)     the special tokens (eot_id among them)
 *   token_offsets  uint64 (vocab_size+1)  token id's bytes are token_bytes[off[id]:off[id+1]]
 *   token_bytes    uint8  (total)         all tokens' byte strings, concatenated
 * (token bytes are derivable from the merges but stored so that h5py alone can decode.)
 * Version 1 (fmtrain before tokenizer.json export; still read, and written back as version 1): no
 * pre_split, ignore_merges, merge_ids, byte_ids or special_ids — ids 0..255 are the bytes, merge k
 * makes 256+k, the last id is the special end-of-text, and the pre-split rule is
 * FM_PRESPLIT_FMTRAIN_V1 (words cut at 256 bytes).
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
#include "data/presplit.h"

#define FM_TOKENIZER_KIND "byte-bpe"
#define FM_TOKENIZER_VERSION 2
#define FM_TOKENIZER_MIN_VOCAB 257u        /* 256 bytes + end-of-text */
#define FM_TOKENIZER_MAX_VOCAB 16777216u   /* 2^24: far beyond any useful BPE vocabulary */
#define FM_TOKENIZER_EOT_TEXT "<|endoftext|>"
#define FM_TOKENIZER_MAX_WORD FM_PRESPLIT_MAX_RUN /* characters of one run in fmtrain's pre-split */

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

/* Length of the first word of text[0..len) by fmtrain's rule (FM_PRESPLIT_FMTRAIN; the text ends at
 * len) (>= 1 when len > 0). */
size_t fm_tokenizer_word_length(const uint8_t *text, size_t len);

/* Largest cut c <= len such that pre-splitting text[0..c) and text[c..) separately gives the same
 * words by fmtrain's rule as pre-splitting text[0..len+more) would, for any continuation (the end of
 * the last word that nothing after len can change); 0 when there is none. Streaming callers
 * feed/encode text[0..c) and keep the rest. */
size_t fm_tokenizer_safe_cut(const uint8_t *text, size_t len);

/* The same by the pre-split rule of `tok`. */
size_t fm_tokenizer_cut(const fm_tokenizer *tok, const uint8_t *text, size_t len);

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
uint32_t fm_tokenizer_eot_id(const fm_tokenizer *tok); /* vocab_size - 1 for tokenizers fmtrain trains */
fm_presplit fm_tokenizer_presplit(const fm_tokenizer *tok);
int fm_tokenizer_version(const fm_tokenizer *tok);       /* the HDF5 layout it is stored in: 1 or 2 */
int fm_tokenizer_ignore_merges(const fm_tokenizer *tok);
int64_t fm_tokenizer_bos_id(const fm_tokenizer *tok); /* the begin-of-text id (a special token); -1: none */
int fm_tokenizer_is_special(const fm_tokenizer *tok, uint32_t id); /* 0 for id >= vocab_size */
uint32_t fm_tokenizer_byte_id(const fm_tokenizer *tok, uint8_t byte);
uint32_t fm_tokenizer_n_merges(const fm_tokenizer *tok);
/* Merge k (0 <= k < n_merges): ids a and b make id c. */
void fm_tokenizer_merge(const fm_tokenizer *tok, uint32_t k, uint32_t *a, uint32_t *b, uint32_t *c);

/* A tokenizer described from outside (Hugging Face's tokenizer.json, hf/hf_tokenizer.h). Arrays are
 * read, not kept. */
typedef struct fm_tokenizer_spec {
    uint32_t vocab_size;
    const uint64_t *offsets;    /* (vocab_size + 1): token id's bytes are bytes[offsets[id]:offsets[id+1]] */
    const uint8_t *bytes;
    const uint8_t *special;     /* (vocab_size): 1 for a special token */
    uint32_t n_merges;
    const uint32_t *merges;     /* (n_merges, 3): left id, right id, result id, in rank order */
    uint32_t eot_id;            /* a special token */
    fm_presplit presplit;       /* not FM_PRESPLIT_FMTRAIN_V1 */
    int ignore_merges;
    int has_bos;                /* 1: bos_id is the begin-of-text id (a special token); 0: none */
    uint32_t bos_id;
} fm_tokenizer_spec;

/* Builds a tokenizer from a spec after checking it (FM_ERR_INPUT, naming the token or merge): every
 * single byte is exactly one non-special token; non-special tokens have distinct, non-empty bytes;
 * each merge joins two non-special tokens into the non-special token of their concatenated bytes and
 * no pair is merged twice; special tokens are non-empty; eot_id (and bos_id when has_bos) is special.
 * `what` names the source in messages. */
fm_status fm_tokenizer_from_spec(const fm_tokenizer_spec *spec, const char *what, fm_tokenizer **out);

/* Appends the ids of text[0..len) to `out` (grown as needed). The text is pre-split on its own (it
 * ends at len): encoding a long stream in pieces gives the same ids as encoding it whole when the
 * pieces are cut with fm_tokenizer_cut. Never produces a special token. Errors: FM_ERR_NOMEM only. */
fm_status fm_tokenizer_encode(fm_tokenizer *tok, const uint8_t *text, size_t len,
                              fm_tokenizer_ids *out);

/* Decodes ids[0..n) into a malloc'ed buffer *text (length *len, plus a NUL not counted) that the
 * caller frees. Special tokens decode to their text (eot_id of a trained tokenizer: "<|endoftext|>"). An id >= vocab_size is FM_ERR_INPUT naming its
 * position. */
fm_status fm_tokenizer_decode(const fm_tokenizer *tok, const uint32_t *ids, size_t n, uint8_t **text,
                              size_t *len);

/* The byte string of one token (owned by tok; not NUL-terminated); NULL when id >= vocab_size. */
const uint8_t *fm_tokenizer_token(const fm_tokenizer *tok, uint32_t id, size_t *len);

/* ---- storage -------------------------------------------------------------------------------- */

/* Writes the tokenizer as group `name` (e.g. "tokenizer") under `loc` (a file or group id), in the
 * layout of fm_tokenizer_version (a version-1 tokenizer stays version 1, so its rule is kept).
 * Works for serial files and for files opened with the MPI-IO driver: with MPI-IO it is
 * collective — every rank of the file's communicator must call it with identical tokenizers;
 * rank 0 writes the data (collective transfer), the others take part with empty selections.
 * Errors: FM_ERR_IO naming the group. */
fm_status fm_tokenizer_save(const fm_tokenizer *tok, hid_t loc, const char *name);

/* Reads group `name` under `loc` (version 1 or 2) and validates it fully (kind, version, shapes, the
 * rules of fm_tokenizer_from_spec; version 1: every merge refers to earlier ids, token bytes equal
 * the concatenation the merges imply). Damaged or foreign data is
 * FM_ERR_INPUT with a message that says what is wrong. Any rank may call it independently. */
fm_status fm_tokenizer_load(hid_t loc, const char *name, fm_tokenizer **out);

/* Same group as fm_tokenizer_load, but only reports whether `name` exists under `loc`. */
int fm_tokenizer_exists(hid_t loc, const char *name);

void fm_tokenizer_free(fm_tokenizer **tok);

#endif /* FM_TOKENIZER_H */
