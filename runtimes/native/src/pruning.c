/* Cluster pruning (pruning.h). */
#include "pruning.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit.h"
#include "error.h"

#define DEFAULT_CLUSTERS 3

int ek_policy_parse(const char *spec, ek_policy *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !strcmp(spec, "exact")) return EK_OK;
    const char *value = strncmp(spec, "threshold:", 10) == 0 ? spec + 10 : spec;
    char *end;
    double threshold = strtod(value, &end);
    long depth = 1;
    if (end != value && *end == '@') {
        char *depth_end;
        depth = strtol(end + 1, &depth_end, 10);
        if (depth_end == end + 1 || *depth_end) end = (char *)"?";
        else end = depth_end;
    }
    if (end == value || *end || !isfinite(threshold) || threshold < 0 || depth < 1)
        return ek_fail(EK_ERR_ARGUMENT, "--prune '%.60s' is not understood; use exact, auto, threshold:X or threshold:X@D "
                       "(X >= 0, D >= 1)%s", spec, strncmp(spec, "stable:", 7) ? "" : " (rank stability is not in the native runtime)");
    out->enabled = 1;
    out->threshold = threshold;
    out->clusters = DEFAULT_CLUSTERS;
    out->min_depth = (int)depth;
    return EK_OK;
}


typedef struct keyed { double value; size_t position; } keyed;

static int compare_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    return x->position < y->position ? -1 : x->position > y->position; /* stable, as numpy's argsort(kind="stable") */
}

int ek_kmeans_1d(const double *values, size_t n, int clusters, int *labels) {
    if (n == 0) return EK_OK;
    keyed *order = malloc(n * sizeof *order);
    double *prefix = calloc(n + 1, sizeof *prefix), *prefix_sq = calloc(n + 1, sizeof *prefix_sq);
    int *sorted_labels = malloc(n * sizeof *sorted_labels);
    if (!order || !prefix || !prefix_sq || !sorted_labels) {
        free(order); free(prefix); free(prefix_sq); free(sorted_labels);
        return ek_fail(EK_ERR_MEMORY, "out of memory pruning");
    }
    for (size_t i = 0; i < n; ++i) order[i] = (keyed){values[i], i};
    qsort(order, n, sizeof *order, compare_keyed);
    size_t unique = 1;
    for (size_t i = 1; i < n; ++i) unique += order[i].value != order[i - 1].value;
    size_t k = (size_t)(clusters < 1 ? 1 : clusters);
    if (k > unique) k = unique;
    for (size_t i = 0; i < n; ++i) {
        prefix[i + 1] = prefix[i] + order[i].value;
        prefix_sq[i + 1] = prefix_sq[i] + order[i].value * order[i].value;
    }
    double *cost = malloc((k + 1) * (n + 1) * sizeof *cost);
    size_t *split = calloc((k + 1) * (n + 1), sizeof *split);
    if (!cost || !split) {
        free(order); free(prefix); free(prefix_sq); free(sorted_labels); free(cost); free(split);
        return ek_fail(EK_ERR_MEMORY, "out of memory pruning");
    }
    for (size_t i = 0; i < (k + 1) * (n + 1); ++i) cost[i] = INFINITY;
    cost[0] = 0.0;
    for (size_t c = 1; c <= k; ++c)
        for (size_t stop = c; stop <= n; ++stop) {
            double best = INFINITY;
            size_t best_start = c - 1;
            for (size_t start = c - 1; start < stop; ++start) {
                double count = (double)(stop - start), total = prefix[stop] - prefix[start];
                double sse = (prefix_sq[stop] - prefix_sq[start]) - total * total / count;
                double candidate = cost[(c - 1) * (n + 1) + start] + sse;
                if (candidate < best) { best = candidate; best_start = start; } /* first minimum, as argmin */
            }
            cost[c * (n + 1) + stop] = best;
            split[c * (n + 1) + stop] = best_start;
        }
    size_t stop = n;
    for (size_t c = k; c >= 1; --c) {
        size_t start = split[c * (n + 1) + stop];
        for (size_t i = start; i < stop; ++i) sorted_labels[i] = (int)c - 1;
        stop = start;
    }
    for (size_t i = 0; i < n; ++i) labels[order[i].position] = sorted_labels[i];
    /* equal values share a label: each takes the highest label among its equals */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int top = sorted_labels[i];
        while (j < n && order[j].value == order[i].value) { if (sorted_labels[j] > top) top = sorted_labels[j]; ++j; }
        for (size_t t = i; t < j; ++t) labels[order[t].position] = top;
        i = j;
    }
    free(order); free(prefix); free(prefix_sq); free(sorted_labels); free(cost); free(split);
    return EK_OK;
}

static double normalise(double score, const char *kind) {
    if (!strcmp(kind, "cosine")) return (1.0 + score) / 2.0;
    if (!strcmp(kind, "probability")) return score < 0 ? 0 : score > 1 ? 1 : score;
    return 1.0 / (1.0 + exp(-score));
}

int ek_policy_decide(const ek_policy *p, const char *kind, int depth, const double *scores, size_t n,
                     size_t open_slots, int *verdict) {
    for (size_t i = 0; i < n; ++i) verdict[i] = 0;
    if (open_slots == 0) { for (size_t i = 0; i < n; ++i) verdict[i] = -1; return EK_OK; }
    if (n <= open_slots) { for (size_t i = 0; i < n; ++i) verdict[i] = 1; return EK_OK; }
    if (depth < p->min_depth) return EK_OK;
    double *values = malloc(n * sizeof *values);
    int *labels = malloc(n * sizeof *labels);
    keyed *ranked = malloc(n * sizeof *ranked);
    int status = (!values || !labels || !ranked) ? ek_fail(EK_ERR_MEMORY, "out of memory pruning") : EK_OK;
    double mean = 0, variance = 0;
    int finite = 1;
    for (size_t i = 0; !status && i < n; ++i) {
        values[i] = normalise(scores[i], kind);
        finite &= isfinite(values[i]);
        mean += values[i];
    }
    if (!status && finite) {
        mean /= (double)n;
        for (size_t i = 0; i < n; ++i) variance += (values[i] - mean) * (values[i] - mean);
        double spread = sqrt(variance / (double)n);
        if (mean != 0.0 && fabs(spread / mean) > p->threshold) {
            status = ek_kmeans_1d(values, n, p->clusters, labels);
            if (!status) {
                /* the boundary: the candidate that would take the last open slot (best first, ties by position) */
                for (size_t i = 0; i < n; ++i) ranked[i] = (keyed){-values[i], i};
                qsort(ranked, n, sizeof *ranked, compare_keyed);
                int boundary = labels[ranked[open_slots - 1].position];
                for (size_t i = 0; i < n; ++i) verdict[i] = labels[i] > boundary ? 1 : labels[i] < boundary ? -1 : 0;
            }
        }
    }
    free(values); free(labels); free(ranked);
    return status;
}
