/* hf_tokenizer.h — fmtrain's byte-level BPE tokenizer <-> Hugging Face's tokenizer.json.
 *
 * What it is: the writer of tokenizer.json (+ tokenizer_config.json) that makes Hugging Face's
 * `tokenizers` encode any text to the ids fmtrain encodes it to, and the reader of a byte-level BPE
 * tokenizer.json (GPT-2's and Llama 3's kind) into an fmtrain tokenizer (data/tokenizer.h).
 * The mapping:
 *   - vocabulary: each ordinary token's bytes written through GPT-2's byte-to-character table (byte-level
 *     BPE strings: " the" is "Ġthe"); special tokens (end-of-text) are "added_tokens" with special = true,
 *     and also vocabulary entries under their text unless they are the last ids (tokenizers numbers an
 *     added token that is not in the vocabulary after it, whatever id the file gives);
 *   - merges: "left right" in rank order, as tokenizers writes them ([left, right] pairs are read too);
 *   - pre-tokenizer: fmtrain's rule and Llama 3's as a Sequence of Split(the rule's regular expression,
 *     Isolated) and ByteLevel(use_regex = false); GPT-2's as ByteLevel(use_regex = true); no normalizer;
 *     a ByteLevel decoder; ignore_merges when the tokenizer has it;
 *   - post-processor: a ByteLevel one (offsets only); when the tokenizer has a begin-of-text id
 *     (fm_tokenizer_bos_id: read from such a template, kept in the HDF5 tokenizer as bos_id) a Sequence of
 *     it and Llama 3's TemplateProcessing: single "BOS $A", pair "BOS $A BOS:1 $B:1", special_tokens
 *     {BOS: {id BOS, ids [its id], tokens [BOS]}}, so that encoding with add_special_tokens = True
 *     prepends BOS as the original tokenizer.json did. The reader understands exactly these shapes: no
 *     post-processor, ByteLevel, that TemplateProcessing (of any one special token), or a Sequence of
 *     them with at most one template; tokenizer_config.json's bos_token is BOS (else the end-of-text).
 *   Ids are identical to `fmtrain prepare`'s when tokenizers encodes with add_special_tokens = False
 *   and encode_special_tokens = True (text that spells a special token is ordinary text, as in fmtrain);
 *   tests/hf/test_tokenizer_json.py checks it on the King James text and other text.
 * The reader refuses, naming the field, what fmtrain would not encode identically: a normalizer, other
 * pre-tokenizers (or a ByteLevel with add_prefix_space), a Split regular expression that is not one of
 * fmtrain's rules (data/presplit.h), a non-BPE model, dropout, byte fallback, word prefixes/suffixes,
 * added tokens that are not special, ids with gaps, a vocabulary string that is not byte-level, and any
 * other post-processor (RobertaProcessing, BertProcessing, a template that appends tokens or has other
 * type ids: export could not write it back; the message says to remove it from a copy of the file).
 * The JSON is untrusted input: parsed by hf/json.h (bounds-checked, fuzzed: tests/hf/fuzz_tokenizer_json.c).
 */
#ifndef FM_HF_TOKENIZER_H
#define FM_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "data/tokenizer.h"

#define FM_HF_TOKENIZER_MAX_BYTES ((size_t)256 << 20) /* largest tokenizer.json read */

/* Writes <dir>/tokenizer.json and <dir>/tokenizer_config.json (model_max_length: the model's context).
 * Errors: a version-1 tokenizer (FM_ERR_USAGE: its pre-split cuts words at 256 bytes, which
 * tokenizer.json cannot express; re-run `fmtrain prepare` to make a version-2 tokenizer), a special
 * token that is not valid UTF-8, I/O. `log` (may be NULL) gets a line per file. */
fm_status fm_hf_export_tokenizer(const fm_tokenizer *tok, const char *dir, int model_max_length, FILE *log);

/* Parses tokenizer.json text (`what` names it in messages). The end-of-text id: `eot_id` when >= 0 (it
 * must be a special token), else the special token "<|endoftext|>" or "<|end_of_text|>", else the only
 * special token; otherwise FM_ERR_INPUT asking for one. */
fm_status fm_hf_parse_tokenizer(const char *json, size_t len, const char *what, int64_t eot_id,
                                fm_tokenizer **out);

/* Reads a tokenizer.json file (at most FM_HF_TOKENIZER_MAX_BYTES); when eot_id < 0 and
 * tokenizer_config.json lies beside it, its "eos_token" names the end-of-text token. */
fm_status fm_hf_read_tokenizer(const char *path, int64_t eot_id, fm_tokenizer **out);

#endif /* FM_HF_TOKENIZER_H */
