/* tables.h — the data `fmtrain plan` reads: devices (datasheet figures), fmtrain measurements, and
 * sites, from the `*.plan` files of one directory (jobscripts/sites/ in the source tree, installed
 * to share/fmtrain/jobscripts/sites/), beside the sites' job scripts.
 *
 * Format (docs/plan.md has the full description): INI-like sections
 *     [device NAME]   one GPU, or one CPU node type
 *     [measured ID]   one fmtrain-bench (or fmtrain train) measurement: device, precision, date,
 *                     command, model shape, micro-batch, threads, ranks, tokens per second
 *     [peer ID]       the same for another program (PyTorch): printed for comparison, never used to
 *                     predict fmtrain
 *     [site NAME]     a system: its device, ranks per node, time limit, file-system bandwidth
 * and `key = value` lines. In [device] and [site] sections every value except `description`, `kind`
 * and `job_script` carries its provenance after the value: `; verified: SOURCE` (checked against SOURCE)
 * or `; unverified: WHY` — a value without one is an error, so nothing unmarked enters the tables.
 * A line that starts with white space continues the previous line's value or note. `#` starts a
 * comment line.
 *
 * What it is not: no arithmetic (plan/plan.h). The tables own every string; pointers into them stay
 * valid until fm_plan_tables_free.
 */
#ifndef FM_PLAN_TABLES_H
#define FM_PLAN_TABLES_H

#include <stdint.h>

#include "core/status.h"

#define FM_PLAN_NAME_MAX 64
#define FM_PLAN_VALUE_MAX 512
#define FM_PLAN_NOTE_MAX 1024

/* One `key = value ; verified|unverified: note` line. */
typedef struct fm_plan_entry {
    char key[FM_PLAN_NAME_MAX];
    char value[FM_PLAN_VALUE_MAX];
    int verified;                 /* 1 verified, 0 unverified, -1 no annotation (measurements) */
    char note[FM_PLAN_NOTE_MAX];  /* the source, or why it is unverified */
    int line;
} fm_plan_entry;

typedef struct fm_plan_section {
    char kind[16];                /* "device", "measured", "peer", "site" */
    char name[FM_PLAN_NAME_MAX];
    char file[512];
    int line;
    fm_plan_entry *entries;
    int n_entries;
} fm_plan_section;

/* A number of a section with its provenance (NULL entry: absent). */
typedef struct fm_plan_num {
    double v;                     /* 0 when absent */
    const fm_plan_entry *entry;   /* where it came from: verified flag and note */
} fm_plan_num;

typedef enum fm_plan_device_kind { FM_PLAN_GPU = 0, FM_PLAN_CPU = 1 } fm_plan_device_kind;

/* [device NAME]: a GPU, or a CPU node type. */
typedef struct fm_plan_device {
    const fm_plan_section *sec;
    const char *name;
    const char *description;
    fm_plan_device_kind kind;
    fm_plan_num memory_gib;       /* GPU: one GPU's memory; CPU: one node's */
    fm_plan_num cores;            /* CPU: cores per node */
    fm_plan_num peak_tflops[2];   /* [fm_plan_precision]: GPU per GPU, CPU per core (dense) */
    fm_plan_num memory_tbs;       /* memory bandwidth, TB/s (GPU per GPU) */
    const char *chip;             /* devices with the same chip share the peak ("" unknown) */
    fm_plan_num overhead_mib;     /* measured runtime memory beyond the model's formula, per rank */
    /* What `fmtrain train` adds to fmtrain-bench's step on this device, measured (docs/plan.md): */
    fm_plan_num trainer_overhead_ms;     /* per step and rank: reader, loss, metrics, bookkeeping */
    fm_plan_num allreduce_busbw_gbs;     /* the gradient all-reduce between the n ranks of ONE node:
                                            a step spends (n-1) x allreduce_latency_ms +
                                            2 (n-1)/n x gradient bytes / this */
    fm_plan_num allreduce_latency_ms;    /* (optional, with allreduce_busbw_gbs) */
    fm_plan_num allreduce_buffer_factor; /* memory per rank on > 1 rank: this x the gradient bytes */
} fm_plan_device;

/* [measured ID] or [peer ID]. */
typedef struct fm_plan_measurement {
    const fm_plan_section *sec;
    const char *id;
    int peer;                     /* [peer]: another program, for comparison only */
    const char *device;
    int precision;                /* fm_plan_precision */
    const char *date;             /* YYYY-MM-DD */
    const char *program;
    const char *command;
    const char *arch;
    int n_layer, n_head, n_kv_head, d_model, ffn_dim, vocab_size, tie; /* tie: 0 family, 1 yes, 2 no */
    int seq_len, micro_batch, threads, ranks;
    double tokens_per_s;
    const char *note;             /* load, spread of the runs ("" none) */
} fm_plan_measurement;

/* [site NAME]. */
typedef struct fm_plan_site {
    const fm_plan_section *sec;
    const char *name;
    const char *description;
    const char *device;           /* a [device] name */
    const fm_plan_entry *device_entry;
    fm_plan_num ranks_per_node;
    fm_plan_num cores_per_rank;   /* CPU sites */
    fm_plan_num node_memory_gib;
    fm_plan_num time_limit_hours;
    fm_plan_num max_nodes;
    fm_plan_num fs_write_gbs;     /* the file system's published aggregate write bandwidth, GB/s */
    fm_plan_num node_network_gbs; /* one node's network injection bandwidth, GB/s */
    const char *job_script;
} fm_plan_site;

typedef struct fm_plan_tables {
    char dir[4096];
    fm_plan_section *sections;
    int n_sections;
    fm_plan_device *devices;
    int n_devices;
    fm_plan_measurement *points;
    int n_points;
    fm_plan_site *sites;
    int n_sites;
} fm_plan_tables;

/* Reads every `*.plan` file of `dir` (in name order) into *out and checks it: known section kinds
 * and keys, numbers where numbers belong, the provenance of every device and site value, a device
 * for every site and measurement, unique names. Errors (FM_ERR_CONFIG) name the file, the line and
 * what was expected; a directory without .plan files or that cannot be read is FM_ERR_USAGE
 * (point --data at jobscripts/sites). Free with fm_plan_tables_free. */
fm_status fm_plan_tables_load(const char *dir, fm_plan_tables *out);
void fm_plan_tables_free(fm_plan_tables *t);

/* Lookups by exact name (NULL when absent). */
const fm_plan_device *fm_plan_find_device(const fm_plan_tables *t, const char *name);
const fm_plan_site *fm_plan_find_site(const fm_plan_tables *t, const char *name);

/* The device / site name closest to `name`, or NULL: for "did you mean". A device whose name is
 * `name` followed by '-' comes first ("H100" -> "H100-80"), then the edit distance (below 4);
 * kind: FM_PLAN_GPU, FM_PLAN_CPU or -1 for any. */
const char *fm_plan_closest_device(const fm_plan_tables *t, const char *name, int kind);
const char *fm_plan_closest_site(const fm_plan_tables *t, const char *name);

/* "verified" / "unverified" for an entry; "" for NULL or an entry without provenance. */
const char *fm_plan_provenance(const fm_plan_entry *e);

#endif /* FM_PLAN_TABLES_H */
