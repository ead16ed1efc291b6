/* The ranking pass: monolithic forwarding over a streamed package (runtimes/selector.py and
 * runtimes/chunks.py, decision for decision).
 *
 * Every candidate passes layer l before any passes layer l+1; inside a graph the rows run in
 * chunks of `chunk`, grouped by length (ties by row), each padded only to its own longest row.
 * Hidden states are kept per row, trimmed to its length. With a pruning policy the head scores
 * the undecided rows between layers; accepted and dropped rows stop computing, and when none is
 * undecided the pass stops (no graph past the one already prefetched loads). Every kept output
 * is checked finite before anyone reads it.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "error.h"
#include "handle.h"
#include "ort.h"
#include "stream.h"

typedef struct accepted_row {
    size_t row;
    int depth;
    double score;
} accepted_row;

typedef struct pass {
    ek_handle *h;
    const ek_manifest *m;
    const ek_sequence *seqs;
    long query_row;
    size_t n_rows;      /* candidates, plus the query for select packages */
    float **hidden;     /* per row: [length, width] */
    size_t width;
    size_t *undecided, n_undecided;
    accepted_row *accepted;
    size_t n_accepted, top_k;
    double *final_score;
    char *has_final;
    size_t chunks, padded_tokens, candidate_layers, graphs_loaded;
} pass;

typedef struct row_key { size_t length, row; } row_key;

static int by_length(const void *a, const void *b) {
    const row_key *x = a, *y = b;
    if (x->length != y->length) return x->length < y->length ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static size_t span_start(const pass *p, size_t row, size_t length) {
    return p->m->left_padding ? length - p->seqs[row].length : 0;
}

/* The feed for input `name` of a chunk of `b` rows padded to `s`; data malloc'd into *data. */
static int build_feed(pass *p, const char *name, const size_t *group, size_t b, size_t s, ek_feed *feed) {
    const ek_manifest *m = p->m;
    memset(feed, 0, sizeof *feed);
    feed->name = name;
    if (!strcmp(name, "input_ids") || !strcmp(name, "token_type_ids") || !strcmp(name, "attention_mask")) {
        int64_t *data = malloc(b * s * sizeof *data);
        if (!data) return ek_fail(EK_ERR_MEMORY, "out of memory building a chunk");
        int ids = !strcmp(name, "input_ids"), types = !strcmp(name, "token_type_ids");
        for (size_t slot = 0; slot < b; ++slot) {
            const ek_sequence *q = &p->seqs[group[slot]];
            size_t start = span_start(p, group[slot], s);
            for (size_t t = 0; t < s; ++t) {
                int real = t >= start && t < start + q->length;
                int64_t value = ids ? m->pad_token_id : 0;
                if (real) value = ids ? q->ids[t - start] : types ? (m->type_ids ? q->type_ids[t - start] : 0) : 1;
                data[slot * s + t] = value;
            }
        }
        *feed = (ek_feed){name, 'l', data, {(int64_t)b, (int64_t)s}, 2};
        return EK_OK;
    }
    if (!strcmp(name, "inputs_embeds")) {
        size_t e = m->table_cols;
        float *data = malloc(b * s * e * sizeof *data);
        if (!data) return ek_fail(EK_ERR_MEMORY, "out of memory building a chunk");
        for (size_t slot = 0; slot < b; ++slot) {
            const ek_sequence *q = &p->seqs[group[slot]];
            size_t start = span_start(p, group[slot], s);
            for (size_t t = 0; t < s; ++t) {
                int real = t >= start && t < start + q->length;
                int64_t id = real ? q->ids[t - start] : m->pad_token_id;
                float *to = data + (slot * s + t) * e;
                if (p->h->table.dtype == 'f') {
                    memcpy(to, (const float *)p->h->table.data + (size_t)id * e, e * sizeof(float));
                } else { /* int8 rows: values[r] * scales[r] in float32, for the gathered rows only */
                    const signed char *row = (const signed char *)p->h->table.data + (size_t)id * e;
                    float scale = ((const float *)p->h->scales.data)[id];
                    for (size_t c = 0; c < e; ++c) to[c] = (float)row[c] * scale;
                }
            }
        }
        *feed = (ek_feed){name, 'f', data, {(int64_t)b, (int64_t)s, (int64_t)e}, 3};
        return EK_OK;
    }
    if (!strcmp(name, "hidden_states")) {
        size_t w = p->width;
        float *data = calloc(b * s * w, sizeof *data);
        if (!data) return ek_fail(EK_ERR_MEMORY, "out of memory building a chunk");
        for (size_t slot = 0; slot < b; ++slot) {
            size_t row = group[slot], start = span_start(p, row, s);
            memcpy(data + (slot * s + start) * w, p->hidden[row], p->seqs[row].length * w * sizeof(float));
        }
        *feed = (ek_feed){name, 'f', data, {(int64_t)b, (int64_t)s, (int64_t)w}, 3};
        return EK_OK;
    }
    if (!strcmp(name, "attention_bias")) { /* [B,1,S,S]: 0 where key <= query and the key is real */
        float *data = malloc(b * s * s * sizeof *data);
        if (!data) return ek_fail(EK_ERR_MEMORY, "out of memory building a chunk");
        for (size_t slot = 0; slot < b; ++slot) {
            size_t start = span_start(p, group[slot], s), stop = start + p->seqs[group[slot]].length;
            for (size_t i = 0; i < s; ++i)
                for (size_t j = 0; j < s; ++j)
                    data[(slot * s + i) * s + j] = (j <= i && j >= start && j < stop) ? 0.0f : -FLT_MAX;
        }
        *feed = (ek_feed){name, 'f', data, {(int64_t)b, 1, (int64_t)s, (int64_t)s}, 4};
        return EK_OK;
    }
    if (!strcmp(name, "cos") || !strcmp(name, "sin")) {
        if (!m->has_rotary)
            return ek_fail(EK_ERR_PACKAGE, "a graph takes cos/sin but the package has no rotary section; re-export it");
        size_t d = (size_t)m->rotary_dim, half = d / 2;
        float *data = malloc(b * s * d * sizeof *data);
        if (!data) return ek_fail(EK_ERR_MEMORY, "out of memory building a chunk");
        int cosine = !strcmp(name, "cos");
        for (size_t t = 0; t < s; ++t)
            for (size_t i = 0; i < half; ++i) { /* float32 as the Python runtime: p * theta^(-2i/dim) */
                float exponent = (float)(2 * i) / (float)d;
                float inv_freq = 1.0f / powf((float)m->rotary_theta, exponent);
                float angle = (float)t * inv_freq;
                float value = (cosine ? cosf(angle) : sinf(angle)) * (float)m->rotary_scaling;
                data[t * d + i] = value;
                data[t * d + half + i] = value;
            }
        for (size_t slot = 1; slot < b; ++slot) memcpy(data + slot * s * d, data, s * d * sizeof(float));
        *feed = (ek_feed){name, 'f', data, {(int64_t)b, (int64_t)s, (int64_t)d}, 3};
        return EK_OK;
    }
    return ek_fail(EK_ERR_UNSUPPORTED, "a graph takes input '%.60s', which the native runtime does not know how to feed; "
                   "run the package with the Python runtime", name);
}

static int nonfinite(const ek_graph *g, size_t row, const float *values, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (!isfinite(values[i]))
            return ek_fail(EK_ERR_NONFINITE, "graph %s (%s) produced %s for input sequence %zu: its weights are corrupt or "
                           "its values overflow the package's dtype; re-export the package (`edgekit verify PKG` says "
                           "whether its files changed since the export)", g->name, g->relpath,
                           isnan(values[i]) ? "NaN" : "inf", row);
    return EK_OK;
}

/* Run `session` over `rows`: per_token outputs replace the rows' hidden states; otherwise each
 * row's output vector goes to outputs[row] (malloc'd, *dim values). */
static int run_graph(pass *p, ek_session *session, const ek_graph *g, const size_t *rows, size_t n, int per_token,
                     float **outputs, size_t *dim) {
    row_key *keys = malloc((n ? n : 1) * sizeof *keys);
    size_t *group = malloc((n ? n : 1) * sizeof *group);
    size_t n_inputs = ek_session_input_count(session);
    ek_feed *feeds = calloc(n_inputs, sizeof *feeds);
    int status = (!keys || !group || !feeds) ? ek_fail(EK_ERR_MEMORY, "out of memory running %s", g->name) : EK_OK;
    for (size_t i = 0; !status && i < n; ++i) keys[i] = (row_key){p->seqs[rows[i]].length, rows[i]};
    if (!status) qsort(keys, n, sizeof *keys, by_length);
    size_t chunk = (size_t)p->h->chunk;
    for (size_t first = 0; !status && first < n; first += chunk) {
        size_t b = n - first < chunk ? n - first : chunk, s = keys[first + b - 1].length;
        for (size_t slot = 0; slot < b; ++slot) group[slot] = keys[first + slot].row;
        for (size_t i = 0; !status && i < n_inputs; ++i)
            status = build_feed(p, ek_session_input_name(session, i), group, b, s, &feeds[i]);
        ek_output out = {0};
        if (!status) status = ek_session_run(session, feeds, n_inputs, &out);
        for (size_t i = 0; i < n_inputs; ++i) { free(feeds[i].data); feeds[i].data = NULL; }
        if (status) break;
        if (!strcmp(g->role, "embeddings")) p->padded_tokens += b * s;
        p->chunks++;
        if (per_token) {
            if (out.ndim != 3 || out.shape[0] != (int64_t)b || out.shape[1] != (int64_t)s ||
                out.shape[2] != (int64_t)p->m->hidden_size) {
                status = ek_fail(EK_ERR_INTEGRITY, "graph %s returned a tensor of shape other than [batch, sequence, %d]; "
                                 "re-export the package", g->name, p->m->hidden_size);
            } else {
                size_t w = (size_t)out.shape[2];
                p->width = w;
                for (size_t slot = 0; !status && slot < b; ++slot) {
                    size_t row = group[slot], length = p->seqs[row].length, start = span_start(p, row, s);
                    float *kept = malloc(length * w * sizeof *kept);
                    if (!kept) { status = ek_fail(EK_ERR_MEMORY, "out of memory running %s", g->name); break; }
                    memcpy(kept, out.data + (slot * s + start) * w, length * w * sizeof(float));
                    free(p->hidden[row]);
                    p->hidden[row] = kept;
                    status = nonfinite(g, row, kept, length * w);
                }
            }
        } else {
            size_t elements = 1;
            for (size_t d = 0; d < out.ndim; ++d) elements *= (size_t)out.shape[d];
            if (out.ndim < 1 || out.shape[0] != (int64_t)b || elements == 0 || (*dim && elements / b != *dim)) {
                status = ek_fail(EK_ERR_INTEGRITY, "graph %s returned a tensor of the wrong shape (or a size that changes "
                                 "between chunks); re-export the package", g->name);
            } else {
                *dim = elements / b;
                for (size_t slot = 0; !status && slot < b; ++slot) {
                    size_t row = group[slot];
                    free(outputs[row]);
                    outputs[row] = malloc(*dim * sizeof(float));
                    if (!outputs[row]) { status = ek_fail(EK_ERR_MEMORY, "out of memory running %s", g->name); break; }
                    memcpy(outputs[row], out.data + slot * *dim, *dim * sizeof(float));
                    status = nonfinite(g, row, outputs[row], *dim);
                }
            }
        }
        free(out.data);
    }
    free(keys); free(group); free(feeds);
    return status;
}

/* Head scores of `rows` (cosine with the query's embedding for select packages). */
static int score_rows(pass *p, ek_session *head, const ek_graph *g, const size_t *rows, size_t n, double *scores) {
    size_t total = n + (p->query_row >= 0), dim = 0;
    size_t *with_query = malloc(total * sizeof *with_query);
    float **outputs = calloc(p->n_rows, sizeof *outputs); /* by row */
    int status = (!with_query || !outputs) ? ek_fail(EK_ERR_MEMORY, "out of memory scoring") : EK_OK;
    if (!status) {
        memcpy(with_query, rows, n * sizeof *rows);
        if (p->query_row >= 0) with_query[n] = (size_t)p->query_row;
        status = run_graph(p, head, g, with_query, total, 0, outputs, &dim);
    }
    for (size_t i = 0; !status && i < n; ++i) {
        const float *v = outputs[rows[i]];
        if (p->query_row < 0) {
            if (dim != 1) { status = ek_fail(EK_ERR_INTEGRITY, "head %s returns %zu values per sequence, not a score; "
                                             "re-export the package", g->name, dim); break; }
            scores[i] = (double)v[0];
        } else { /* cosine in double precision, as the Python runtime */
            const float *q = outputs[p->query_row];
            double dot = 0, nv = 0, nq = 0;
            for (size_t c = 0; c < dim; ++c) { dot += (double)v[c] * q[c]; nv += (double)v[c] * v[c]; nq += (double)q[c] * q[c]; }
            double norms = sqrt(nv) * sqrt(nq);
            scores[i] = dot / (norms > 1e-12 ? norms : 1e-12);
        }
    }
    for (size_t i = 0; outputs && i < p->n_rows; ++i) free(outputs[i]);
    free(outputs);
    free(with_query);
    return status;
}

static const ek_graph *head_for_depth(const ek_manifest *m, int depth) {
    for (size_t i = 0; i < m->n_graphs; ++i)
        if (!strcmp(m->graphs[i].role, "depth_head") && m->graphs[i].index == depth) return &m->graphs[i];
    return m->head;
}

/* Score the undecided at `depth` and apply the policy (selector.py `_decide`). */
static int decide(pass *p, ek_session *head, const ek_graph *g, int depth) {
    size_t n = p->n_undecided;
    double *scores = malloc(n * sizeof *scores);
    int *verdict = malloc(n * sizeof *verdict);
    int status = (!scores || !verdict) ? ek_fail(EK_ERR_MEMORY, "out of memory pruning") : EK_OK;
    if (!status) status = score_rows(p, head, g, p->undecided, n, scores);
    if (!status)
        status = ek_policy_decide(&p->h->policy, p->m->scoring_kind, depth, scores, n, p->top_k - p->n_accepted, verdict);
    if (!status) {
        /* accepted: best score first, ties by row (selector.py) */
        size_t first = p->n_accepted;
        for (size_t i = 0; i < n; ++i)
            if (verdict[i] == 1) p->accepted[p->n_accepted++] = (accepted_row){p->undecided[i], depth, scores[i]};
        for (size_t i = first + 1; i < p->n_accepted; ++i)
            for (size_t j = i; j > first; --j) {
                accepted_row *a = &p->accepted[j - 1], *b = &p->accepted[j];
                if (b->score > a->score || (b->score == a->score && b->row < a->row)) {
                    accepted_row t = *a; *a = *b; *b = t;
                } else break;
            }
        size_t kept = 0;
        for (size_t i = 0; i < n; ++i)
            if (verdict[i] == 0) p->undecided[kept++] = p->undecided[i];
        p->n_undecided = kept;
    }
    free(scores); free(verdict);
    return status;
}

/* The kept-open session of slot `slot` (resident mode), created on first use. */
static int pinned(ek_handle *h, size_t slot, const ek_graph *g, ek_session **session, size_t *loaded) {
    if (!h->pinned[slot]) {
        int status = ek_session_load(g, h->threads, &h->pinned[slot]);
        if (status) return status;
        ++*loaded;
    }
    *session = h->pinned[slot];
    return EK_OK;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

typedef struct final_key { double score; size_t row; } final_key;

static int by_final(const void *a, const void *b) {
    const final_key *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* The selected set, in the Python runtime's order (selector.py `_results`). */
static int collect(pass *p, ek_results *r) {
    size_t layers = (size_t)p->m->num_layers;
    size_t open_slots = p->top_k > p->n_accepted ? p->top_k - p->n_accepted : 0;
    final_key *finalists = malloc((p->n_undecided ? p->n_undecided : 1) * sizeof *finalists);
    r->items = calloc(p->top_k ? p->top_k : 1, sizeof *r->items);
    if (!finalists || !r->items) { free(finalists); return ek_fail(EK_ERR_MEMORY, "out of memory collecting results"); }
    for (size_t i = 0; i < p->n_undecided; ++i) finalists[i] = (final_key){p->final_score[p->undecided[i]], p->undecided[i]};
    qsort(finalists, p->n_undecided, sizeof *finalists, by_final);
    size_t take = p->n_undecided < open_slots ? p->n_undecided : open_slots;
    for (size_t i = 0; i < p->n_accepted; ++i)
        r->items[r->count++] = (ek_result){p->accepted[i].row, p->accepted[i].score, p->accepted[i].depth};
    for (size_t i = 0; i < take; ++i)
        r->items[r->count++] = (ek_result){finalists[i].row, finalists[i].score, (int)layers};
    free(finalists);
    return EK_OK;
}

/* The process's peak resident set: VmHWM on Linux (getrusage's maxrss there can report the peak
 * of the process that started this one), getrusage elsewhere. */
static double peak_rss_mb(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (status && fgets(line, sizeof line, status))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    if (status) fclose(status);
    if (kib >= 0) return (double)kib / 1024.0;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_maxrss / 1024.0;
}

int ek_run_pass(ek_handle *h, const ek_sequence *seqs, size_t n, long query_row, size_t top_k, ek_results **out) {
    double started = now_ms();
    const ek_manifest *m = h->manifest;
    size_t rows_total = n + (query_row >= 0);
    pass p = {.h = h, .m = m, .seqs = seqs, .query_row = query_row, .n_rows = rows_total, .top_k = top_k < n ? top_k : n};
    p.hidden = calloc(rows_total, sizeof *p.hidden);
    p.undecided = malloc(n * sizeof *p.undecided);
    p.accepted = malloc(n * sizeof *p.accepted);
    p.final_score = calloc(n, sizeof *p.final_score);
    p.has_final = calloc(n, 1);
    size_t *rows = malloc(rows_total * sizeof *rows);
    size_t n_graphs = (size_t)m->num_layers + 1;
    const ek_graph **graphs = malloc(n_graphs * sizeof *graphs);
    ek_results *results = calloc(1, sizeof *results);
    ek_stream *stream = NULL;
    ek_session *head = NULL, *depth_head = NULL;
    const ek_graph *depth_head_graph = NULL;
    size_t depth_heads_loaded = 0;
    int status = (!p.hidden || !p.undecided || !p.accepted || !p.final_score || !p.has_final || !rows || !graphs || !results)
                     ? ek_fail(EK_ERR_MEMORY, "out of memory starting a pass") : EK_OK;
    int pruning = h->policy.enabled && n > top_k;
    if (!status) {
        for (size_t i = 0; i < n; ++i) p.undecided[i] = i;
        p.n_undecided = n;
        graphs[0] = m->embeddings;
        for (int i = 0; i < m->num_layers; ++i) graphs[i + 1] = m->layers[i];
        if (pruning && h->pinned) status = pinned(h, n_graphs, m->head, &head, &p.graphs_loaded);
        else if (pruning) {
            status = ek_session_load(m->head, h->threads, &head);
            p.graphs_loaded += !status;
        }
    }
    if (!status && !h->pinned) status = ek_stream_start(graphs, n_graphs, h->window, h->threads, &stream);
    for (size_t index = 0; !status && index < n_graphs; ++index) {
        ek_session *session;
        status = h->pinned ? pinned(h, index, graphs[index], &session, &p.graphs_loaded)
                           : ek_stream_next(stream, index, &session);
        if (status) break;
        size_t count = 0;
        for (size_t i = 0; i < p.n_undecided; ++i) rows[count++] = p.undecided[i];
        if (query_row >= 0) rows[count++] = (size_t)query_row;
        status = run_graph(&p, session, graphs[index], rows, count, 1, NULL, NULL);
        if (status || index == 0) continue;
        int depth = (int)index;
        p.candidate_layers += p.n_undecided;
        if (pruning && depth < m->num_layers && depth >= h->policy.min_depth && p.n_undecided) {
            const ek_graph *scorer_graph = head_for_depth(m, depth);
            ek_session *scorer = head;
            if (scorer_graph != m->head) {
                if (depth_head_graph != scorer_graph) { /* per-depth heads load on first use */
                    ek_session_release(depth_head);
                    depth_head = NULL;
                    status = ek_session_load(scorer_graph, h->threads, &depth_head);
                    if (status) break;
                    depth_head_graph = scorer_graph;
                    depth_heads_loaded++;
                }
                scorer = depth_head;
            }
            status = decide(&p, scorer, scorer_graph, depth);
        }
        if (!status && p.n_undecided == 0) break; /* all decided: later layers never load */
    }
    size_t max_resident = 0, loads = 0;
    ek_stream_stop(stream, &max_resident, &loads);
    p.graphs_loaded += loads + depth_heads_loaded;
    if (!status && !head && h->pinned) status = pinned(h, n_graphs, m->head, &head, &p.graphs_loaded);
    else if (!status && !head) {
        status = ek_session_load(m->head, h->threads, &head);
        p.graphs_loaded += !status;
    }
    if (!status && p.n_undecided) {
        double *scores = malloc(p.n_undecided * sizeof *scores);
        status = scores ? score_rows(&p, head, m->head, p.undecided, p.n_undecided, scores)
                        : ek_fail(EK_ERR_MEMORY, "out of memory scoring");
        for (size_t i = 0; !status && i < p.n_undecided; ++i) {
            p.final_score[p.undecided[i]] = scores[i];
            p.has_final[p.undecided[i]] = 1;
        }
        free(scores);
    }
    if (!h->pinned) ek_session_release(head);
    ek_session_release(depth_head);
    if (!status) status = collect(&p, results);
    if (!status) {
        ek_stats *st = &results->stats;
        st->latency_ms = now_ms() - started;
        st->peak_rss_mb = peak_rss_mb();
        st->candidates = n;
        st->top_k_requested = top_k;
        st->top_k_returned = results->count;
        for (size_t i = 0; i < n; ++i) st->truncated += seqs[i].truncated != 0;
        st->graphs_loaded = p.graphs_loaded;
        size_t open = 0;
        for (size_t i = 0; h->pinned && i < h->n_pinned; ++i) open += h->pinned[i] != NULL;
        st->max_resident_graphs = h->pinned ? open : max_resident + (pruning ? 1 : 0) + (depth_heads_loaded ? 1 : 0);
        st->chunks = p.chunks;
        for (size_t i = 0; i < rows_total; ++i) st->tokens += seqs[i].length;
        st->padded_tokens = p.padded_tokens;
        st->candidate_layers = p.candidate_layers;
        st->candidate_layers_exact = n * (size_t)m->num_layers;
        st->window = h->window;
        st->chunk = h->chunk;
        st->layers = m->num_layers;
        snprintf(st->prune, sizeof st->prune, "%s", pruning ? h->prune : "exact");
    }
    for (size_t i = 0; p.hidden && i < rows_total; ++i) free(p.hidden[i]);
    free(p.hidden); free(p.undecided); free(p.accepted); free(p.final_score); free(p.has_final);
    free(rows); free(graphs);
    if (status) { ek_results_free(results); return status; }
    *out = results;
    return EK_OK;
}
