/* tables.c — see tables.h. Reads the `*.plan` files of a directory: a line parser, one table of
 * known keys per section kind that drives the checks, then the typed views (devices, measurements,
 * sites) that point into the parsed sections. */
#define _POSIX_C_SOURCE 200809L
#include "plan/tables.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* ---- the keys of each section kind -------------------------------------------------------------- */

typedef enum { K_TEXT, K_NUM, K_INT } key_type;

typedef struct key_spec {
    const char *kind; /* section kind */
    const char *key;
    key_type type;
    int required;     /* 1: always; 2: devices of kind cpu / sites of a cpu device (checked later) */
} key_spec;

static const key_spec keys[] = {
    {"device", "description", K_TEXT, 1},
    {"device", "kind", K_TEXT, 1},
    {"device", "memory_gib", K_NUM, 1},
    {"device", "cores", K_INT, 2},
    {"device", "peak_tflops_fp32", K_NUM, 0},
    {"device", "peak_tflops_bf16", K_NUM, 0},
    {"device", "memory_tbs", K_NUM, 0},
    {"device", "chip", K_TEXT, 0},
    {"device", "runtime_overhead_mib", K_NUM, 0},
    {"device", "trainer_overhead_ms", K_NUM, 0},
    {"device", "allreduce_latency_ms", K_NUM, 0},
    {"device", "allreduce_busbw_gbs", K_NUM, 0},
    {"device", "allreduce_buffer_factor", K_NUM, 0},
    {"measured", "device", K_TEXT, 1},
    {"measured", "precision", K_TEXT, 1},
    {"measured", "date", K_TEXT, 1},
    {"measured", "program", K_TEXT, 1},
    {"measured", "command", K_TEXT, 1},
    {"measured", "arch", K_TEXT, 1},
    {"measured", "n_layer", K_INT, 1},
    {"measured", "n_head", K_INT, 1},
    {"measured", "n_kv_head", K_INT, 0},
    {"measured", "d_model", K_INT, 1},
    {"measured", "ffn_dim", K_INT, 0},
    {"measured", "vocab_size", K_INT, 1},
    {"measured", "tie_embeddings", K_TEXT, 0},
    {"measured", "seq_len", K_INT, 1},
    {"measured", "micro_batch", K_INT, 1},
    {"measured", "threads", K_INT, 1},
    {"measured", "ranks", K_INT, 1},
    {"measured", "tokens_per_s", K_NUM, 1},
    {"measured", "note", K_TEXT, 0},
    {"site", "description", K_TEXT, 1},
    {"site", "device", K_TEXT, 1},
    {"site", "ranks_per_node", K_INT, 1},
    {"site", "cores_per_rank", K_INT, 2},
    {"site", "node_memory_gib", K_NUM, 0},
    {"site", "time_limit_hours", K_NUM, 0},
    {"site", "max_nodes", K_INT, 0},
    {"site", "fs_write_gbs", K_NUM, 0},
    {"site", "node_network_gbs", K_NUM, 0},
    {"site", "job_script", K_TEXT, 0},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

/* [peer] sections take the keys of [measured]. */
static const char *spec_kind(const char *kind)
{
    return strcmp(kind, "peer") == 0 ? "measured" : kind;
}

static const key_spec *find_key(const char *kind, const char *key)
{
    kind = spec_kind(kind);
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].kind, kind) == 0 && strcmp(keys[i].key, key) == 0) return &keys[i];
    return NULL;
}

/* Whether values of this section kind must say where they come from. */
static int needs_provenance(const char *kind, const char *key)
{
    return (strcmp(kind, "device") == 0 || strcmp(kind, "site") == 0) &&
           strcmp(key, "description") != 0 && strcmp(key, "job_script") != 0 && strcmp(key, "kind") != 0;
}

/* ---- the line parser --------------------------------------------------------------------------- */

static fm_status add_section(fm_plan_tables *t, const char *file, int line, const char *kind,
                             const char *name)
{
    fm_plan_section *s = realloc(t->sections, sizeof *s * (size_t)(t->n_sections + 1));
    FM_CHECK_ALLOC(s, sizeof *s * (size_t)(t->n_sections + 1));
    t->sections = s;
    fm_plan_section *n = &t->sections[t->n_sections++];
    memset(n, 0, sizeof *n);
    fm_util_strlcpy(n->kind, kind, sizeof n->kind);
    fm_util_strlcpy(n->name, name, sizeof n->name);
    fm_util_strlcpy(n->file, file, sizeof n->file);
    n->line = line;
    return NULL;
}

static fm_status add_entry(fm_plan_section *s, fm_plan_entry **out)
{
    fm_plan_entry *e = realloc(s->entries, sizeof *e * (size_t)(s->n_entries + 1));
    FM_CHECK_ALLOC(e, sizeof *e * (size_t)(s->n_entries + 1));
    s->entries = e;
    *out = &s->entries[s->n_entries++];
    memset(*out, 0, sizeof **out);
    return NULL;
}

/* Appends " text" to dst (bounded); 1 when it did not fit. */
static int append(char *dst, size_t size, const char *text)
{
    size_t n = strlen(dst);
    if (n + 1 + strlen(text) + 1 > size) return 1;
    if (n > 0) dst[n++] = ' ';
    strcpy(dst + n, text);
    return 0;
}

/* Splits "value ; verified: note" at the annotation: *verified 1/0, or -1 when there is none. */
static void split_annotation(char *value, int *verified, char **note)
{
    *verified = -1;
    *note = NULL;
    for (char *p = strchr(value, ';'); p; p = strchr(p + 1, ';')) {
        char *q = p + 1;
        while (*q == ' ' || *q == '\t') q++;
        int v = strncmp(q, "verified:", 9) == 0 ? 1 : strncmp(q, "unverified:", 11) == 0 ? 0 : -1;
        if (v < 0) continue;
        *p = '\0';
        *verified = v;
        *note = fm_util_trim(q + (v ? 9 : 11));
        fm_util_trim(value);
        return;
    }
}

static fm_status parse_header(fm_plan_tables *t, const char *path, int ln, char *s)
{
    char *end = strchr(s, ']');
    if (!end || fm_util_trim(end + 1)[0] != '\0')
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: a section header is written [kind NAME], e.g. "
                                     "[device H100-80]; got '%s'", path, ln, s);
    *end = '\0';
    char *body = fm_util_trim(s + 1);
    char *sp = strpbrk(body, " \t");
    if (!sp)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: section [%s] has no name: write [device NAME], "
                                     "[measured ID], [peer ID] or [site NAME]", path, ln, body);
    *sp = '\0';
    char *name = fm_util_trim(sp + 1);
    if (strcmp(body, "device") && strcmp(body, "measured") && strcmp(body, "peer") &&
        strcmp(body, "site"))
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: unknown section kind '%s': expected device, measured, "
                                     "peer or site", path, ln, body);
    if (!name[0] || strlen(name) >= FM_PLAN_NAME_MAX || strpbrk(name, " \t"))
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: section name '%s' must be one word of at most %d "
                                     "characters", path, ln, name, FM_PLAN_NAME_MAX - 1);
    return add_section(t, path, ln, body, name);
}

static fm_status parse_value_line(fm_plan_tables *t, const char *path, int ln, char *s)
{
    if (t->n_sections == 0 || strcmp(t->sections[t->n_sections - 1].file, path) != 0)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: '%s' comes before any section header ([device NAME], "
                                     "[measured ID], [peer ID], [site NAME])", path, ln, s);
    fm_plan_section *sec = &t->sections[t->n_sections - 1];
    char *eq = strchr(s, '=');
    if (!eq)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: expected 'key = value', got '%s'", path, ln, s);
    *eq = '\0';
    char *key = fm_util_trim(s), *value = fm_util_trim(eq + 1);
    const key_spec *ks = find_key(sec->kind, key);
    if (!ks) {
        const char *best = NULL;
        int bestd = 4;
        for (int i = 0; i < NKEYS; i++) {
            if (strcmp(keys[i].kind, spec_kind(sec->kind)) != 0) continue;
            int d = fm_util_edit_distance(key, keys[i].key, 4);
            if (d < bestd) bestd = d, best = keys[i].key;
        }
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: unknown key '%s' in [%s %s]%s%s%s", path, ln, key,
                      sec->kind, sec->name, best ? " (did you mean '" : "", best ? best : "",
                      best ? "'?)" : "; docs/plan.md lists the keys");
    }
    for (int i = 0; i < sec->n_entries; i++)
        if (strcmp(sec->entries[i].key, key) == 0)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: key '%s' appears twice in [%s %s] (first on line %d)",
                          path, ln, key, sec->kind, sec->name, sec->entries[i].line);
    int verified;
    char *note;
    split_annotation(value, &verified, &note);
    fm_plan_entry *e = NULL;
    FM_TRY(add_entry(sec, &e));
    fm_util_strlcpy(e->key, key, sizeof e->key);
    if (strlen(value) >= sizeof e->value || (note && strlen(note) >= sizeof e->note))
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: the value of '%s' is longer than %d characters or its "
                                     "note longer than %d", path, ln, key, FM_PLAN_VALUE_MAX - 1,
                      FM_PLAN_NOTE_MAX - 1);
    fm_util_strlcpy(e->value, value, sizeof e->value);
    e->verified = verified;
    if (note) fm_util_strlcpy(e->note, note, sizeof e->note);
    e->line = ln;
    return NULL;
}

/* A line that starts with white space continues the previous value (or its note, once it has one). */
static fm_status parse_continuation(fm_plan_tables *t, const char *path, int ln, char *s)
{
    fm_plan_section *sec = t->n_sections ? &t->sections[t->n_sections - 1] : NULL;
    if (!sec || strcmp(sec->file, path) != 0 || sec->n_entries == 0)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: an indented line continues the previous 'key = value' "
                                     "line, and there is none", path, ln);
    fm_plan_entry *e = &sec->entries[sec->n_entries - 1];
    if (e->verified < 0) {
        /* the continuation may carry the annotation itself */
        char buf[FM_PLAN_VALUE_MAX];
        fm_util_strlcpy(buf, s, sizeof buf);
        int verified;
        char *note;
        if (s[0] == ';') {
            split_annotation(buf, &verified, &note);
            if (verified >= 0) {
                e->verified = verified;
                fm_util_strlcpy(e->note, note, sizeof e->note);
                return NULL;
            }
        }
        if (append(e->value, sizeof e->value, s))
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: the value of '%s' is longer than %d characters", path,
                          ln, e->key, FM_PLAN_VALUE_MAX - 1);
        return NULL;
    }
    if (append(e->note, sizeof e->note, s))
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: the note of '%s' is longer than %d characters", path, ln,
                      e->key, FM_PLAN_NOTE_MAX - 1);
    return NULL;
}

static fm_status parse_file(fm_plan_tables *t, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FM_TRY(fm_util_read_file(path, &text, &len));
    fm_status st = NULL;
    int ln = 0;
    /* line by line by hand: strtok_r would skip empty lines and lose the numbering */
    for (char *p = text; p && *p && !st; ln++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        char *line = p;
        p = nl ? nl + 1 : NULL;
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = '\0';
        char *lead = line;
        while (*lead == ' ' || *lead == '\t') lead++;
        if (*lead == '\0' || *lead == '#') continue;
        if (lead != line)
            st = parse_continuation(t, path, ln + 1, lead);
        else if (*line == '[')
            st = parse_header(t, path, ln + 1, line);
        else
            st = parse_value_line(t, path, ln + 1, line);
    }
    free(text);
    return st;
}

/* ---- typed views -------------------------------------------------------------------------------- */

static const fm_plan_entry *entry_of(const fm_plan_section *s, const char *key)
{
    for (int i = 0; i < s->n_entries; i++)
        if (strcmp(s->entries[i].key, key) == 0) return &s->entries[i];
    return NULL;
}

static const char *text_of(const fm_plan_section *s, const char *key)
{
    const fm_plan_entry *e = entry_of(s, key);
    return e ? e->value : "";
}

/* Checks every entry of a section against its key table: types, positivity, provenance. */
static fm_status check_section(const fm_plan_section *s)
{
    for (int i = 0; i < s->n_entries; i++) {
        const fm_plan_entry *e = &s->entries[i];
        const key_spec *ks = find_key(s->kind, e->key);
        if (needs_provenance(s->kind, e->key) && e->verified < 0)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: '%s = %s' in [%s %s] does not say where it comes "
                                         "from: end the line with '; verified: SOURCE' or "
                                         "'; unverified: WHY'", s->file, e->line, e->key, e->value,
                          s->kind, s->name);
        if (ks->type == K_TEXT) {
            if (!e->value[0])
                return FM_ERR(FM_ERR_CONFIG, "%s:%d: '%s' in [%s %s] is empty", s->file, e->line,
                              e->key, s->kind, s->name);
            continue;
        }
        char *end;
        errno = 0;
        double v = strtod(e->value, &end);
        if (errno || end == e->value || *end != '\0' || !isfinite(v) || v <= 0 ||
            (ks->type == K_INT && (v != floor(v) || v > 1e9)))
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: '%s' in [%s %s] must be a positive %s, got '%s'",
                          s->file, e->line, e->key, s->kind, s->name,
                          ks->type == K_INT ? "whole number" : "number", e->value);
    }
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].kind, spec_kind(s->kind)) == 0 && keys[i].required == 1 &&
            !entry_of(s, keys[i].key))
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [%s %s] has no '%s' (required)", s->file, s->line,
                          s->kind, s->name, keys[i].key);
    return NULL;
}

static fm_plan_num num_of(const fm_plan_section *s, const char *key)
{
    fm_plan_num n = {0.0, entry_of(s, key)};
    if (n.entry) n.v = strtod(n.entry->value, NULL);
    return n;
}

static int int_of(const fm_plan_section *s, const char *key)
{
    return (int)num_of(s, key).v;
}

static int precision_of(const char *text)
{
    return strcmp(text, "fp32") == 0 ? 0 : strcmp(text, "bf16") == 0 ? 1 : -1;
}

static fm_status make_device(const fm_plan_section *s, fm_plan_device *d)
{
    memset(d, 0, sizeof *d);
    d->sec = s;
    d->name = s->name;
    d->description = text_of(s, "description");
    const char *kind = text_of(s, "kind");
    if (strcmp(kind, "gpu") == 0)
        d->kind = FM_PLAN_GPU;
    else if (strcmp(kind, "cpu") == 0)
        d->kind = FM_PLAN_CPU;
    else
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: kind of [device %s] must be gpu or cpu, got '%s'", s->file,
                      entry_of(s, "kind")->line, s->name, kind);
    d->memory_gib = num_of(s, "memory_gib");
    d->cores = num_of(s, "cores");
    d->peak_tflops[0] = num_of(s, "peak_tflops_fp32");
    d->peak_tflops[1] = num_of(s, "peak_tflops_bf16");
    d->memory_tbs = num_of(s, "memory_tbs");
    d->chip = text_of(s, "chip");
    d->overhead_mib = num_of(s, "runtime_overhead_mib");
    d->trainer_overhead_ms = num_of(s, "trainer_overhead_ms");
    d->allreduce_latency_ms = num_of(s, "allreduce_latency_ms");
    d->allreduce_busbw_gbs = num_of(s, "allreduce_busbw_gbs");
    d->allreduce_buffer_factor = num_of(s, "allreduce_buffer_factor");
    if (d->kind == FM_PLAN_CPU && !d->cores.entry)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: [device %s] is a cpu node type and needs 'cores' (cores "
                                     "per node)", s->file, s->line, s->name);
    if (!d->peak_tflops[0].entry && !d->peak_tflops[1].entry)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: [device %s] has no peak: give peak_tflops_fp32 and/or "
                                     "peak_tflops_bf16", s->file, s->line, s->name);
    return NULL;
}

static fm_status make_point(const fm_plan_section *s, fm_plan_measurement *m)
{
    memset(m, 0, sizeof *m);
    m->sec = s;
    m->id = s->name;
    m->peer = strcmp(s->kind, "peer") == 0;
    m->device = text_of(s, "device");
    m->precision = precision_of(text_of(s, "precision"));
    if (m->precision < 0)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: precision of [%s %s] must be fp32 or bf16, got '%s'",
                      s->file, entry_of(s, "precision")->line, s->kind, s->name,
                      text_of(s, "precision"));
    m->date = text_of(s, "date");
    int date_ok = strlen(m->date) == 10 && m->date[4] == '-' && m->date[7] == '-';
    for (int i = 0; date_ok && i < 10; i++)
        if (i != 4 && i != 7 && (m->date[i] < '0' || m->date[i] > '9')) date_ok = 0;
    int mo = date_ok ? atoi(m->date + 5) : 0, da = date_ok ? atoi(m->date + 8) : 0;
    if (!date_ok || mo < 1 || mo > 12 || da < 1 || da > 31)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: date of [%s %s] must be YYYY-MM-DD, got '%s'", s->file,
                      entry_of(s, "date")->line, s->kind, s->name, m->date);
    m->program = text_of(s, "program");
    m->command = text_of(s, "command");
    m->arch = text_of(s, "arch");
    m->n_layer = int_of(s, "n_layer");
    m->n_head = int_of(s, "n_head");
    m->n_kv_head = int_of(s, "n_kv_head");
    m->d_model = int_of(s, "d_model");
    m->ffn_dim = int_of(s, "ffn_dim");
    m->vocab_size = int_of(s, "vocab_size");
    const char *tie = text_of(s, "tie_embeddings");
    m->tie = !tie[0] ? 0 : strcmp(tie, "true") == 0 ? 1 : strcmp(tie, "false") == 0 ? 2 : -1;
    if (m->tie < 0)
        return FM_ERR(FM_ERR_CONFIG, "%s:%d: tie_embeddings of [%s %s] must be true or false, got '%s'",
                      s->file, entry_of(s, "tie_embeddings")->line, s->kind, s->name, tie);
    m->seq_len = int_of(s, "seq_len");
    m->micro_batch = int_of(s, "micro_batch");
    m->threads = int_of(s, "threads");
    m->ranks = int_of(s, "ranks");
    m->tokens_per_s = num_of(s, "tokens_per_s").v;
    m->note = text_of(s, "note");
    return NULL;
}

static fm_status make_site(const fm_plan_section *s, fm_plan_site *site)
{
    memset(site, 0, sizeof *site);
    site->sec = s;
    site->name = s->name;
    site->description = text_of(s, "description");
    site->device = text_of(s, "device");
    site->device_entry = entry_of(s, "device");
    site->ranks_per_node = num_of(s, "ranks_per_node");
    site->cores_per_rank = num_of(s, "cores_per_rank");
    site->node_memory_gib = num_of(s, "node_memory_gib");
    site->time_limit_hours = num_of(s, "time_limit_hours");
    site->max_nodes = num_of(s, "max_nodes");
    site->fs_write_gbs = num_of(s, "fs_write_gbs");
    site->node_network_gbs = num_of(s, "node_network_gbs");
    site->job_script = text_of(s, "job_script");
    return NULL;
}

/* Views over the parsed sections, and the checks that need several sections. */
static fm_status build_views(fm_plan_tables *t)
{
    int nd = 0, np = 0, ns = 0;
    for (int i = 0; i < t->n_sections; i++) {
        const char *k = t->sections[i].kind;
        nd += strcmp(k, "device") == 0;
        np += strcmp(k, "measured") == 0 || strcmp(k, "peer") == 0;
        ns += strcmp(k, "site") == 0;
    }
    t->devices = calloc((size_t)nd + 1, sizeof *t->devices);
    t->points = calloc((size_t)np + 1, sizeof *t->points);
    t->sites = calloc((size_t)ns + 1, sizeof *t->sites);
    if (!t->devices || !t->points || !t->sites)
        return FM_ERR(FM_ERR_NOMEM, "out of memory reading the plan tables");
    for (int i = 0; i < t->n_sections; i++) {
        const fm_plan_section *s = &t->sections[i];
        FM_TRY(check_section(s));
        for (int j = 0; j < i; j++)
            if (strcmp(t->sections[j].name, s->name) == 0 &&
                strcmp(spec_kind(t->sections[j].kind), spec_kind(s->kind)) == 0)
                return FM_ERR(FM_ERR_CONFIG, "%s:%d: [%s %s] is defined twice (also %s:%d)", s->file,
                              s->line, s->kind, s->name, t->sections[j].file, t->sections[j].line);
        if (strcmp(s->kind, "device") == 0)
            FM_TRY(make_device(s, &t->devices[t->n_devices++]));
        else if (strcmp(s->kind, "site") == 0)
            FM_TRY(make_site(s, &t->sites[t->n_sites++]));
        else
            FM_TRY(make_point(s, &t->points[t->n_points++]));
    }
    for (int i = 0; i < t->n_points; i++) {
        const fm_plan_measurement *m = &t->points[i];
        const fm_plan_device *d = fm_plan_find_device(t, m->device);
        if (!d)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [%s %s] names device '%s', which no [device] section "
                                         "defines", m->sec->file, entry_of(m->sec, "device")->line,
                          m->sec->kind, m->id, m->device);
        if (!d->peak_tflops[m->precision].entry)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [%s %s] is a %s measurement on %s, whose [device] "
                                         "section has no peak_tflops_%s", m->sec->file, m->sec->line,
                          m->sec->kind, m->id, m->precision ? "bf16" : "fp32", m->device,
                          m->precision ? "bf16" : "fp32");
    }
    for (int i = 0; i < t->n_sites; i++) {
        const fm_plan_site *s = &t->sites[i];
        const fm_plan_device *d = fm_plan_find_device(t, s->device);
        if (!d)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [site %s] names device '%s', which no [device] section "
                                         "defines", s->sec->file, s->device_entry->line, s->name,
                          s->device);
        if (d->kind == FM_PLAN_CPU && !s->cores_per_rank.entry)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [site %s] runs on CPU nodes (%s) and needs "
                                         "'cores_per_rank' (the job script's --cpus-per-task)",
                          s->sec->file, s->sec->line, s->name, s->device);
        if (d->kind == FM_PLAN_CPU &&
            s->ranks_per_node.v * s->cores_per_rank.v > d->cores.v)
            return FM_ERR(FM_ERR_CONFIG, "%s:%d: [site %s]: ranks_per_node x cores_per_rank = %g x %g "
                                         "is more than the %g cores of a %s node", s->sec->file,
                          s->sec->line, s->name, s->ranks_per_node.v, s->cores_per_rank.v,
                          d->cores.v, d->name);
    }
    return NULL;
}

/* ---- loading ----------------------------------------------------------------------------------- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

fm_status fm_plan_tables_load(const char *dir, fm_plan_tables *out)
{
    memset(out, 0, sizeof *out);
    fm_util_strlcpy(out->dir, dir, sizeof out->dir);
    DIR *d = opendir(dir);
    if (!d)
        return FM_ERR(FM_ERR_USAGE, "cannot read the plan tables in %s: %s; give --data DIR with the "
                                    "directory of the .plan files (jobscripts/sites in the source "
                                    "tree, share/fmtrain/jobscripts/sites when installed)",
                      dir, strerror(errno));
    char **names = NULL;
    int n = 0;
    fm_status st = NULL;
    for (struct dirent *e = readdir(d); e && !st; e = readdir(d)) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".plan") != 0 || e->d_name[0] == '.') continue;
        char **nn = realloc(names, sizeof *nn * (size_t)(n + 1));
        char *copy = strdup(e->d_name);
        if (!nn || !copy) {
            free(copy);
            if (nn) names = nn;
            st = FM_ERR(FM_ERR_NOMEM, "out of memory listing %s", dir);
            break;
        }
        names = nn;
        names[n++] = copy;
    }
    closedir(d);
    if (!st && n == 0)
        st = FM_ERR(FM_ERR_USAGE, "%s holds no .plan files; give --data DIR with the directory of "
                                  "the .plan files (jobscripts/sites in the source tree, "
                                  "share/fmtrain/jobscripts/sites when installed)", dir);
    if (!st) qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n && !st; i++) {
        char path[4700];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        st = parse_file(out, path);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!st) st = build_views(out);
    if (st) fm_plan_tables_free(out);
    return st;
}

void fm_plan_tables_free(fm_plan_tables *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_sections; i++) free(t->sections[i].entries);
    free(t->sections);
    free(t->devices);
    free(t->points);
    free(t->sites);
    memset(t, 0, sizeof *t);
}

const fm_plan_device *fm_plan_find_device(const fm_plan_tables *t, const char *name)
{
    for (int i = 0; i < t->n_devices; i++)
        if (strcmp(t->devices[i].name, name) == 0) return &t->devices[i];
    return NULL;
}

const fm_plan_site *fm_plan_find_site(const fm_plan_tables *t, const char *name)
{
    for (int i = 0; i < t->n_sites; i++)
        if (strcmp(t->sites[i].name, name) == 0) return &t->sites[i];
    return NULL;
}

const char *fm_plan_closest_device(const fm_plan_tables *t, const char *name, int kind)
{
    const char *best = NULL;
    int bestd = 4;
    /* "H100" means one of the H100-... entries before it means the H200 */
    for (int i = 0; i < t->n_devices; i++)
        if ((kind < 0 || (int)t->devices[i].kind == kind) &&
            strncmp(t->devices[i].name, name, strlen(name)) == 0 && t->devices[i].name[strlen(name)] == '-')
            return t->devices[i].name;
    for (int i = 0; i < t->n_devices; i++) {
        if (kind >= 0 && (int)t->devices[i].kind != kind) continue;
        int d = fm_util_edit_distance(name, t->devices[i].name, 4);
        if (d < bestd) bestd = d, best = t->devices[i].name;
    }
    return best;
}

const char *fm_plan_closest_site(const fm_plan_tables *t, const char *name)
{
    const char *best = NULL;
    int bestd = 4;
    for (int i = 0; i < t->n_sites; i++) {
        int d = fm_util_edit_distance(name, t->sites[i].name, 4);
        if (d < bestd) bestd = d, best = t->sites[i].name;
    }
    return best;
}

const char *fm_plan_provenance(const fm_plan_entry *e)
{
    if (!e || e->verified < 0) return "";
    return e->verified ? "verified" : "unverified";
}
