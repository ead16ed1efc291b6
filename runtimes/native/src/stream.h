/* Internal: walk graphs in order with at most `window` sessions resident (loaded or loading).
 *
 * A background thread loads graph i+1 .. i+window-1 while the caller computes with graph i;
 * graph i-1 is released when the caller asks for graph i, before anything new loads — the
 * Python runtime's LayerStream (runtimes/layer_stream.py), so max_resident <= window always.
 */
#ifndef EK_STREAM_H
#define EK_STREAM_H

#include <stddef.h>

#include "manifest.h"
#include "ort.h"

typedef struct ek_stream ek_stream;

int ek_stream_start(const ek_graph *const *graphs, size_t count, int window, int threads, ek_stream **out);
/* The session of graph `index` (indices ascending, from 0), waiting for its load; releases the
 * previous one. A failed load returns its error (message and status as the loader set them). */
int ek_stream_next(ek_stream *stream, size_t index, ek_session **session);
/* Stop loading, release every session, join the thread; returns the most resident at once and
 * the sessions it loaded. Safe on NULL. */
void ek_stream_stop(ek_stream *stream, size_t *max_resident, size_t *loads);

#endif
