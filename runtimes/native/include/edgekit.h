/* edgekit.h — the native edgekit runtime: open an edge package (format v2), rank candidates.
 *
 * A plain C ABI over onnxruntime's C API, for apps that cannot ship Python (Swift, Kotlin/JNI,
 * C#, Rust, C++). The package's manifest.json is the only contract (docs/FORMAT.md); the
 * runtime streams the layer graphs with at most `window` onnxruntime sessions resident, the
 * next one loading on a background thread, all candidates advancing layer by layer in
 * length-grouped chunks (docs/EMBEDDING.md).
 *
 * Every call returns EK_OK (0) or an error code; on error, ek_last_error() returns a one-line
 * message naming the problem and the fix (thread-local, valid until the next failing call on
 * the same thread). No call aborts the process on bad input.
 *
 * Threads: one handle serves one call at a time (serialise calls on a shared handle).
 */
#ifndef EDGEKIT_H
#define EDGEKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EK_VERSION "0.1.0"

typedef enum ek_status {
    EK_OK = 0,
    EK_ERR_ARGUMENT = 1,    /* a bad argument: empty query, top_k 0, window 0, NULL pointer */
    EK_ERR_PACKAGE = 2,     /* not a (supported) package: manifest missing, malformed, refused */
    EK_ERR_INTEGRITY = 3,   /* a package file is missing, unreadable or not what the manifest says */
    EK_ERR_UNSUPPORTED = 4, /* a valid package this runtime cannot run (named feature); the fix is named */
    EK_ERR_RUNTIME = 5,     /* onnxruntime failed (message includes its text) */
    EK_ERR_NONFINITE = 6,   /* a graph produced NaN or inf */
    EK_ERR_MEMORY = 7       /* out of memory */
} ek_status;

typedef struct ek_handle ek_handle;

typedef struct ek_options {
    int window;           /* graphs resident at once, >= 1 (default 2) */
    int chunk;            /* sequences per graph run, >= 1 (default 16) */
    int threads;          /* onnxruntime intra-op threads; 0 = onnxruntime's default */
    const char *provider; /* "cpu" (default; NULL means cpu) */
    const char *prune;    /* NULL or "exact" (default), "auto", "threshold:X" or "threshold:X@D" */
    int verify;           /* 1 (default): ek_open checks the sha256 of every file a run reads; 0 skips it
                           * (containment, sizes and the manifest's digest are always checked) */
} ek_options;

/* The defaults above. */
void ek_options_default(ek_options *options);

/* One tokenised sequence brought by the host app (ek_rank_ids): `length` token ids and, when
 * the package feeds segment ids, `type_ids` (NULL: zeros). */
typedef struct ek_tokens {
    const int64_t *ids;
    const int64_t *type_ids;
    size_t length;
} ek_tokens;

typedef struct ek_result {
    size_t index;         /* the candidate's position in the input */
    double score;         /* logit, probability or cosine, as the package's scoring says */
    int decided_at_layer; /* layers computed when it was accepted (num_layers if never pruned) */
} ek_result;

typedef struct ek_stats {
    double latency_ms;
    double peak_rss_mb;
    size_t candidates, top_k_requested, top_k_returned, truncated;
    size_t graphs_loaded, max_resident_graphs, chunks, tokens, padded_tokens;
    size_t candidate_layers, candidate_layers_exact;
    int window, chunk, layers;
    char prune[64];
} ek_stats;

typedef struct ek_results {
    ek_result *items; /* best first */
    size_t count;
    ek_stats stats;
} ek_results;

/* Open the package at `package_dir`: read and check its manifest (the checks of the Python
 * runtime: format and version, the manifest digest, roles, relative contained paths, file
 * sizes, and with options->verify every file's sha256), memory-map the
 * embedding table, load the tokenizer when this runtime implements it. `options` may be NULL. */
int ek_open(const char *package_dir, const ek_options *options, ek_handle **out);

/* Rank `n` candidate texts against `query`; the best min(top_k, n), best first. Needs a package
 * whose tokenizer this runtime implements (WordPiece, BERT normaliser); otherwise
 * EK_ERR_UNSUPPORTED naming ek_rank_ids. Free the results with ek_results_free. */
int ek_rank(ek_handle *handle, const char *query, const char *const *candidates, size_t n, size_t top_k,
            ek_results **out);

/* Rank pre-tokenised sequences (any family). Cross-encoders and decoder rerankers ("rerank"
 * packages): `sequences` are the n encoded (query, candidate) pairs and `query` is NULL.
 * Bi-encoders ("select" packages): `sequences` are the n candidates and `query` the query. No
 * sequence may exceed the package's max_length (truncate as its tokenizer does). */
int ek_rank_ids(ek_handle *handle, const ek_tokens *query, const ek_tokens *sequences, size_t n, size_t top_k,
                ek_results **out);

void ek_results_free(ek_results *results);
void ek_close(ek_handle *handle);

/* The last error's one-line message on this thread ("" when none). */
const char *ek_last_error(void);

/* Package facts a host needs: "rerank" or "select"; max tokens per sequence; layers. */
const char *ek_task(const ek_handle *handle);
size_t ek_max_length(const ek_handle *handle);
int ek_num_layers(const ek_handle *handle);
/* 1 when ek_rank can tokenise this package's texts natively. */
int ek_has_tokenizer(const ek_handle *handle);

#ifdef __cplusplus
}
#endif
#endif /* EDGEKIT_H */
