/* The public C API (edgekit.h): open, rank, rank_ids, free, close. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "handle.h"

#define DEFAULT_WINDOW 2
#define DEFAULT_CHUNK 16

void ek_options_default(ek_options *options) {
    memset(options, 0, sizeof *options);
    options->window = DEFAULT_WINDOW;
    options->chunk = DEFAULT_CHUNK;
    options->provider = "cpu";
    options->prune = "exact";
    options->verify = 1;
}

static int resolve_prune(ek_handle *h, const char *spec) {
    const ek_manifest *m = h->manifest;
    if (spec && !strcmp(spec, "auto")) {
        if (!m->has_calibration)
            return ek_fail(EK_ERR_ARGUMENT, "--prune auto needs a calibrated package; run `edgekit calibrate PKG --data "
                           "FILE.jsonl` or pass --prune threshold:X");
        if (strcmp(m->calibration_policy, "cluster"))
            return ek_fail(EK_ERR_UNSUPPORTED, "the package's calibrated policy %.40s is not in the native runtime (it "
                           "implements cluster pruning); pass --prune threshold:X or exact", m->calibration_policy);
        memset(&h->policy, 0, sizeof h->policy);
        h->prune_auto = 1;
        if (m->calibration_certified)
            h->policy = (ek_policy){1, m->calibration_threshold, m->calibration_clusters, m->calibration_min_depth};
    } else {
        int status = ek_policy_parse(spec, &h->policy);
        if (status) return status;
    }
    if (h->policy.enabled) snprintf(h->prune, sizeof h->prune, "threshold:%.12g@%d", h->policy.threshold, h->policy.min_depth);
    else snprintf(h->prune, sizeof h->prune, "exact");
    return EK_OK;
}

static int check_options(const ek_options *o) {
    if (o->window < 1) return ek_fail(EK_ERR_ARGUMENT, "window must be >= 1 (graphs resident at once), got %d", o->window);
    if (o->chunk < 1) return ek_fail(EK_ERR_ARGUMENT, "chunk must be >= 1 candidates, got %d", o->chunk);
    if (o->threads < 0) return ek_fail(EK_ERR_ARGUMENT, "threads must be >= 1 (or 0: onnxruntime's default), got %d", o->threads);
    if (o->provider && strcmp(o->provider, "cpu"))
        return ek_fail(EK_ERR_ARGUMENT, "provider %.40s is not available in the native runtime; use cpu", o->provider);
    return EK_OK;
}

static int open_tables(ek_handle *h) {
    const ek_manifest *m = h->manifest;
    int is_int8 = !strcmp(m->table_dtype, "int8");
    int status = ek_npy_open(m->table_path, is_int8 ? 'b' : 'f', m->table_rows, m->table_cols, &h->table);
    if (!status && is_int8) status = ek_npy_open(m->scales_path, 'f', m->table_rows, 0, &h->scales);
    return status;
}

static int open_tokenizer(ek_handle *h) {
    const ek_manifest *m = h->manifest;
    int status = ek_tokenizer_load(m->tokenizer_path, &h->tokenizer);
    if (status == EK_ERR_UNSUPPORTED) { /* the host brings its own tokenizer: ek_rank_ids */
        snprintf(h->tokenizer_error, sizeof h->tokenizer_error, "%s", ek_last_error());
        h->tokenizer = NULL;
        return EK_OK;
    }
    if (status) return status;
    size_t size = ek_tokenizer_vocab_size(h->tokenizer);
    if (size > m->table_rows)
        return ek_fail(EK_ERR_PACKAGE, "tokenizer.json has %zu tokens, the embedding table has %zu rows; the tokenizer "
                       "is not the package's: re-export the package", size, m->table_rows);
    if (m->has_prompt) { /* decoder rerankers build a prompt around the pair: not native yet */
        snprintf(h->tokenizer_error, sizeof h->tokenizer_error, "prompt packages (decoder rerankers) are ranked from "
                 "token ids natively: build the prompt's ids in the host app and call ek_rank_ids");
        ek_tokenizer_free(h->tokenizer);
        h->tokenizer = NULL;
    }
    return EK_OK;
}

int ek_open(const char *package_dir, const ek_options *options, ek_handle **out) {
    ek_clear_error();
    if (!out) return ek_fail(EK_ERR_ARGUMENT, "ek_open needs a place for the handle (out is NULL)");
    *out = NULL;
    if (!package_dir || !*package_dir) return ek_fail(EK_ERR_ARGUMENT, "package directory is empty; pass the folder `edgekit export` wrote");
    ek_options defaults;
    ek_options_default(&defaults);
    const ek_options *o = options ? options : &defaults;
    int status = check_options(o);
    if (status) return status;
    ek_handle *h = calloc(1, sizeof *h);
    if (!h) return ek_fail(EK_ERR_MEMORY, "out of memory opening %s", package_dir);
    h->window = o->window;
    h->chunk = o->chunk;
    h->threads = o->threads;
    status = ek_manifest_load(package_dir, &h->manifest);
    if (!status) status = resolve_prune(h, o->prune);
    if (!status && o->verify) status = ek_manifest_verify(h->manifest);
    if (!status) status = open_tables(h);
    if (!status) status = open_tokenizer(h);
    if (!status && (size_t)h->window >= (size_t)h->manifest->num_layers + 2) { /* every graph fits: keep them open */
        h->n_pinned = (size_t)h->manifest->num_layers + 2;
        h->pinned = calloc(h->n_pinned, sizeof *h->pinned);
        if (!h->pinned) status = ek_fail(EK_ERR_MEMORY, "out of memory opening %s", package_dir);
    }
    if (status) { ek_close(h); return status; }
    *out = h;
    return EK_OK;
}

static int check_call(const ek_handle *h, size_t n, size_t top_k, ek_results **out) {
    if (!h) return ek_fail(EK_ERR_ARGUMENT, "the handle is NULL; open the package with ek_open first");
    if (!out) return ek_fail(EK_ERR_ARGUMENT, "results pointer is NULL");
    *out = NULL;
    if (n == 0) return ek_fail(EK_ERR_ARGUMENT, "no candidates to rank; pass at least one candidate text");
    if (top_k == 0) return ek_fail(EK_ERR_ARGUMENT, "top_k must be a positive integer, got 0");
    const ek_manifest *m = h->manifest;
    if (h->prune_auto && m->calibration_top_k > 0 &&
        (size_t)m->calibration_top_k != top_k)
        return ek_fail(EK_ERR_ARGUMENT, "the package was calibrated for top-k %ld, not %zu; re-run `edgekit calibrate` "
                       "with --top-k %zu, or pass --prune threshold:X", m->calibration_top_k, top_k, top_k);
    return EK_OK;
}

static void free_sequences(ek_sequence *seqs, size_t n) {
    for (size_t i = 0; seqs && i < n; ++i) { free(seqs[i].ids); free(seqs[i].type_ids); }
    free(seqs);
}

static int blank(const char *text) {
    for (; *text; ++text)
        if (!isspace((unsigned char)*text)) return 0;
    return 1;
}

int ek_rank(ek_handle *h, const char *query, const char *const *candidates, size_t n, size_t top_k, ek_results **out) {
    ek_clear_error();
    int status = check_call(h, n, top_k, out);
    if (status) return status;
    if (!query || blank(query)) return ek_fail(EK_ERR_ARGUMENT, "query is empty; pass the text to rank candidates against");
    if (!candidates) return ek_fail(EK_ERR_ARGUMENT, "candidates is NULL; pass an array of n texts");
    for (size_t i = 0; i < n; ++i)
        if (!candidates[i]) return ek_fail(EK_ERR_ARGUMENT, "candidate %zu is NULL, not a text", i);
    if (!h->tokenizer)
        return ek_fail(EK_ERR_UNSUPPORTED, "%s", h->tokenizer_error);
    const ek_manifest *m = h->manifest;
    int select = !strcmp(m->task, "select");
    size_t total = n + (size_t)select;
    ek_sequence *seqs = calloc(total, sizeof *seqs);
    if (!seqs) return ek_fail(EK_ERR_MEMORY, "out of memory tokenising");
    for (size_t i = 0; !status && i < total; ++i) {
        ek_encoding e = {0};
        if (select) status = ek_tokenizer_encode(h->tokenizer, i < n ? candidates[i] : query, NULL, m->max_length, m->truncation, &e);
        else status = ek_tokenizer_encode(h->tokenizer, query, candidates[i], m->max_length, m->truncation, &e);
        if (status) break;
        seqs[i] = (ek_sequence){e.ids, e.type_ids, e.length, e.truncated};
        for (size_t t = 0; t < e.length && !status; ++t)
            if (e.ids[t] < 0 || (size_t)e.ids[t] >= m->table_rows)
                status = ek_fail(EK_ERR_PACKAGE, "token id %lld is past the embedding table's %zu rows; re-export the package",
                                 (long long)e.ids[t], m->table_rows);
    }
    if (!status) status = ek_run_pass(h, seqs, n, select ? (long)n : -1, top_k, out);
    free_sequences(seqs, total);
    return status;
}

int ek_rank_ids(ek_handle *h, const ek_tokens *query, const ek_tokens *sequences, size_t n, size_t top_k,
                ek_results **out) {
    ek_clear_error();
    int status = check_call(h, n, top_k, out);
    if (status) return status;
    if (!sequences) return ek_fail(EK_ERR_ARGUMENT, "sequences is NULL; pass an array of n token sequences");
    const ek_manifest *m = h->manifest;
    int select = !strcmp(m->task, "select");
    if (select && !query)
        return ek_fail(EK_ERR_ARGUMENT, "a select (bi-encoder) package ranks candidates against a query: pass the query's tokens");
    if (!select && query)
        return ek_fail(EK_ERR_ARGUMENT, "a rerank package scores (query, candidate) pairs: encode each pair as one "
                       "sequence and pass query NULL");
    size_t total = n + (size_t)select;
    ek_sequence *seqs = calloc(total, sizeof *seqs);
    if (!seqs) return ek_fail(EK_ERR_MEMORY, "out of memory copying token ids");
    for (size_t i = 0; !status && i < total; ++i) {
        const ek_tokens *t = i < n ? &sequences[i] : query;
        const char *what = i < n ? "sequence" : "the query";
        if (!t->ids || t->length == 0) { status = ek_fail(EK_ERR_ARGUMENT, "%s %zu has no tokens", what, i < n ? i : 0); break; }
        if (t->length > m->max_length) {
            status = ek_fail(EK_ERR_ARGUMENT, "%s %zu has %zu tokens, the package's max_length is %zu; truncate as its "
                             "tokenizer does", what, i < n ? i : 0, t->length, m->max_length);
            break;
        }
        seqs[i].ids = malloc(t->length * sizeof(int64_t));
        seqs[i].type_ids = calloc(t->length, sizeof(int64_t));
        if (!seqs[i].ids || !seqs[i].type_ids) { status = ek_fail(EK_ERR_MEMORY, "out of memory copying token ids"); break; }
        seqs[i].length = t->length;
        for (size_t k = 0; k < t->length; ++k) {
            if (t->ids[k] < 0 || (size_t)t->ids[k] >= m->table_rows) {
                status = ek_fail(EK_ERR_ARGUMENT, "%s %zu: token id %lld is not a row of the embedding table (0..%zu)",
                                 what, i < n ? i : 0, (long long)t->ids[k], m->table_rows - 1);
                break;
            }
            seqs[i].ids[k] = t->ids[k];
            seqs[i].type_ids[k] = t->type_ids ? t->type_ids[k] : 0;
        }
    }
    if (!status) status = ek_run_pass(h, seqs, n, select ? (long)n : -1, top_k, out);
    free_sequences(seqs, total);
    return status;
}

void ek_results_free(ek_results *results) {
    if (!results) return;
    free(results->items);
    free(results);
}

void ek_close(ek_handle *h) {
    if (!h) return;
    for (size_t i = 0; h->pinned && i < h->n_pinned; ++i) ek_session_release(h->pinned[i]);
    free(h->pinned);
    ek_tokenizer_free(h->tokenizer);
    ek_npy_close(&h->table);
    ek_npy_close(&h->scales);
    ek_manifest_free(h->manifest);
    free(h);
}

const char *ek_task(const ek_handle *h) { return h ? h->manifest->task : ""; }
size_t ek_max_length(const ek_handle *h) { return h ? h->manifest->max_length : 0; }
int ek_num_layers(const ek_handle *h) { return h ? h->manifest->num_layers : 0; }
int ek_has_tokenizer(const ek_handle *h) { return h && h->tokenizer != NULL; }
