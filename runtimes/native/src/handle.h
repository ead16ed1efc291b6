/* Internal: what an open package holds (ek_handle), shared by api.c and rank.c. */
#ifndef EK_HANDLE_H
#define EK_HANDLE_H

#include "edgekit.h"
#include "manifest.h"
#include "npy.h"
#include "ort.h"
#include "pruning.h"
#include "tokenizer.h"

struct ek_handle {
    ek_manifest *manifest;
    ek_npy table;        /* [vocab, E], float32 or int8 */
    ek_npy scales;       /* int8 tables: [vocab] float32 */
    ek_tokenizer *tokenizer; /* NULL when not implemented natively (ek_rank_ids only) */
    char tokenizer_error[512];
    int window, chunk, threads;
    ek_policy policy;
    char prune[64];      /* the policy as the stats name it */
    int prune_auto;
    /* window >= every graph (embeddings, layers, head): nothing streams, sessions stay open
     * across calls (the Python runtime's resident mode); slot i: graph i, the head last */
    ek_session **pinned;
    size_t n_pinned;      /* the policy came from the package's calibration (--prune auto) */
};

/* One sequence to compute (internal copy: ids and type ids owned by the pass). */
typedef struct ek_sequence {
    int64_t *ids;
    int64_t *type_ids;
    size_t length;
    int truncated;
} ek_sequence;

/* Run the pass over `n` sequences; for select packages the query is sequence n (so `n + 1` are
 * given) and `query_row` is n, else -1. Results best first. */
int ek_run_pass(ek_handle *handle, const ek_sequence *sequences, size_t n, long query_row, size_t top_k,
                ek_results **out);

#endif
