/* Native WordPiece tokenisation of a Hugging Face tokenizer.json (tokenizer.h).
 *
 * The steps are those of the `tokenizers` library for BERT-family files:
 * 1. added tokens (special, not normalised: [CLS], [SEP], ...) are matched in the raw text first,
 *    longest match at the leftmost position; the rest is tokenised piece by piece;
 * 2. BertNormalizer: clean_text (drop U+0000, U+FFFD and control/format characters, whitespace to
 *    ' '), spaces around CJK ideographs, accent stripping (NFD, drop nonspacing marks; when
 *    strip_accents is true, or null and lowercase is true), lowercasing per code point;
 * 3. BertPreTokenizer: split on Unicode whitespace, every punctuation character its own word;
 * 4. WordPiece: greedy longest match with the continuing-subword prefix; a word longer than
 *    max_input_chars_per_word, or with a piece matching nothing, is the unknown token;
 * 5. post-processing (TemplateProcessing or BertProcessing): special tokens and type ids, after
 *    truncation to max_length less the special tokens (longest_first, only_first, only_second
 *    as tokenizers' truncate_encodings).
 * Unicode data (categories, decomposition, case) comes from utf8proc.
 */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "edgekit.h"
#include "error.h"

#define MAX_TOKENIZER_BYTES (256L << 20)

typedef struct vocab_slot {
    char *key; /* NULL: empty */
    int64_t id;
} vocab_slot;

typedef struct added_token {
    int32_t *chars;
    size_t length;
    int64_t id;
} added_token;

typedef struct template_item {
    int is_sequence; /* 1: the sequence (A or B), 0: a special token */
    int sequence;    /* 0: A, 1: B */
    int64_t *ids;    /* special token ids */
    size_t n_ids;
    int64_t type_id;
} template_item;

typedef struct template {
    template_item *items;
    size_t count;
    size_t n_special; /* special token ids added */
} template;

struct ek_tokenizer {
    vocab_slot *slots;
    size_t capacity;
    size_t vocab_size;
    int64_t unk_id;
    char prefix[16];
    size_t max_chars;
    int clean_text, chinese, strip_accents, lowercase;
    added_token *added;
    size_t n_added;
    template single, pair;
};

/* --- the vocabulary: open addressing, FNV-1a ------------------------------------------------ */

static uint64_t fnv1a(const char *text, size_t length) {
    uint64_t hash = 1469598103934665603ULL;
    for (size_t i = 0; i < length; ++i) hash = (hash ^ (unsigned char)text[i]) * 1099511628211ULL;
    return hash;
}

static int vocab_put(ek_tokenizer *t, const char *key, int64_t id) {
    size_t length = strlen(key);
    for (size_t i = fnv1a(key, length) & (t->capacity - 1);; i = (i + 1) & (t->capacity - 1)) {
        if (!t->slots[i].key) {
            t->slots[i].key = strdup(key);
            t->slots[i].id = id;
            return t->slots[i].key != NULL;
        }
        if (!strcmp(t->slots[i].key, key)) return 1; /* first wins (a valid file has no duplicates) */
    }
}

static int64_t vocab_get(const ek_tokenizer *t, const char *key, size_t length) {
    for (size_t i = fnv1a(key, length) & (t->capacity - 1);; i = (i + 1) & (t->capacity - 1)) {
        if (!t->slots[i].key) return -1;
        if (strlen(t->slots[i].key) == length && !memcmp(t->slots[i].key, key, length)) return t->slots[i].id;
    }
}

/* --- Unicode helpers ------------------------------------------------------------------------ */

static int is_control(int32_t c) { /* tokenizers: \t \n \r are not; categories Cc Cf Cs Co Cn are */
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
           k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CN;
}

static int is_bert_whitespace(int32_t c) { /* clean_text's: \t \n \r ' ' and category Zs */
    return c == '\t' || c == '\n' || c == '\r' || c == ' ' || utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

static int is_unicode_whitespace(int32_t c) { /* Rust char::is_whitespace: the White_Space property */
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_punctuation(int32_t c) { /* ASCII punctuation, or Unicode categories P* */
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_PC || k == UTF8PROC_CATEGORY_PD || k == UTF8PROC_CATEGORY_PS ||
           k == UTF8PROC_CATEGORY_PE || k == UTF8PROC_CATEGORY_PI || k == UTF8PROC_CATEGORY_PF ||
           k == UTF8PROC_CATEGORY_PO;
}

static int is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* A growable array of code points. */
typedef struct chars {
    int32_t *data;
    size_t length, capacity;
    int failed;
} chars;

static void push(chars *s, int32_t c) {
    if (s->failed) return;
    if (s->length == s->capacity) {
        size_t capacity = s->capacity ? 2 * s->capacity : 64;
        int32_t *data = realloc(s->data, capacity * sizeof *data);
        if (!data) { s->failed = 1; return; }
        s->data = data;
        s->capacity = capacity;
    }
    s->data[s->length++] = c;
}

/* BertNormalizer over text[0..n). */
static void normalise(const ek_tokenizer *t, const int32_t *text, size_t n, chars *out) {
    for (size_t i = 0; i < n; ++i) {
        int32_t c = text[i];
        if (t->clean_text) {
            if (c == 0 || c == 0xFFFD || is_control(c)) continue;
            if (is_bert_whitespace(c)) c = ' ';
        }
        int32_t decomposed[32];
        size_t count = 1;
        decomposed[0] = c;
        if (t->strip_accents) {
            int options = 0;
            utf8proc_ssize_t got = utf8proc_decompose_char(c, decomposed, 32, UTF8PROC_DECOMPOSE, &options);
            count = got > 0 && got <= 32 ? (size_t)got : 1;
            if (got <= 0 || got > 32) decomposed[0] = c;
        }
        for (size_t k = 0; k < count; ++k) {
            int32_t d = decomposed[k];
            if (t->strip_accents && utf8proc_category(d) == UTF8PROC_CATEGORY_MN) continue;
            int chinese = t->chinese && is_chinese(d);
            if (chinese) push(out, ' ');
            if (t->lowercase && d == 0x130) { /* İ: the one multi-character lowercase mapping */
                push(out, 'i');
                push(out, 0x307);
            } else {
                push(out, t->lowercase ? utf8proc_tolower(d) : d);
            }
            if (chinese) push(out, ' ');
        }
    }
}

/* --- WordPiece ------------------------------------------------------------------------------ */

typedef struct ids {
    int64_t *data;
    size_t length, capacity;
    int failed;
} ids;

static void push_id(ids *s, int64_t id) {
    if (s->failed) return;
    if (s->length == s->capacity) {
        size_t capacity = s->capacity ? 2 * s->capacity : 64;
        int64_t *data = realloc(s->data, capacity * sizeof *data);
        if (!data) { s->failed = 1; return; }
        s->data = data;
        s->capacity = capacity;
    }
    s->data[s->length++] = id;
}

static void wordpiece(const ek_tokenizer *t, const int32_t *word, size_t n, ids *out) {
    if (n == 0) return;
    if (n > t->max_chars) { push_id(out, t->unk_id); return; }
    /* UTF-8 of the word with the byte offset of every character */
    size_t prefix = strlen(t->prefix);
    char *bytes = malloc(prefix + 4 * n + 1);
    size_t *at = malloc((n + 1) * sizeof *at);
    int64_t *pieces = malloc(n * sizeof *pieces);
    if (!bytes || !at || !pieces) { free(bytes); free(at); free(pieces); out->failed = 1; return; }
    memcpy(bytes, t->prefix, prefix);
    size_t used = prefix;
    for (size_t i = 0; i < n; ++i) {
        at[i] = used;
        used += (size_t)utf8proc_encode_char(word[i], (utf8proc_uint8_t *)bytes + used);
    }
    at[n] = used;
    size_t start = 0, count = 0;
    int bad = 0;
    while (start < n && !bad) {
        int64_t found = -1;
        size_t end = n;
        for (; end > start; --end) {
            /* pieces after the first carry the prefix, written just before their first byte */
            const char *key = bytes + at[start];
            size_t length = at[end] - at[start];
            if (start > 0) {
                char *with = malloc(prefix + length);
                if (!with) { out->failed = 1; bad = 1; break; }
                memcpy(with, t->prefix, prefix);
                memcpy(with + prefix, key, length);
                found = vocab_get(t, with, prefix + length);
                free(with);
            } else {
                found = vocab_get(t, key, length);
            }
            if (found >= 0) break;
        }
        if (found < 0) { bad = 1; break; }
        pieces[count++] = found;
        start = end;
    }
    if (bad) push_id(out, t->unk_id);
    else for (size_t i = 0; i < count; ++i) push_id(out, pieces[i]);
    free(bytes); free(at); free(pieces);
}

/* Normalise, pre-tokenise and WordPiece one piece of text (no added tokens inside). */
static void encode_piece(const ek_tokenizer *t, const int32_t *text, size_t n, ids *out) {
    chars normal = {0};
    normalise(t, text, n, &normal);
    if (normal.failed) { out->failed = 1; free(normal.data); return; }
    size_t start = 0;
    for (size_t i = 0; i <= normal.length; ++i) {
        int end = i == normal.length;
        int32_t c = end ? ' ' : normal.data[i];
        if (end || is_unicode_whitespace(c)) {
            wordpiece(t, normal.data + start, i - start, out);
            start = i + 1;
        } else if (is_punctuation(c)) {
            wordpiece(t, normal.data + start, i - start, out);
            wordpiece(t, normal.data + i, 1, out);
            start = i + 1;
        }
    }
    free(normal.data);
}

/* The ids of `text` (UTF-8) without special tokens: added tokens first, the rest piece by piece. */
static int encode_text(const ek_tokenizer *t, const char *text, ids *out) {
    size_t size = strlen(text);
    chars input = {0};
    for (utf8proc_ssize_t at = 0; (size_t)at < size;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t got = utf8proc_iterate((const utf8proc_uint8_t *)text + at, (utf8proc_ssize_t)size - at, &c);
        if (got <= 0) {
            free(input.data);
            return ek_fail(EK_ERR_ARGUMENT, "text is not valid UTF-8 (byte %zd); pass UTF-8 text", at);
        }
        push(&input, c);
        at += got;
    }
    size_t piece = 0;
    for (size_t i = 0; i < input.length;) {
        size_t best = 0;
        int64_t best_id = -1;
        for (size_t a = 0; a < t->n_added; ++a) {
            const added_token *token = &t->added[a];
            if (token->length > best && token->length <= input.length - i &&
                !memcmp(input.data + i, token->chars, token->length * sizeof(int32_t))) {
                best = token->length;
                best_id = token->id;
            }
        }
        if (!best) { ++i; continue; }
        encode_piece(t, input.data + piece, i - piece, out);
        push_id(out, best_id);
        i += best;
        piece = i;
    }
    encode_piece(t, input.data + piece, input.length - piece, out);
    free(input.data);
    return (input.failed || out->failed) ? ek_fail(EK_ERR_MEMORY, "out of memory tokenising") : EK_OK;
}

/* --- loading -------------------------------------------------------------------------------- */

static int unsupported(const char *what, const char *kind) {
    return ek_fail(EK_ERR_UNSUPPORTED, "tokenizer %s %s is not implemented natively; tokenize in the host app and "
                   "call ek_rank_ids", what, kind ? kind : "(none)");
}

static int read_template(const cJSON *list, const cJSON *special_tokens, template *out) {
    out->count = (size_t)cJSON_GetArraySize(list);
    out->items = calloc(out->count ? out->count : 1, sizeof *out->items);
    if (!out->items) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
    size_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list) {
        template_item *to = &out->items[i++];
        const cJSON *sequence = cJSON_GetObjectItemCaseSensitive(item, "Sequence");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        const cJSON *body = sequence ? sequence : special;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
        const cJSON *type_id = cJSON_GetObjectItemCaseSensitive(body, "type_id");
        if (!cJSON_IsString(id) || !cJSON_IsNumber(type_id)) return unsupported("post-processor template", "entry");
        to->type_id = (int64_t)type_id->valuedouble;
        if (sequence) {
            to->is_sequence = 1;
            to->sequence = strcmp(id->valuestring, "A") ? 1 : 0;
            continue;
        }
        const cJSON *ids_list = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(special_tokens, id->valuestring), "ids");
        if (!cJSON_IsArray(ids_list)) return unsupported("special token without ids:", id->valuestring);
        to->n_ids = (size_t)cJSON_GetArraySize(ids_list);
        to->ids = calloc(to->n_ids ? to->n_ids : 1, sizeof *to->ids);
        if (!to->ids) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
        for (size_t k = 0; k < to->n_ids; ++k) to->ids[k] = (int64_t)cJSON_GetArrayItem(ids_list, (int)k)->valuedouble;
        out->n_special += to->n_ids;
    }
    return EK_OK;
}

/* BertProcessing as a template: [CLS] A [SEP] (B [SEP]), type ids 0 then 1. */
static int bert_template(const cJSON *processor, template *single, template *pair) {
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(processor, "cls");
    const cJSON *sep = cJSON_GetObjectItemCaseSensitive(processor, "sep");
    if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep)) return unsupported("post-processor", "BertProcessing without cls/sep");
    int64_t cls_id = (int64_t)cJSON_GetArrayItem(cls, 1)->valuedouble, sep_id = (int64_t)cJSON_GetArrayItem(sep, 1)->valuedouble;
    const int64_t specials[5] = {cls_id, -1, sep_id, -1, sep_id};
    const int64_t types[5] = {0, 0, 0, 1, 1};
    template *targets[2] = {single, pair};
    for (int t = 0; t < 2; ++t) {
        template *to = targets[t];
        to->count = t ? 5 : 3;
        to->items = calloc(to->count, sizeof *to->items);
        if (!to->items) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
        for (size_t i = 0; i < to->count; ++i) {
            template_item *item = &to->items[i];
            item->type_id = types[i];
            if (specials[i] < 0) { item->is_sequence = 1; item->sequence = i == 3; continue; }
            item->ids = malloc(sizeof *item->ids);
            if (!item->ids) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
            item->ids[0] = specials[i];
            item->n_ids = 1;
            to->n_special++;
        }
    }
    return EK_OK;
}

static int read_normalizer(ek_tokenizer *t, const cJSON *normalizer) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(normalizer, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BertNormalizer"))
        return unsupported("normalizer", cJSON_IsString(type) ? type->valuestring : NULL);
    t->clean_text = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(normalizer, "clean_text"));
    t->chinese = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(normalizer, "handle_chinese_chars"));
    t->lowercase = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(normalizer, "lowercase"));
    const cJSON *strip = cJSON_GetObjectItemCaseSensitive(normalizer, "strip_accents");
    t->strip_accents = (strip == NULL || cJSON_IsNull(strip)) ? t->lowercase : cJSON_IsTrue(strip);
    return EK_OK;
}

static int read_model(ek_tokenizer *t, const cJSON *model) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "WordPiece"))
        return unsupported("model", cJSON_IsString(type) ? type->valuestring : NULL);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *max_chars = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    if (!cJSON_IsObject(vocab) || !cJSON_IsString(unk))
        return ek_fail(EK_ERR_INTEGRITY, "tokenizer.json's WordPiece model has no vocab or unk_token; re-export the package");
    size_t count = (size_t)cJSON_GetArraySize(vocab);
    for (t->capacity = 64; t->capacity < 2 * count + 2; t->capacity *= 2) {}
    t->slots = calloc(t->capacity, sizeof *t->slots);
    if (!t->slots) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
    const cJSON *entry;
    cJSON_ArrayForEach(entry, vocab) {
        if (!cJSON_IsNumber(entry) || entry->valuedouble < 0)
            return ek_fail(EK_ERR_INTEGRITY, "tokenizer.json's vocab maps a token to a non-id; re-export the package");
        if (!vocab_put(t, entry->string, (int64_t)entry->valuedouble)) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
        if ((size_t)entry->valuedouble + 1 > t->vocab_size) t->vocab_size = (size_t)entry->valuedouble + 1;
    }
    t->unk_id = vocab_get(t, unk->valuestring, strlen(unk->valuestring));
    if (t->unk_id < 0) return ek_fail(EK_ERR_INTEGRITY, "tokenizer.json's unk_token is not in its vocab; re-export the package");
    snprintf(t->prefix, sizeof t->prefix, "%s", cJSON_IsString(prefix) ? prefix->valuestring : "##");
    t->max_chars = cJSON_IsNumber(max_chars) && max_chars->valuedouble > 0 ? (size_t)max_chars->valuedouble : 100;
    return EK_OK;
}

static int read_added(ek_tokenizer *t, const cJSON *added) {
    t->added = calloc((size_t)cJSON_GetArraySize(added) + 1, sizeof *t->added);
    if (!t->added) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
    const cJSON *entry;
    cJSON_ArrayForEach(entry, added) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(entry, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(entry, "id");
        if (!cJSON_IsString(content) || !cJSON_IsNumber(id)) continue;
        if ((size_t)id->valuedouble + 1 > t->vocab_size) t->vocab_size = (size_t)id->valuedouble + 1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "normalized")) ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "single_word")) ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "lstrip")) ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "rstrip")))
            return unsupported("added token option (normalized, single_word, lstrip or rstrip) on", content->valuestring);
        size_t size = strlen(content->valuestring);
        if (size == 0) continue;
        added_token *token = &t->added[t->n_added++]; /* counted now: freed with the tokenizer on any failure */
        token->chars = malloc(size * sizeof *token->chars);
        if (!token->chars) return ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
        for (utf8proc_ssize_t at = 0; (size_t)at < size;) {
            utf8proc_int32_t c;
            utf8proc_ssize_t got = utf8proc_iterate((const utf8proc_uint8_t *)content->valuestring + at,
                                                    (utf8proc_ssize_t)size - at, &c);
            if (got <= 0) return ek_fail(EK_ERR_INTEGRITY, "tokenizer.json holds invalid UTF-8; re-export the package");
            token->chars[token->length++] = c;
            at += got;
        }
        token->id = (int64_t)id->valuedouble;
    }
    return EK_OK;
}

static int read_post_processor(ek_tokenizer *t, const cJSON *processor) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(processor, "type");
    const char *kind = cJSON_IsString(type) ? type->valuestring : NULL;
    if (kind && !strcmp(kind, "BertProcessing")) return bert_template(processor, &t->single, &t->pair);
    if (!kind || strcmp(kind, "TemplateProcessing")) return unsupported("post-processor", kind);
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(processor, "special_tokens");
    int status = read_template(cJSON_GetObjectItemCaseSensitive(processor, "single"), special, &t->single);
    return status ? status : read_template(cJSON_GetObjectItemCaseSensitive(processor, "pair"), special, &t->pair);
}

int ek_tokenizer_load(const char *path, ek_tokenizer **out) {
    *out = NULL;
    FILE *file = fopen(path, "rb");
    if (!file) return ek_fail(EK_ERR_INTEGRITY, "cannot read %s; run `edgekit verify` and re-export the package", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = size >= 0 && size <= MAX_TOKENIZER_BYTES ? malloc((size_t)size + 1) : NULL;
    size_t got = text ? fread(text, 1, (size_t)size, file) : 0;
    fclose(file);
    if (!text) return ek_fail(EK_ERR_INTEGRITY, "%s is larger than 256 MiB or unreadable; re-export the package", path);
    text[got] = '\0';
    cJSON *json = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return ek_fail(EK_ERR_INTEGRITY, "%s is not readable JSON; run `edgekit verify` and re-export the package", path);
    }
    ek_tokenizer *t = calloc(1, sizeof *t);
    int status = t ? EK_OK : ek_fail(EK_ERR_MEMORY, "out of memory loading the tokenizer");
    if (!status) status = read_model(t, cJSON_GetObjectItemCaseSensitive(json, "model"));
    if (!status) status = read_normalizer(t, cJSON_GetObjectItemCaseSensitive(json, "normalizer"));
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(json, "pre_tokenizer");
    const cJSON *pre_type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!status && (!cJSON_IsString(pre_type) || strcmp(pre_type->valuestring, "BertPreTokenizer")))
        status = unsupported("pre-tokenizer", cJSON_IsString(pre_type) ? pre_type->valuestring : NULL);
    if (!status) status = read_added(t, cJSON_GetObjectItemCaseSensitive(json, "added_tokens"));
    if (!status) status = read_post_processor(t, cJSON_GetObjectItemCaseSensitive(json, "post_processor"));
    cJSON_Delete(json);
    if (status) { ek_tokenizer_free(t); return status; }
    *out = t;
    return EK_OK;
}

/* --- encoding ------------------------------------------------------------------------------- */

/* tokenizers' truncate_encodings on lengths: the kept lengths of A (and B) within `budget`. */
static int truncate_lengths(size_t *n_a, size_t *n_b, int has_b, size_t budget, const char *strategy) {
    size_t total = *n_a + (has_b ? *n_b : 0);
    if (total <= budget) return EK_OK;
    size_t remove = total - budget;
    if (!strcmp(strategy, "longest_first")) {
        if (!has_b) { *n_a = total - remove; return EK_OK; }
        size_t n1 = *n_a, n2 = *n_b;
        int swap = n1 > n2;
        if (swap) { size_t s = n1; n1 = n2; n2 = s; }
        if (n1 > budget) n2 = n1;
        else n2 = n1 > budget - n1 ? n1 : budget - n1;
        if (n1 + n2 > budget) { n1 = budget / 2; n2 = n1 + budget % 2; }
        if (swap) { size_t s = n1; n1 = n2; n2 = s; }
        if (n1 < *n_a) *n_a = n1;
        if (n2 < *n_b) *n_b = n2;
        return EK_OK;
    }
    int first = !strcmp(strategy, "only_first");
    if (!first && !has_b) return ek_fail(EK_ERR_ARGUMENT, "truncation only_second needs a pair of texts");
    size_t *target = first ? n_a : n_b;
    if (*target <= remove)
        return ek_fail(EK_ERR_ARGUMENT, "the %s text is too short to truncate to max_length (the other one is too "
                       "long alone); shorten it", first ? "first" : "second");
    *target -= remove;
    return EK_OK;
}

int ek_tokenizer_encode(const ek_tokenizer *t, const char *a, const char *b, size_t max_length,
                        const char *truncation, ek_encoding *out) {
    memset(out, 0, sizeof *out);
    ids first = {0}, second = {0};
    int status = encode_text(t, a, &first);
    if (!status && b) status = encode_text(t, b, &second);
    const template *shape = b ? &t->pair : &t->single;
    size_t n_a = first.length, n_b = second.length;
    if (!status && max_length < shape->n_special)
        status = ek_fail(EK_ERR_ARGUMENT, "max_length %zu leaves no room beside %zu special tokens", max_length, shape->n_special);
    if (!status) status = truncate_lengths(&n_a, &n_b, b != NULL, max_length - shape->n_special, truncation);
    if (!status) {
        size_t total = shape->n_special + n_a + (b ? n_b : 0);
        out->ids = malloc((total ? total : 1) * sizeof *out->ids);
        out->type_ids = malloc((total ? total : 1) * sizeof *out->type_ids);
        if (!out->ids || !out->type_ids) status = ek_fail(EK_ERR_MEMORY, "out of memory tokenising");
        for (size_t i = 0; !status && i < shape->count; ++i) {
            const template_item *item = &shape->items[i];
            const int64_t *source = item->is_sequence ? (item->sequence ? second.data : first.data) : item->ids;
            size_t count = item->is_sequence ? (item->sequence ? n_b : n_a) : item->n_ids;
            for (size_t k = 0; k < count; ++k) {
                out->ids[out->length] = source[k];
                out->type_ids[out->length++] = item->type_id;
            }
        }
        out->truncated = n_a < first.length || n_b < second.length;
    }
    free(first.data);
    free(second.data);
    if (status) ek_encoding_free(out);
    return status;
}

size_t ek_tokenizer_vocab_size(const ek_tokenizer *t) { return t->vocab_size; }

void ek_encoding_free(ek_encoding *e) {
    free(e->ids);
    free(e->type_ids);
    memset(e, 0, sizeof *e);
}

static void free_template(template *shape) {
    for (size_t i = 0; shape->items && i < shape->count; ++i) free(shape->items[i].ids);
    free(shape->items);
}

void ek_tokenizer_free(ek_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; t->slots && i < t->capacity; ++i) free(t->slots[i].key);
    free(t->slots);
    for (size_t i = 0; t->added && i < t->n_added; ++i) free(t->added[i].chars);
    free(t->added);
    free_template(&t->single);
    free_template(&t->pair);
    free(t);
}
