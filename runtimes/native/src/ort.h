/* Internal: onnxruntime sessions through its C API (the version of the header this was built
 * with, served by the Python wheel's libonnxruntime).
 *
 * One process-wide OrtEnv with a shared CPU arena (as the Python runtime: one arena for all
 * sessions); session options as the Python runtime's tuned CPU sessions (no spinning, no
 * pre-packing, arena on, memory patterns off). Every session is checked right after it is
 * created: its input names are its manifest entry's (as a set) and its outputs the entry's in
 * order, else EK_ERR_INTEGRITY naming the graph — the file is not the graph its entry describes.
 */
#ifndef EK_ORT_H
#define EK_ORT_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

typedef struct ek_session ek_session;

typedef struct ek_feed {
    const char *name;
    char type;           /* 'f' float32, 'l' int64 */
    void *data;          /* C order, owned by the caller until ek_session_run returns */
    int64_t shape[4];
    size_t ndim;
} ek_feed;

typedef struct ek_output {
    float *data;         /* malloc'd copy of output 0 (float32) */
    int64_t shape[4];
    size_t ndim;
} ek_output;

/* A session of `graph` with `threads` intra-op threads (0: onnxruntime's default). */
int ek_session_load(const ek_graph *graph, int threads, ek_session **out);
/* Run with `feeds` (every input the graph takes); output 0 into `out` (free out->data). */
int ek_session_run(ek_session *session, const ek_feed *feeds, size_t n_feeds, ek_output *out);
/* The graph's input names, in the session's order. */
size_t ek_session_input_count(const ek_session *session);
const char *ek_session_input_name(const ek_session *session, size_t index);
void ek_session_release(ek_session *session);

#endif
