/* The layer stream with a prefetch thread (stream.h). */
#include "stream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit.h"
#include "error.h"

struct ek_stream {
    const ek_graph *const *graphs;
    size_t count, next, resident, max_resident, loads;
    int window, threads, stop;
    ek_session **sessions;
    int *ready, *status;
    char (*messages)[1024];
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t thread;
};

static void *prefetch(void *arg) {
    ek_stream *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stop && s->next < s->count) {
        while (!s->stop && s->resident >= (size_t)s->window) pthread_cond_wait(&s->changed, &s->lock);
        if (s->stop) break;
        size_t index = s->next++;
        s->resident++;
        if (s->resident > s->max_resident) s->max_resident = s->resident;
        pthread_mutex_unlock(&s->lock);
        ek_session *session = NULL;
        int status = ek_session_load(s->graphs[index], s->threads, &session);
        pthread_mutex_lock(&s->lock);
        s->sessions[index] = session;
        s->status[index] = status;
        if (status) snprintf(s->messages[index], sizeof s->messages[index], "%s", ek_last_error());
        else s->loads++;
        s->ready[index] = 1;
        pthread_cond_broadcast(&s->changed);
        if (status) break; /* nothing after a failed graph is needed */
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int ek_stream_start(const ek_graph *const *graphs, size_t count, int window, int threads, ek_stream **out) {
    *out = NULL;
    ek_stream *s = calloc(1, sizeof *s);
    if (!s) return ek_fail(EK_ERR_MEMORY, "out of memory starting the layer stream");
    s->graphs = graphs;
    s->count = count;
    s->window = window;
    s->threads = threads;
    s->sessions = calloc(count, sizeof *s->sessions);
    s->ready = calloc(count, sizeof *s->ready);
    s->status = calloc(count, sizeof *s->status);
    s->messages = calloc(count, sizeof *s->messages);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    if (!s->sessions || !s->ready || !s->status || !s->messages || pthread_create(&s->thread, NULL, prefetch, s)) {
        free(s->sessions); free(s->ready); free(s->status); free(s->messages);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->changed);
        free(s);
        return ek_fail(EK_ERR_MEMORY, "cannot start the layer stream's prefetch thread");
    }
    *out = s;
    return EK_OK;
}

static void release_locked(ek_stream *s, size_t index) {
    if (s->ready[index] && s->sessions[index]) ek_session_release(s->sessions[index]);
    if (s->ready[index]) {
        s->sessions[index] = NULL;
        s->ready[index] = 0;
        s->resident--;
        pthread_cond_broadcast(&s->changed);
    }
}

int ek_stream_next(ek_stream *s, size_t index, ek_session **session) {
    pthread_mutex_lock(&s->lock);
    if (index > 0) release_locked(s, index - 1);
    while (!s->ready[index]) pthread_cond_wait(&s->changed, &s->lock);
    int status = s->status[index];
    *session = s->sessions[index];
    if (status) ek_fail(status, "%s", s->messages[index]);
    pthread_mutex_unlock(&s->lock);
    return status;
}

void ek_stream_stop(ek_stream *s, size_t *max_resident, size_t *loads) {
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->count; ++i) release_locked(s, i);
    if (max_resident) *max_resident = s->max_resident;
    if (loads) *loads = s->loads;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    free(s->sessions); free(s->ready); free(s->status); free(s->messages);
    free(s);
}
