/* edgekit-rank: the sample host of the native runtime.
 *
 *   edgekit-rank PKG --query Q --candidates FILE [--top-k K] [--json] [--window W] [--chunk C]
 *                [--threads T] [--prune SPEC] [--no-verify] [--ids FILE.jsonl] [--query-ids 1,2,3]
 *   edgekit-rank PKG --queries FILE.jsonl [--top-k K] [...]
 *
 * Ranks the candidates of FILE (.txt: one per non-blank line; .jsonl: {"text": ...} per line)
 * against Q with the package at PKG and prints the best K, or with --json the same JSON object
 * as `edgekit run --json` ({"top_k": [...], "stats": {...}}). --ids ranks pre-tokenised
 * sequences instead (one {"ids": [...], "type_ids": [...]} per line; select packages also take
 * --query-ids), through ek_rank_ids. --no-verify skips the sha256 check of the package's files. --queries ranks many queries on one open package: one
 * {"query": ..., "candidates": [...]} per line (the dev set's format), one JSON line out per
 * query. Exit codes: 0 ok, 2 a user or package error (one
 * `error: ...` line on stderr), 1 anything else.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit.h"

typedef struct lines {
    char **items;
    size_t count, capacity;
} lines;

static int fail(int code, const char *message) {
    fprintf(stderr, "error: %s\n", message);
    return code;
}

static int push(lines *l, char *text) {
    if (l->count == l->capacity) {
        size_t capacity = l->capacity ? 2 * l->capacity : 64;
        char **items = realloc(l->items, capacity * sizeof *items);
        if (!items) return 0;
        l->items = items;
        l->capacity = capacity;
    }
    l->items[l->count++] = text;
    return 1;
}

static void free_lines(lines *l) {
    for (size_t i = 0; i < l->count; ++i) free(l->items[i]);
    free(l->items);
}

static int blank(const char *text) {
    for (; *text; ++text)
        if (*text != ' ' && *text != '\t' && *text != '\v' && *text != '\f') return 0;
    return 1;
}

/* The non-blank lines of `path` (a leading UTF-8 BOM dropped); 0 and a message on failure. */
static int read_lines(const char *path, lines *out, char *message, size_t size) {
    FILE *file = fopen(path, "rb");
    if (!file) { snprintf(message, size, "candidates file %s does not exist or cannot be read", path); return 0; }
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    int first = 1;
    while ((length = getline(&line, &capacity, file)) >= 0) {
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r')) line[--length] = '\0';
        char *text = line;
        if (first && strncmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3;
        first = 0;
        if (blank(text)) continue;
        char *copy = strdup(text);
        if (!copy || !push(out, copy)) { free(copy); snprintf(message, size, "out of memory reading %s", path); break; }
    }
    free(line);
    fclose(file);
    return message[0] == '\0';
}

static int ends_with(const char *text, const char *suffix) {
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && strcmp(text + n - m, suffix) == 0;
}

static int read_candidates(const char *path, lines *texts, char *message, size_t size) {
    int jsonl = ends_with(path, ".jsonl");
    if (!jsonl && !ends_with(path, ".txt")) {
        snprintf(message, size, "%s: candidates file must end in .txt (one per line) or .jsonl ({\"text\": ...})", path);
        return 0;
    }
    if (!read_lines(path, texts, message, size)) return 0;
    for (size_t i = 0; jsonl && i < texts->count; ++i) {
        cJSON *record = cJSON_Parse(texts->items[i]);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(record, "text");
        if (!cJSON_IsString(text)) {
            cJSON_Delete(record);
            snprintf(message, size, "%s: record %zu: expected an object with a string \"text\" field", path, i + 1);
            return 0;
        }
        free(texts->items[i]);
        texts->items[i] = strdup(text->valuestring);
        cJSON_Delete(record);
    }
    if (texts->count == 0) { snprintf(message, size, "%s holds no candidates; put one candidate per line", path); return 0; }
    return 1;
}

static int integral(const cJSON *item) {
    return cJSON_IsNumber(item) && item->valuedouble >= 0 && item->valuedouble <= 9007199254740992.0 &&
           item->valuedouble == (double)(int64_t)item->valuedouble;
}

/* Token sequences of an --ids file: {"ids": [...], "type_ids": [...]} per line. */
static int read_ids(const char *path, ek_tokens **out, size_t *count, char *message, size_t size) {
    lines raw = {0};
    if (!read_lines(path, &raw, message, size)) { free_lines(&raw); return 0; }
    ek_tokens *seqs = calloc(raw.count ? raw.count : 1, sizeof *seqs);
    int ok = seqs != NULL;
    for (size_t i = 0; ok && i < raw.count; ++i) {
        cJSON *record = cJSON_Parse(raw.items[i]);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(record, "ids");
        const cJSON *types = cJSON_GetObjectItemCaseSensitive(record, "type_ids");
        size_t n = cJSON_IsArray(ids) ? (size_t)cJSON_GetArraySize(ids) : 0;
        if (!n || (types && (!cJSON_IsArray(types) || (size_t)cJSON_GetArraySize(types) != n))) {
            snprintf(message, size, "%s:%zu: expected {\"ids\": [...], \"type_ids\": [...]} with equal lengths", path, i + 1);
            ok = 0;
        } else {
            int64_t *values = malloc(n * sizeof *values), *type_values = types ? malloc(n * sizeof *type_values) : NULL;
            ok = values && (!types || type_values);
            for (size_t k = 0; ok && k < n; ++k) {
                const cJSON *id = cJSON_GetArrayItem(ids, (int)k), *type = types ? cJSON_GetArrayItem(types, (int)k) : NULL;
                ok = integral(id) && (!types || integral(type));
                values[k] = ok ? (int64_t)id->valuedouble : 0;
                if (types) type_values[k] = ok ? (int64_t)type->valuedouble : 0;
            }
            seqs[i] = (ek_tokens){values, type_values, n};
            if (!ok) snprintf(message, size, "%s:%zu: ids and type_ids must be integers (0 .. 2^53)", path, i + 1);
        }
        cJSON_Delete(record);
    }
    *count = raw.count;
    *out = seqs;
    free_lines(&raw);
    return ok;
}

static void free_ids(ek_tokens *seqs, size_t count) {
    for (size_t i = 0; seqs && i < count; ++i) { free((void *)seqs[i].ids); free((void *)seqs[i].type_ids); }
    free(seqs);
}

static void print_json(const ek_results *r, const lines *texts) {
    cJSON *root = cJSON_CreateObject(), *top = cJSON_AddArrayToObject(root, "top_k");
    for (size_t i = 0; i < r->count; ++i) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "index", (double)r->items[i].index);
        cJSON_AddNumberToObject(item, "score", r->items[i].score);
        cJSON_AddStringToObject(item, "text", r->items[i].index < texts->count ? texts->items[r->items[i].index] : "");
        cJSON_AddNumberToObject(item, "decided_at_layer", r->items[i].decided_at_layer);
        cJSON_AddItemToArray(top, item);
    }
    const ek_stats *s = &r->stats;
    cJSON *stats = cJSON_AddObjectToObject(root, "stats");
    cJSON_AddNumberToObject(stats, "latency_ms", s->latency_ms);
    cJSON_AddNumberToObject(stats, "peak_rss_mb", s->peak_rss_mb);
    cJSON_AddNumberToObject(stats, "candidates", (double)s->candidates);
    cJSON_AddNumberToObject(stats, "top_k_requested", (double)s->top_k_requested);
    cJSON_AddNumberToObject(stats, "top_k_returned", (double)s->top_k_returned);
    cJSON_AddNumberToObject(stats, "truncated", (double)s->truncated);
    cJSON_AddNumberToObject(stats, "graphs_loaded", (double)s->graphs_loaded);
    cJSON_AddNumberToObject(stats, "max_resident_graphs", (double)s->max_resident_graphs);
    cJSON_AddNumberToObject(stats, "window", s->window);
    cJSON_AddNumberToObject(stats, "chunk", s->chunk);
    cJSON_AddNumberToObject(stats, "chunks", (double)s->chunks);
    cJSON_AddNumberToObject(stats, "tokens", (double)s->tokens);
    cJSON_AddNumberToObject(stats, "padded_tokens", (double)s->padded_tokens);
    cJSON_AddStringToObject(stats, "provider", "cpu");
    cJSON_AddStringToObject(stats, "prune", s->prune);
    cJSON_AddNumberToObject(stats, "layers", s->layers);
    cJSON_AddNumberToObject(stats, "candidate_layers", (double)s->candidate_layers);
    cJSON_AddNumberToObject(stats, "candidate_layers_exact", (double)s->candidate_layers_exact);
    cJSON_AddStringToObject(stats, "runtime", "native");
    char *text = cJSON_PrintUnformatted(root);
    if (text) puts(text);
    free(text);
    cJSON_Delete(root);
}

static void print_table(const ek_results *r, const lines *texts) {
    for (size_t i = 0; i < r->count; ++i)
        printf("%2zu. %+.4f  [%zu] %.100s\n", i + 1, r->items[i].score, r->items[i].index,
               r->items[i].index < texts->count ? texts->items[r->items[i].index] : "");
    printf("%zu candidates, %.1f ms, peak RSS %.1f MiB, %zu graphs loaded, at most %zu resident\n", r->stats.candidates,
           r->stats.latency_ms, r->stats.peak_rss_mb, r->stats.graphs_loaded, r->stats.max_resident_graphs);
}

/* --queries: every {"query", "candidates"} line of `path` ranked on one handle; one JSON line each. */
static int rank_queries(ek_handle *handle, const char *path, size_t top_k) {
    lines raw = {0};
    char message[512] = "";
    if (!read_lines(path, &raw, message, sizeof message)) { free_lines(&raw); return fail(2, message); }
    int status = 0;
    for (size_t i = 0; !status && i < raw.count; ++i) {
        cJSON *record = cJSON_Parse(raw.items[i]);
        const cJSON *query = cJSON_GetObjectItemCaseSensitive(record, "query");
        const cJSON *candidates = cJSON_GetObjectItemCaseSensitive(record, "candidates");
        lines texts = {0};
        const cJSON *item;
        int ok = cJSON_IsString(query) && cJSON_IsArray(candidates);
        cJSON_ArrayForEach(item, candidates) ok = ok && cJSON_IsString(item) && push(&texts, strdup(item->valuestring));
        if (!ok) {
            snprintf(message, sizeof message, "%s: record %zu: expected {\"query\": str, \"candidates\": [str, ...]}", path, i + 1);
            status = fail(2, message);
        } else {
            ek_results *results = NULL;
            int code = ek_rank(handle, query->valuestring, (const char *const *)texts.items, texts.count, top_k, &results);
            if (code) {
                fprintf(stderr, "error: %s: record %zu: %s\n", path, i + 1, ek_last_error());
                status = code == EK_ERR_RUNTIME || code == EK_ERR_MEMORY ? 1 : 2;
            } else {
                print_json(results, &texts);
                fflush(stdout);
            }
            ek_results_free(results);
        }
        free_lines(&texts);
        cJSON_Delete(record);
    }
    free_lines(&raw);
    return status;
}

static const char *USAGE =
    "usage: edgekit-rank PKG --query Q --candidates FILE [--top-k K] [--json] [--window W] [--chunk C]\n"
    "                    [--threads T] [--prune SPEC] [--no-verify] [--ids FILE.jsonl] [--query-ids 1,2,3]\n"
    "       edgekit-rank PKG --queries FILE.jsonl [--top-k K] [--window W] [--chunk C] [--threads T] [--prune SPEC]\n";

int main(int argc, char **argv) {
    const char *package = NULL, *query = NULL, *candidates = NULL, *ids_file = NULL, *query_ids = NULL, *queries = NULL;
    long top_k = 10;
    int json = 0;
    ek_options options;
    ek_options_default(&options);
    for (int i = 1; i < argc; ++i) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(arg, "--json")) { json = 1; continue; }
        if (!strcmp(arg, "--no-verify")) { options.verify = 0; continue; }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { fputs(USAGE, stdout); return 0; }
        if (arg[0] != '-') {
            if (package) return fail(2, "more than one package given; pass one PKG folder");
            package = arg;
            continue;
        }
        if (!value) { fprintf(stderr, "error: %s needs a value\n", arg); return 2; }
        ++i;
        if (!strcmp(arg, "--query")) query = value;
        else if (!strcmp(arg, "--candidates")) candidates = value;
        else if (!strcmp(arg, "--ids")) ids_file = value;
        else if (!strcmp(arg, "--queries")) queries = value;
        else if (!strcmp(arg, "--query-ids")) query_ids = value;
        else if (!strcmp(arg, "--prune")) options.prune = value;
        else if (!strcmp(arg, "--top-k")) top_k = strtol(value, &end, 10);
        else if (!strcmp(arg, "--window")) options.window = (int)strtol(value, &end, 10);
        else if (!strcmp(arg, "--chunk")) options.chunk = (int)strtol(value, &end, 10);
        else if (!strcmp(arg, "--threads")) options.threads = (int)strtol(value, &end, 10);
        else { fprintf(stderr, "error: unknown option %s\n%s", arg, USAGE); return 2; }
        if (end && (*end || end == value)) { fprintf(stderr, "error: %s takes an integer, got '%s'\n", arg, value); return 2; }
    }
    if (!package) { fprintf(stderr, "error: no package given\n%s", USAGE); return 2; }
    if (top_k < 1) { fprintf(stderr, "error: --top-k must be a positive integer, got %ld\n", top_k); return 2; }
    if (!ids_file && !queries && (!query || !candidates))
        return fail(2, "pass --query and --candidates (or --ids FILE.jsonl, or --queries FILE.jsonl)");
    if (queries) {
        ek_handle *handle = NULL;
        if (ek_open(package, &options, &handle)) return fail(2, ek_last_error());
        int status = rank_queries(handle, queries, (size_t)top_k);
        ek_close(handle);
        return status;
    }

    lines texts = {0};
    char message[512] = "";
    if (candidates && !read_candidates(candidates, &texts, message, sizeof message)) {
        free_lines(&texts);
        return fail(2, message);
    }
    ek_handle *handle = NULL;
    int status = ek_open(package, &options, &handle);
    ek_results *results = NULL;
    if (!status && ids_file) {
        ek_tokens *seqs = NULL, query_tokens = {0};
        size_t count = 0;
        int64_t *qids = NULL;
        if (!read_ids(ids_file, &seqs, &count, message, sizeof message)) {
            free_ids(seqs, count);
            ek_close(handle);
            free_lines(&texts);
            return fail(2, message);
        }
        if (query_ids) { /* comma-separated integers */
            size_t n = 1;
            for (const char *c = query_ids; *c; ++c) n += *c == ',';
            qids = malloc(n * sizeof *qids);
            const char *c = query_ids;
            int good = qids != NULL;
            for (size_t k = 0; good && k < n; ++k) {
                char *end;
                qids[k] = strtoll(c, &end, 10);
                good = end != c && (*end == ',' || (*end == '\0' && k + 1 == n));
                c = *end == ',' ? end + 1 : end;
            }
            if (!good) {
                free(qids);
                free_ids(seqs, count);
                ek_close(handle);
                free_lines(&texts);
                return fail(2, "--query-ids takes comma-separated integers, e.g. 101,2129,102");
            }
            query_tokens = (ek_tokens){qids, NULL, n};
        }
        status = ek_rank_ids(handle, query_ids ? &query_tokens : NULL, seqs, count, (size_t)top_k, &results);
        free(qids);
        free_ids(seqs, count);
    } else if (!status) {
        status = ek_rank(handle, query, (const char *const *)texts.items, texts.count, (size_t)top_k, &results);
    }
    if (status) {
        fprintf(stderr, "error: %s\n", ek_last_error());
        ek_close(handle);
        free_lines(&texts);
        return status == EK_ERR_RUNTIME || status == EK_ERR_MEMORY ? 1 : 2;
    }
    if (json) print_json(results, &texts);
    else print_table(results, &texts);
    ek_results_free(results);
    ek_close(handle);
    free_lines(&texts);
    return 0;
}
