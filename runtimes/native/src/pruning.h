/* Internal: progressive cluster pruning, the Python runtime's ClusterPruning
 * (runtimes/pruning.py) decision for decision: scores mapped to [0, 1] (sigmoid for logits,
 * (1 + cos) / 2 for cosines, probabilities clipped), the fill rule, the dispersion |std/mean|
 * against the threshold, exact 1-D k-means (dynamic programming, ties share a cluster), and
 * the boundary candidate's cluster: clusters above it accepted, below it dropped. */
#ifndef EK_PRUNING_H
#define EK_PRUNING_H

#include <stddef.h>

typedef struct ek_policy {
    int enabled;       /* 0: exact */
    double threshold;
    int clusters;
    int min_depth;
} ek_policy;

/* Parse a --prune spec ("exact", "threshold:X", "threshold:X@D", "X"); "auto" is resolved by the
 * caller from the manifest. EK_ERR_ARGUMENT with the accepted forms otherwise. */
int ek_policy_parse(const char *spec, ek_policy *out);

/* Decide over `n` undecided scores at `depth` with `open_slots` slots left. Writes to `verdict`
 * per position: 1 accept, -1 drop, 0 continue. `kind` is the scoring kind. */
int ek_policy_decide(const ek_policy *policy, const char *kind, int depth, const double *scores, size_t n,
                     size_t open_slots, int *verdict);

/* Optimal 1-D k-means labels (0 = lowest cluster) of `n` values into at most `clusters`. */
int ek_kmeans_1d(const double *values, size_t n, int clusters, int *labels);

#endif
