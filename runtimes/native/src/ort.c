/* onnxruntime sessions through the C API (ort.h). */
#include "ort.h"

#include <onnxruntime_c_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit.h"
#include "error.h"

struct ek_session {
    OrtSession *session;
    const ek_graph *graph;
    char **input_names;
    size_t n_inputs;
    char *output_name;
};

static const OrtApi *api;
static OrtEnv *env;
static OrtMemoryInfo *cpu_info;
static int init_status = EK_OK;
static char init_message[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* EK_ERR_RUNTIME with onnxruntime's message, releasing the status. */
static int ort_fail(OrtStatus *status, const char *what, const char *graph) {
    int result = ek_fail(EK_ERR_RUNTIME, "onnxruntime could not %s%s%s: %s", what, graph ? " graph " : "",
                         graph ? graph : "", api->GetErrorMessage(status));
    api->ReleaseStatus(status);
    return result;
}

static void initialise(void) {
    const OrtApiBase *base = OrtGetApiBase();
    api = base ? base->GetApi(ORT_API_VERSION) : NULL;
    if (!api) {
        init_status = EK_ERR_RUNTIME;
        snprintf(init_message, sizeof init_message, "the onnxruntime library (%s) does not serve C API version %d; "
                 "link onnxruntime 1.%d or newer", base ? base->GetVersionString() : "?", ORT_API_VERSION, ORT_API_VERSION);
        return;
    }
    OrtStatus *status = api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "edgekit", &env);
    if (!status) status = api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu_info);
    OrtArenaCfg *arena = NULL;
    if (!status) status = api->CreateArenaCfgV2(NULL, NULL, 0, &arena);
    if (!status) status = api->CreateAndRegisterAllocator(env, cpu_info, arena);
    if (arena) api->ReleaseArenaCfg(arena);
    if (status) {
        init_status = EK_ERR_RUNTIME;
        snprintf(init_message, sizeof init_message, "onnxruntime failed to start: %s", api->GetErrorMessage(status));
        api->ReleaseStatus(status);
    }
}

static int ensure_env(void) {
    pthread_once(&once, initialise);
    return init_status ? ek_fail(init_status, "%s", init_message) : EK_OK;
}

static OrtStatus *session_options(int threads, OrtSessionOptions **out) {
    OrtSessionOptions *options = NULL;
    OrtStatus *status = api->CreateSessionOptions(&options);
    if (!status) status = api->EnableCpuMemArena(options);
    if (!status) status = api->DisableMemPattern(options);
    if (!status) status = api->AddSessionConfigEntry(options, "session.intra_op.allow_spinning", "0");
    if (!status) status = api->AddSessionConfigEntry(options, "session.disable_prepacking", "1");
    if (!status) status = api->AddSessionConfigEntry(options, "session.use_env_allocators", "1");
    if (!status) status = api->SetSessionLogSeverityLevel(options, 3);
    if (!status && threads > 0) status = api->SetIntraOpNumThreads(options, threads);
    if (!status && threads > 0) status = api->SetInterOpNumThreads(options, 1);
    if (status && options) api->ReleaseSessionOptions(options);
    *out = status ? NULL : options;
    return status;
}

static char *copy_name(OrtAllocator *allocator, char *name) {
    char *copy = strdup(name);
    OrtStatus *status = api->AllocatorFree(allocator, name);
    if (status) api->ReleaseStatus(status);
    return copy;
}

/* The session's IO names against its manifest entry (ort.h). */
static int check_io(ek_session *s) {
    const ek_graph *g = s->graph;
    size_t outputs = 0;
    OrtAllocator *allocator;
    OrtStatus *status = api->GetAllocatorWithDefaultOptions(&allocator);
    if (!status) status = api->SessionGetInputCount(s->session, &s->n_inputs);
    if (!status) status = api->SessionGetOutputCount(s->session, &outputs);
    if (status) return ort_fail(status, "describe", g->name);
    s->input_names = calloc(s->n_inputs ? s->n_inputs : 1, sizeof *s->input_names);
    if (!s->input_names) return ek_fail(EK_ERR_MEMORY, "out of memory loading graph %s", g->name);
    for (size_t i = 0; i < s->n_inputs; ++i) {
        char *name;
        if ((status = api->SessionGetInputName(s->session, i, allocator, &name))) return ort_fail(status, "describe", g->name);
        s->input_names[i] = copy_name(allocator, name);
    }
    int same = s->n_inputs == g->n_inputs && outputs == g->n_outputs;
    for (size_t i = 0; same && i < g->n_inputs; ++i) {
        int found = 0;
        for (size_t j = 0; j < s->n_inputs; ++j) found |= !strcmp(g->inputs[i].name, s->input_names[j]);
        same = found;
    }
    for (size_t i = 0; same && i < outputs; ++i) {
        char *name;
        if ((status = api->SessionGetOutputName(s->session, i, allocator, &name))) return ort_fail(status, "describe", g->name);
        same = !strcmp(name, g->outputs[i].name);
        if (i == 0) s->output_name = strdup(name);
        if ((status = api->AllocatorFree(allocator, name))) api->ReleaseStatus(status);
    }
    if (!same)
        return ek_fail(EK_ERR_INTEGRITY, "graph '%s' (%s) takes other inputs or outputs than its manifest entry says: the "
                       "file is not the graph its entry describes; run `edgekit verify` and re-export the package",
                       g->name, g->relpath);
    return EK_OK;
}

int ek_session_load(const ek_graph *graph, int threads, ek_session **out) {
    *out = NULL;
    int result = ensure_env();
    if (result) return result;
    ek_session *s = calloc(1, sizeof *s);
    if (!s) return ek_fail(EK_ERR_MEMORY, "out of memory loading graph %s", graph->name);
    s->graph = graph;
    OrtSessionOptions *options;
    OrtStatus *status = session_options(threads, &options);
    if (status) { free(s); return ort_fail(status, "set up a session for", graph->name); }
    status = api->CreateSession(env, graph->path, options, &s->session);
    api->ReleaseSessionOptions(options);
    if (status) {
        free(s);
        result = ek_fail(EK_ERR_INTEGRITY, "graph '%s' (%s) is not a loadable ONNX model (%s); run `edgekit verify` and "
                         "re-export the package", graph->name, graph->relpath, api->GetErrorMessage(status));
        api->ReleaseStatus(status);
        return result;
    }
    result = check_io(s);
    if (result) { ek_session_release(s); return result; }
    *out = s;
    return EK_OK;
}

size_t ek_session_input_count(const ek_session *session) { return session->n_inputs; }

const char *ek_session_input_name(const ek_session *session, size_t index) { return session->input_names[index]; }

int ek_session_run(ek_session *s, const ek_feed *feeds, size_t n_feeds, ek_output *out) {
    memset(out, 0, sizeof *out);
    const char **names = calloc(n_feeds, sizeof *names);
    OrtValue **values = calloc(n_feeds, sizeof *values);
    OrtValue *output = NULL;
    OrtTensorTypeAndShapeInfo *info = NULL;
    int result = EK_OK;
    OrtStatus *status = NULL;
    if (!names || !values) { result = ek_fail(EK_ERR_MEMORY, "out of memory running graph %s", s->graph->name); goto done; }
    for (size_t i = 0; i < n_feeds && !status; ++i) {
        const ek_feed *f = &feeds[i];
        size_t elements = 1;
        for (size_t d = 0; d < f->ndim; ++d) elements *= (size_t)f->shape[d];
        size_t itemsize = f->type == 'f' ? sizeof(float) : sizeof(int64_t);
        ONNXTensorElementDataType type = f->type == 'f' ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
        names[i] = f->name;
        status = api->CreateTensorWithDataAsOrtValue(cpu_info, f->data, elements * itemsize, f->shape, f->ndim, type, &values[i]);
    }
    if (status) { result = ort_fail(status, "create an input tensor for", s->graph->name); goto done; }
    const char *output_names[1] = {s->output_name};
    status = api->Run(s->session, NULL, names, (const OrtValue *const *)values, n_feeds, output_names, 1, &output);
    if (status) { result = ort_fail(status, "run", s->graph->name); goto done; }
    size_t ndim = 0, elements = 0;
    ONNXTensorElementDataType type;
    status = api->GetTensorTypeAndShape(output, &info);
    if (!status) status = api->GetTensorElementType(info, &type);
    if (!status) status = api->GetDimensionsCount(info, &ndim);
    if (!status && (ndim > 4 || type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)) {
        result = ek_fail(EK_ERR_UNSUPPORTED, "graph %s returns a %zu-d tensor of element type %d; the native runtime reads "
                         "float32 outputs of at most 4 dims", s->graph->name, ndim, (int)type);
        goto done;
    }
    if (!status) status = api->GetDimensions(info, out->shape, ndim);
    if (!status) status = api->GetTensorShapeElementCount(info, &elements);
    void *data = NULL;
    if (!status) status = api->GetTensorMutableData(output, &data);
    if (status) { result = ort_fail(status, "read the output of", s->graph->name); goto done; }
    out->ndim = ndim;
    out->data = malloc(elements ? elements * sizeof(float) : 1);
    if (!out->data) { result = ek_fail(EK_ERR_MEMORY, "out of memory running graph %s", s->graph->name); goto done; }
    memcpy(out->data, data, elements * sizeof(float));
done:
    if (info) api->ReleaseTensorTypeAndShapeInfo(info);
    if (output) api->ReleaseValue(output);
    for (size_t i = 0; values && i < n_feeds; ++i)
        if (values[i]) api->ReleaseValue(values[i]);
    free(values);
    free(names);
    return result;
}

void ek_session_release(ek_session *s) {
    if (!s) return;
    if (s->session) api->ReleaseSession(s->session);
    for (size_t i = 0; s->input_names && i < s->n_inputs; ++i) free(s->input_names[i]);
    free(s->input_names);
    free(s->output_name);
    free(s);
}
