/* hf_model.h — a model in Hugging Face's layout: the weights (model.safetensors, or shards with
 * model.safetensors.index.json), config.json and generation_config.json, per model family.
 *
 * What it is: the mapping between fmtrain's parameter layout (model/model.h: the tensor table, whose
 * entries carry each tensor's Hugging Face name, shape and transposition from the family's specs) and
 * the files `transformers` reads, in both directions. Tensor names, shapes, transposes and the padded
 * vocabulary rows come from the table, so they are the same for every family; what is family-specific
 * — config.json's fields, which Hugging Face names are aliases or buffers to ignore, tied tensors —
 * is one row of the table in hf_model.c (GPT-2 today; a family without a row is refused by name).
 * What it is not: no tokenizer files (hf/hf_tokenizer.h), no checkpoint files (ckpt/), no MPI.
 *
 * Export writes, in `dir` (created if missing; existing files of these names are replaced atomically
 * one by one): the weights in `dtype` (float32 exactly; bf16/fp16 rounded to nearest even), one file
 * when they fit max_shard_bytes, else model-0000i-of-0000N.safetensors and the index; config.json;
 * generation_config.json. Import reads the same (a directory that transformers' save_pretrained made,
 * or fmtrain's export) into a DECODE model on the host backend given.
 */
#ifndef FM_HF_MODEL_H
#define FM_HF_MODEL_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "hf/safetensors.h"
#include "kernels.h"
#include "model/model.h"

#define FM_HF_DEFAULT_SHARD ((uint64_t)5000000000ull) /* 5 GB, transformers' default max_shard_size */

/* What export needs beyond the model. */
typedef struct fm_hf_export_opts {
    fm_st_dtype dtype;        /* FM_ST_F32, FM_ST_BF16 or FM_ST_F16 */
    uint64_t max_shard_bytes; /* > 0 */
    int64_t bos_id, eos_id;   /* the tokenizer's ids for config.json and generation_config.json, -1: none */
} fm_hf_export_opts;

/* The family names export/import support, "gpt2" (into buf, returned). */
const char *fm_hf_model_families(char *buf, size_t n);

/* Writes the model's weights and configuration files into dir (see above). `m` is any model whose
 * parameters can be read (fm_model_get_params). `log` (may be NULL) gets one line per file written.
 * Errors: a family without a Hugging Face mapping (FM_ERR_USAGE naming the supported ones), I/O. */
fm_status fm_hf_export_model(fm_model *m, const char *dir, const fm_hf_export_opts *opts, FILE *log);

/* What import found besides the weights. */
typedef struct fm_hf_import_info {
    int64_t bos_id, eos_id;   /* from config.json (-1 when absent) */
    char source_dtype[16];    /* dtype of the weights in the files ("F32", "BF16", "mixed") */
    int n_files;              /* safetensors files read */
    int n_ignored;            /* tensors in the files that are buffers or tied copies (not parameters) */
} fm_hf_import_info;

/* Reads the model in dir (config.json, then model.safetensors or model.safetensors.index.json and its
 * shards) into a new DECODE model for one sequence on backend `be`. Every parameter must be present
 * with the shape the configuration implies; tensors that are not parameters must be known buffers
 * (GPT-2's attn.bias / attn.masked_bias) or tied copies equal to their tensor (lm_head.weight = wte);
 * anything else is FM_ERR_INPUT naming the tensor. Names with or without the model prefix
 * ("transformer.") are accepted. Errors: FM_ERR_INPUT for missing files, a configuration fmtrain's
 * family does not compute exactly (each refusal names the field and the value it needs), damaged
 * files. */
fm_status fm_hf_import_model(const char *dir, fm_backend *be, fm_model **out, fm_hf_import_info *info);

#endif /* FM_HF_MODEL_H */
