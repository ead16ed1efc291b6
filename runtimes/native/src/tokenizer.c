/* Native WordPiece tokenisation of a Hugging Face tokenizer.json (see tokenizer.h for the contract).
 * Mirrors the `tokenizers` pipeline: split on added tokens (raw text), BertNormalizer,
 * BertPreTokenizer, WordPiece, truncation (tokenizers' truncate_encodings), post processor. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"

/* ---- a small open-addressing string -> id table (FNV-1a, linear probing) ---- */
typedef struct { char *key; size_t len; int64_t id; } slot;
typedef struct { slot *slots; size_t cap; } table;

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}
static int table_init(table *t, size_t n) {
    t->cap = 16;
    while (t->cap < n * 2 + 1) t->cap <<= 1;
    t->slots = calloc(t->cap, sizeof(slot));
    return t->slots ? 0 : -1;
}
static int table_put(table *t, const char *k, int64_t id) {
    size_t n = strlen(k), i = fnv(k, n) & (t->cap - 1);
    while (t->slots[i].key) {
        if (t->slots[i].len == n && memcmp(t->slots[i].key, k, n) == 0) { t->slots[i].id = id; return 0; }
        i = (i + 1) & (t->cap - 1);
    }
    t->slots[i].key = malloc(n + 1);
    if (!t->slots[i].key) return -1;
    memcpy(t->slots[i].key, k, n + 1);
    t->slots[i].len = n;
    t->slots[i].id = id;
    return 0;
}
static int64_t table_get(const table *t, const char *k, size_t n) {
    size_t i = fnv(k, n) & (t->cap - 1);
    while (t->slots[i].key) {
        if (t->slots[i].len == n && memcmp(t->slots[i].key, k, n) == 0) return t->slots[i].id;
        i = (i + 1) & (t->cap - 1);
    }
    return -1;
}
static void table_free(table *t) {
    for (size_t i = 0; t->slots && i < t->cap; i++) free(t->slots[i].key);
    free(t->slots);
}

/* ---- growable arrays ---- */
typedef struct { int64_t *v; int64_t *t; size_t n, cap; } ids_t;
static int ids_push(ids_t *a, int64_t id, int64_t type) {
    if (a->n == a->cap) {
        size_t c = a->cap ? a->cap * 2 : 32;
        int64_t *v = realloc(a->v, c * sizeof *v);
        if (!v) return -1;
        a->v = v;
        int64_t *t = realloc(a->t, c * sizeof *t);
        if (!t) return -1;
        a->t = t;
        a->cap = c;
    }
    a->v[a->n] = id;
    a->t[a->n++] = type;
    return 0;
}
typedef struct { int32_t *v; size_t n, cap; } cps_t;
static int cps_push(cps_t *a, int32_t c) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = c;
    return 0;
}

/* ---- the tokenizer ---- */
typedef struct { char *text; size_t len; int64_t id; } added_t;
/* A template piece: a sequence (seq 0 = A, 1 = B) or special token ids, with its type id. */
typedef struct { int is_seq; int seq; int64_t *ids; size_t n_ids; int64_t type_id; } piece_t;

struct ek_tokenizer {
    table vocab;
    int64_t unk_id;
    char *prefix;
    size_t max_chars;
    int has_normalizer, clean_text, chinese, strip_accents, lowercase;
    added_t *added;
    size_t n_added;
    piece_t *single, *pair;
    size_t n_single, n_pair;
    size_t vocab_size;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int oom_load(void) { return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer"); }

static int unsupported(const char *what, const char *name) {
    return ek_fail(EK_ERR_UNSUPPORTED,
                   "tokenizer %s %s is not implemented natively; tokenize in the host app and call ek_rank_ids",
                   what, name);
}

static const char *type_of(const cJSON *obj) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : "unknown";
}

static int get_bool(const cJSON *obj, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* Parse a TemplateProcessing "single"/"pair" list. */
static int parse_template(const cJSON *tmpl, const cJSON *specials, piece_t **out, size_t *n_out) {
    if (!cJSON_IsArray(tmpl)) return unsupported("post_processor template", "(not a list)");
    size_t n = (size_t)cJSON_GetArraySize(tmpl), i = 0;
    piece_t *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return oom_load();
    *out = p;
    *n_out = n;
    const cJSON *item;
    cJSON_ArrayForEach(item, tmpl) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(item, "Sequence");
        const cJSON *body = seq ? seq : cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
        const cJSON *type_id = cJSON_GetObjectItemCaseSensitive(body, "type_id");
        if (!body || !cJSON_IsString(id)) return unsupported("post_processor template piece", "(malformed)");
        p[i].type_id = cJSON_IsNumber(type_id) ? (int64_t)type_id->valuedouble : 0;
        if (seq) {
            p[i].is_seq = 1;
            p[i].seq = strcmp(id->valuestring, "B") == 0;
        } else {
            const cJSON *entry = cJSON_GetObjectItemCaseSensitive(specials, id->valuestring);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(entry, "ids");
            if (!cJSON_IsArray(ids)) return unsupported("post_processor special token without ids:", id->valuestring);
            size_t m = (size_t)cJSON_GetArraySize(ids), j = 0;
            p[i].ids = calloc(m ? m : 1, sizeof(int64_t));
            if (!p[i].ids) return oom_load();
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) p[i].ids[j++] = (int64_t)x->valuedouble;
            p[i].n_ids = m;
        }
        i++;
    }
    return EK_OK;
}

/* BertProcessing {"sep": [tok, id], "cls": [tok, id]}: single CLS A SEP, pair CLS A SEP B SEP
 * (B and its SEP with type id 1). */
static int bert_template(const cJSON *pp, ek_tokenizer *t) {
    const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep"), *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
    if (cJSON_GetArraySize(sep) != 2 || cJSON_GetArraySize(cls) != 2) return unsupported("post_processor", "BertProcessing (malformed)");
    int64_t s = (int64_t)cJSON_GetArrayItem(sep, 1)->valuedouble, c = (int64_t)cJSON_GetArrayItem(cls, 1)->valuedouble;
    int64_t special[5] = {c, -1, s, -1, s}, types[5] = {0, 0, 0, 1, 1};
    t->single = calloc(3, sizeof(piece_t));
    t->pair = calloc(5, sizeof(piece_t));
    if (!t->single || !t->pair) return oom_load();
    t->n_single = 3;
    t->n_pair = 5;
    for (int k = 0; k < 5; k++) {
        for (int which = 0; which < (k < 3 ? 2 : 1); which++) {
            piece_t *p = which ? &t->single[k] : &t->pair[k];
            p->type_id = which ? 0 : types[k];
            if (special[k] < 0) { p->is_seq = 1; p->seq = k == 3; continue; }
            p->ids = malloc(sizeof(int64_t));
            if (!p->ids) return oom_load();
            p->ids[0] = special[k];
            p->n_ids = 1;
        }
    }
    return EK_OK;
}

static int load_json(const cJSON *root, ek_tokenizer *t) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return unsupported("model", "(missing)");
    const char *mtype = type_of(model);
    if (strcmp(mtype, "WordPiece") != 0) return unsupported("model", mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return unsupported("model", "WordPiece without a vocab");
    if (table_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab))) return oom_load();
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int64_t id = (int64_t)e->valuedouble;
        if (table_put(&t->vocab, e->string, id)) return oom_load();
        if ((size_t)id + 1 > t->vocab_size) t->vocab_size = (size_t)id + 1;
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const char *unk_s = cJSON_IsString(unk) ? unk->valuestring : "[UNK]";
    t->unk_id = table_get(&t->vocab, unk_s, strlen(unk_s));
    if (t->unk_id < 0) return unsupported("model", "WordPiece whose unk_token is not in the vocab");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    t->prefix = dup_str(cJSON_IsString(pre) ? pre->valuestring : "##");
    if (!t->prefix) return oom_load();
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    t->max_chars = cJSON_IsNumber(mx) ? (size_t)mx->valuedouble : 100;

    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        if (strcmp(type_of(norm), "BertNormalizer") != 0) return unsupported("normalizer", type_of(norm));
        t->has_normalizer = 1;
        t->clean_text = get_bool(norm, "clean_text", 1);
        t->chinese = get_bool(norm, "handle_chinese_chars", 1);
        t->lowercase = get_bool(norm, "lowercase", 1);
        t->strip_accents = get_bool(norm, "strip_accents", t->lowercase);
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!pt || cJSON_IsNull(pt)) return unsupported("pre_tokenizer", "none");
    if (strcmp(type_of(pt), "BertPreTokenizer") != 0) return unsupported("pre_tokenizer", type_of(pt));

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    size_t na = (size_t)cJSON_GetArraySize(added);
    t->added = calloc(na ? na : 1, sizeof(added_t));
    if (!t->added) return oom_load();
    cJSON_ArrayForEach(e, added) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsString(content) || !cJSON_IsNumber(id) || !content->valuestring[0]) continue;
        if ((size_t)id->valuedouble + 1 > t->vocab_size) t->vocab_size = (size_t)id->valuedouble + 1;
        if (get_bool(e, "normalized", 0) || get_bool(e, "lstrip", 0) || get_bool(e, "rstrip", 0) ||
            get_bool(e, "single_word", 0))
            return unsupported("added token with normalized/lstrip/rstrip/single_word:", content->valuestring);
        added_t *a = &t->added[t->n_added++];
        a->text = dup_str(content->valuestring);
        if (!a->text) return oom_load();
        a->len = strlen(a->text);
        a->id = (int64_t)id->valuedouble;
    }

    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!pp || cJSON_IsNull(pp)) return unsupported("post_processor", "none");
    if (strcmp(type_of(pp), "BertProcessing") == 0) return bert_template(pp, t);
    if (strcmp(type_of(pp), "TemplateProcessing") != 0) return unsupported("post_processor", type_of(pp));
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    int rc = parse_template(cJSON_GetObjectItemCaseSensitive(pp, "single"), specials, &t->single, &t->n_single);
    return rc ? rc : parse_template(cJSON_GetObjectItemCaseSensitive(pp, "pair"), specials, &t->pair, &t->n_pair);
}

int ek_tokenizer_load(const char *path, ek_tokenizer **out) {
    if (!path || !out) return ek_fail(EK_ERR_ARGUMENT, "ek_tokenizer_load: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ek_fail(EK_ERR_INTEGRITY, "cannot open tokenizer %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (!buf) { fclose(f); return ek_fail(EK_ERR_MEMORY, "out of memory reading %s", path); }
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    buf[got] = 0;
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    if (!root) return ek_fail(EK_ERR_INTEGRITY, "tokenizer %s is not valid JSON", path);
    ek_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { cJSON_Delete(root); return oom_load(); }
    int rc = load_json(root, t);
    cJSON_Delete(root);
    if (rc) { ek_tokenizer_free(t); return rc; }
    *out = t;
    return EK_OK;
}

size_t ek_tokenizer_vocab_size(const ek_tokenizer *t) { return t ? t->vocab_size : 0; }

static void free_pieces(piece_t *p, size_t n) {
    for (size_t i = 0; p && i < n; i++) free(p[i].ids);
    free(p);
}

void ek_tokenizer_free(ek_tokenizer *t) {
    if (!t) return;
    table_free(&t->vocab);
    free(t->prefix);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].text);
    free(t->added);
    free_pieces(t->single, t->n_single);
    free_pieces(t->pair, t->n_pair);
    free(t);
}

void ek_encoding_free(ek_encoding *e) {
    if (!e) return;
    free(e->ids);
    free(e->type_ids);
    e->ids = e->type_ids = NULL;
    e->length = 0;
}

/* ---- BertNormalizer ---- */
/* tokenizers classifies punctuation and nonspacing marks with an older Unicode version than
 * utf8proc's (also for control/format characters). These ranges are where its answer differs from utf8proc (libutf8proc 2.x, Unicode 15):
 * code points assigned later, and three recategorised ones. They were found by comparing, for every
 * code point, tokenizers' BertPreTokenizer (split around it?), clean_text and strip_accents (dropped?) with
 * utf8proc_category; they are facts about tokenizers' behaviour, not copied code. */
static const int32_t hf_not_punct_ranges[][2] = {{0x61D, 0x61D}, {0x9FD, 0x9FD}, {0xA76, 0xA76}, {0xC77,
    0xC77}, {0xC84, 0xC84}, {0x1B7D, 0x1B7E}, {0x2E43, 0x2E4F}, {0x2E52, 0x2E5D}, {0x10EAD, 0x10EAD},
    {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x1144B, 0x1144F}, {0x1145A, 0x1145B}, {0x1145D, 0x1145D},
    {0x11660, 0x1166C}, {0x116B9, 0x116B9}, {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2},
    {0x11A3F, 0x11A46}, {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C41, 0x11C45},
    {0x11C70, 0x11C71}, {0x11EF7, 0x11EF8}, {0x11F43, 0x11F4F}, {0x11FFF, 0x11FFF}, {0x12FF1, 0x12FF2},
    {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F}};
static const int32_t hf_punct_ranges[][2] = {{0x166D, 0x166D}, {0x111C9, 0x111C9}};
static const int32_t hf_not_mn_ranges[][2] = {{0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8E1}, {0x9FE, 0x9FE},
    {0xAFA, 0xAFF}, {0xB55, 0xB55}, {0xC04, 0xC04}, {0xC3C, 0xC3C}, {0xD00, 0xD00}, {0xD3B, 0xD3C}, {0xD81,
    0xD81}, {0xEBA, 0xEBA}, {0xECE, 0xECE}, {0x180F, 0x180F}, {0x1885, 0x1886}, {0x1ABF, 0x1ACE}, {0x1DF6,
    0x1DFB}, {0xA82C, 0xA82C}, {0xA8C5, 0xA8C5}, {0xA8FF, 0xA8FF}, {0xA9BD, 0xA9BD}, {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070},
    {0x11073, 0x11074}, {0x110C2, 0x110C2}, {0x111C9, 0x111C9}, {0x111CF, 0x111CF}, {0x1123E, 0x1123E},
    {0x11241, 0x11241}, {0x1133B, 0x1133B}, {0x11438, 0x1143F}, {0x11442, 0x11444}, {0x11446, 0x11446},
    {0x1145E, 0x1145E}, {0x1182F, 0x11837}, {0x11839, 0x1183A}, {0x1193B, 0x1193C}, {0x1193E, 0x1193E},
    {0x11943, 0x11943}, {0x119D4, 0x119D7}, {0x119DA, 0x119DB}, {0x119E0, 0x119E0}, {0x11A01, 0x11A0A},
    {0x11A33, 0x11A38}, {0x11A3B, 0x11A3E}, {0x11A47, 0x11A47}, {0x11A51, 0x11A56}, {0x11A59, 0x11A5B},
    {0x11A8A, 0x11A96}, {0x11A98, 0x11A99}, {0x11C30, 0x11C36}, {0x11C38, 0x11C3D}, {0x11C3F, 0x11C3F},
    {0x11C92, 0x11CA7}, {0x11CAA, 0x11CB0}, {0x11CB2, 0x11CB3}, {0x11CB5, 0x11CB6}, {0x11D31, 0x11D36},
    {0x11D3A, 0x11D3A}, {0x11D3C, 0x11D3D}, {0x11D3F, 0x11D45}, {0x11D47, 0x11D47}, {0x11D90, 0x11D91},
    {0x11D95, 0x11D95}, {0x11D97, 0x11D97}, {0x11EF3, 0x11EF4}, {0x11F00, 0x11F01}, {0x11F36, 0x11F3A},
    {0x11F40, 0x11F40}, {0x11F42, 0x11F42}, {0x13440, 0x13440}, {0x13447, 0x13455}, {0x16F4F, 0x16F4F},
    {0x16FE4, 0x16FE4}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46}, {0x1E000, 0x1E006}, {0x1E008, 0x1E018},
    {0x1E01B, 0x1E021}, {0x1E023, 0x1E024}, {0x1E026, 0x1E02A}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136},
    {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1E944, 0x1E94A}};
static const int32_t hf_not_other_ranges[][2] = {{0x890, 0x891}, {0x8E2, 0x8E2}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}};
static const int32_t hf_mn_ranges[][2] = {{0x1734, 0x1734}};

static int in_ranges(int32_t c, const int32_t (*r)[2], size_t n) {
    for (size_t i = 0; i < n; i++)
        if (c >= r[i][0] && c <= r[i][1]) return 1;
    return 0;
}
#define IN(c, table) in_ranges((c), (table), sizeof(table) / sizeof((table)[0]))

/* A nonspacing mark for strip_accents, as tokenizers' tables say. */
static int is_mn(int32_t c) {
    if (c < 0x300) return 0;
    if (IN(c, hf_mn_ranges)) return 1;
    return utf8proc_category(c) == UTF8PROC_CATEGORY_MN && !IN(c, hf_not_mn_ranges);
}
/* Rust's char::is_whitespace (Unicode White_Space). */
static int is_rust_whitespace(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
/* tokenizers' is_control (besides \t \n \r): Cc, Cf, Cs, Co; unassigned (Cn) code points are kept,
 * as tokenizers keeps them (they become [UNK]). */
static int is_other(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return (k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
            k == UTF8PROC_CATEGORY_CO) && !IN(c, hf_not_other_ranges);
}
/* tokenizers' is_chinese_char ranges. */
static int is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
/* tokenizers' is_bert_punc: ASCII punctuation or Unicode P*. */
static int is_punct(int32_t c) {
    if (c < 0x80)
        return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
    if (IN(c, hf_punct_ranges)) return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO && !IN(c, hf_not_punct_ranges);
}

/* Decode validated UTF-8 [s, s+n) into normalised code points appended to `out`. */
static int normalize(const ek_tokenizer *t, const char *s, size_t n, cps_t *out) {
    cps_t a = {0};
    const uint8_t *p = (const uint8_t *)s;
    int norm = t->has_normalizer;
    for (size_t i = 0; i < n;) {
        int32_t c;
        i += (size_t)utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &c);
        if (norm && t->clean_text) {
            if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && is_other(c))) continue;
            if (is_rust_whitespace(c)) c = ' ';
        }
        if (norm && t->chinese && is_chinese(c)) {
            if (cps_push(&a, ' ') || cps_push(&a, c) || cps_push(&a, ' ')) goto oom;
        } else if (cps_push(&a, c)) goto oom;
    }
    if (norm && t->strip_accents && a.n) { /* NFD of the whole text, then drop nonspacing marks */
        size_t m = 0;
        uint8_t *u = malloc(a.n * 4 + 1);
        if (!u) goto oom;
        for (size_t j = 0; j < a.n; j++) m += (size_t)utf8proc_encode_char(a.v[j], u + m);
        utf8proc_uint8_t *d = NULL;
        utf8proc_ssize_t dn = utf8proc_map(u, (utf8proc_ssize_t)m, &d, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        free(u);
        if (dn < 0) { free(a.v); return ek_fail(EK_ERR_ARGUMENT, "text cannot be normalised: %s", utf8proc_errmsg(dn)); }
        a.n = 0;
        for (utf8proc_ssize_t j = 0; j < dn;) {
            int32_t c;
            j += utf8proc_iterate(d + j, dn - j, &c);
            if (is_mn(c)) continue;
            if (cps_push(&a, c)) { free(d); goto oom; }
        }
        free(d);
    }
    for (size_t j = 0; j < a.n; j++) {
        int32_t c = a.v[j];
        if (norm && t->lowercase && c == 0x130) { /* Rust: 'İ'.to_lowercase() == "i\u{307}" */
            if (cps_push(out, 'i') || cps_push(out, 0x307)) goto oom;
            continue;
        }
        if (cps_push(out, norm && t->lowercase ? utf8proc_tolower(c) : c)) goto oom;
    }
    free(a.v);
    return EK_OK;
oom:
    free(a.v);
    return ek_fail(EK_ERR_MEMORY, "out of memory tokenizing");
}

/* ---- WordPiece over one word w[0..n); buf and scratch hold 4n + prefix bytes, offs n + 1 ---- */
static int wordpiece(const ek_tokenizer *t, const int32_t *w, size_t n, ids_t *out, char *buf, char *scratch,
                     size_t *offs) {
    if (n > t->max_chars) return ids_push(out, t->unk_id, 0);
    size_t plen = strlen(t->prefix), m = 0;
    for (size_t k = 0; k < n; k++) { offs[k] = m; m += (size_t)utf8proc_encode_char(w[k], (uint8_t *)buf + m); }
    offs[n] = m;
    memcpy(scratch, t->prefix, plen);
    size_t mark = out->n, start = 0;
    while (start < n) {
        size_t end = n;
        int64_t found = -1;
        for (; end > start; end--) {
            size_t len = offs[end] - offs[start];
            if (start == 0) found = table_get(&t->vocab, buf, len);
            else {
                memcpy(scratch + plen, buf + offs[start], len);
                found = table_get(&t->vocab, scratch, plen + len);
            }
            if (found >= 0) break;
        }
        if (found < 0) { out->n = mark; return ids_push(out, t->unk_id, 0); }
        if (ids_push(out, found, 0)) return -1;
        start = end;
    }
    return 0;
}

/* Normalise, pre-tokenise (BertPreTokenizer) and WordPiece the raw bytes [s, s+n). */
static int encode_segment(const ek_tokenizer *t, const char *s, size_t n, ids_t *out) {
    cps_t a = {0};
    int rc = normalize(t, s, n, &a);
    if (rc) return rc;
    size_t plen = strlen(t->prefix);
    char *buf = malloc(a.n * 4 + plen + 1), *scratch = malloc(a.n * 4 + plen + 1);
    size_t *offs = malloc((a.n + 1) * sizeof *offs);
    if (!buf || !scratch || !offs) { rc = ek_fail(EK_ERR_MEMORY, "out of memory tokenizing"); goto done; }
    for (size_t i = 0; i < a.n;) {
        if (is_rust_whitespace(a.v[i])) { i++; continue; }
        size_t j = i + 1;
        if (!is_punct(a.v[i]))
            while (j < a.n && !is_rust_whitespace(a.v[j]) && !is_punct(a.v[j])) j++;
        if (wordpiece(t, a.v + i, j - i, out, buf, scratch, offs)) { rc = ek_fail(EK_ERR_MEMORY, "out of memory tokenizing"); goto done; }
        i = j;
    }
done:
    free(a.v);
    free(buf);
    free(scratch);
    free(offs);
    return rc;
}

/* One sequence: split on added tokens (leftmost, then longest) in the raw text, encode the rest. */
static int encode_text(const ek_tokenizer *t, const char *s, ids_t *out) {
    size_t n = strlen(s), seg = 0, i = 0;
    while (i < n) {
        const added_t *best = NULL;
        for (size_t k = 0; k < t->n_added; k++) {
            const added_t *a = &t->added[k];
            if (a->len <= n - i && memcmp(s + i, a->text, a->len) == 0 && (!best || a->len > best->len)) best = a;
        }
        if (!best) { i++; continue; }
        int rc = encode_segment(t, s + seg, i - seg, out);
        if (rc) return rc;
        if (ids_push(out, best->id, 0)) return ek_fail(EK_ERR_MEMORY, "out of memory tokenizing");
        i += best->len;
        seg = i;
    }
    return encode_segment(t, s + seg, n - seg, out);
}

static int check_utf8(const char *s, const char *which) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &c);
        if (k < 0) return ek_fail(EK_ERR_ARGUMENT, "text %s is not valid UTF-8 (at byte %zu)", which, i);
        i += (size_t)k;
    }
    return EK_OK;
}

static size_t n_special(const piece_t *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (!p[i].is_seq) c += p[i].n_ids;
    return c;
}

/* tokenizers' truncate_encodings on lengths: `max` excludes the special tokens; updates the two lengths. */
static int truncate_lengths(size_t *na, size_t *nb, int pair, size_t max, const char *strategy) {
    if (max == 0) { *na = 0; *nb = 0; return EK_OK; }
    size_t total = *na + (pair ? *nb : 0);
    int longest = strcmp(strategy, "longest_first") == 0, first = strcmp(strategy, "only_first") == 0;
    if (!longest && !first && strcmp(strategy, "only_second") != 0)
        return ek_fail(EK_ERR_ARGUMENT, "unknown truncation '%s' (longest_first, only_first, only_second)", strategy);
    if (total <= max) return EK_OK;
    size_t remove = total - max;
    if (longest) {
        if (!pair) { *na = max; return EK_OK; }
        size_t n1 = *na, n2 = *nb;
        int swap = n1 > n2;
        if (swap) { size_t x = n1; n1 = n2; n2 = x; }
        if (n1 > max) n2 = n1;
        else n2 = n1 > max - n1 ? n1 : max - n1;
        if (n1 + n2 > max) { n1 = max / 2; n2 = n1 + max % 2; }
        if (swap) { size_t x = n1; n1 = n2; n2 = x; }
        if (n1 < *na) *na = n1;
        if (n2 < *nb) *nb = n2;
        return EK_OK;
    }
    if (!first && !pair) return ek_fail(EK_ERR_ARGUMENT, "truncation only_second needs a second text");
    size_t *target = first ? na : nb;
    if (*target <= remove)
        return ek_fail(EK_ERR_ARGUMENT, "the sequence to truncate is too short to respect max_length");
    *target -= remove;
    return EK_OK;
}

int ek_tokenizer_encode(const ek_tokenizer *t, const char *a, const char *b, size_t max_length,
                        const char *truncation, ek_encoding *out) {
    if (!t || !a || !out) return ek_fail(EK_ERR_ARGUMENT, "ek_tokenizer_encode: NULL argument");
    memset(out, 0, sizeof *out);
    int rc = check_utf8(a, "a");
    if (!rc && b) rc = check_utf8(b, "b");
    if (rc) return rc;
    ids_t ea = {0}, eb = {0}, res = {0};
    rc = encode_text(t, a, &ea);
    if (!rc && b) rc = encode_text(t, b, &eb);
    if (rc) goto done;
    const piece_t *tmpl = b ? t->pair : t->single;
    size_t nt = b ? t->n_pair : t->n_single, added = n_special(tmpl, nt), na = ea.n, nb = eb.n;
    if (max_length && max_length >= added) { /* tokenizers does not truncate below the special tokens */
        rc = truncate_lengths(&na, &nb, b != NULL, max_length - added, truncation ? truncation : "longest_first");
        if (rc) goto done;
        out->truncated = na < ea.n || nb < eb.n;
    }
    for (size_t i = 0; i < nt; i++) {
        const piece_t *p = &tmpl[i];
        const ids_t *src = p->is_seq ? (p->seq ? &eb : &ea) : NULL;
        size_t count = p->is_seq ? (p->seq ? nb : na) : p->n_ids;
        for (size_t k = 0; k < count; k++)
            if (ids_push(&res, src ? src->v[k] : p->ids[k], p->type_id)) {
                rc = ek_fail(EK_ERR_MEMORY, "out of memory tokenizing");
                goto done;
            }
    }
    out->ids = res.v;
    out->type_ids = res.t;
    out->length = res.n;
    res.v = res.t = NULL;
done:
    free(ea.v);
    free(ea.t);
    free(eb.v);
    free(eb.t);
    free(res.v);
    free(res.t);
    return rc;
}
