/* The v2 manifest of a ranking package: read with cJSON, checked (manifest.h). */
#include "manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "digest.h"
#include "onnx_refs.h"
#include "edgekit.h"
#include "error.h"

#define MAX_MANIFEST_BYTES (64L << 20) /* as the Python runtime: read no more of an untrusted file */
#define MAX_LAYERS 4096

static char *dup(const char *text) {
    size_t n = strlen(text) + 1;
    char *copy = malloc(n);
    if (copy) memcpy(copy, text, n);
    return copy;
}

static char *join(const char *root, const char *relative) {
    size_t n = strlen(root) + strlen(relative) + 2;
    char *path = malloc(n);
    if (path) snprintf(path, n, "%s/%s", root, relative);
    return path;
}

/* A printable, bounded excerpt of an untrusted string for a one-line message. */
static const char *shown(const char *text) {
    static _Thread_local char buffers[4][96]; /* rotating: a message may show several strings */
    static _Thread_local int next;
    char *buffer = buffers[next++ % 4];
    size_t i = 0;
    for (; text && text[i] && i < sizeof buffers[0] - 4; ++i)
        buffer[i] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
    if (text && text[i]) { memcpy(buffer + i, "...", 3); i += 3; }
    buffer[i] = '\0';
    return buffer;
}

static const char *get_string(const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

#define MAX_EXACT_INTEGER 9007199254740992.0 /* 2^53: every integer up to here is exact in a double */

static int get_int(const cJSON *object, const char *key, long low, long high, long *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) || item->valuedouble < low ||
        item->valuedouble > high || item->valuedouble > MAX_EXACT_INTEGER || item->valuedouble < -MAX_EXACT_INTEGER)
        return 0; /* the last two bounds also keep the cast to long defined (LONG_MAX rounds up to 2^63) */
    *out = (long)item->valuedouble;
    return 1;
}

/* A package-relative path: relative, `/`-separated, no `..`, no empty or `.` part, printable. */
static int relative_path_ok(const char *path) {
    if (!path || !*path || path[0] == '/' || strchr(path, '\\')) return 0;
    const char *part = path;
    while (part) {
        const char *slash = strchr(part, '/');
        size_t n = slash ? (size_t)(slash - part) : strlen(part);
        if (n == 0 || (n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.')) return 0;
        part = slash ? slash + 1 : NULL;
    }
    for (const char *c = path; *c; ++c)
        if ((unsigned char)*c < 0x20) return 0;
    return 1;
}

/* Every component of root/relative exists, is no symlink, and the last is a regular file of
 * `bytes` bytes (bytes < 0: any size). */
static int check_file(const char *root, const char *relative, long long bytes, const char *label) {
    if (!relative_path_ok(relative))
        return ek_fail(EK_ERR_PACKAGE, "%s path '%s' must be relative, use '/', and hold no '..'; re-export the package",
                       label, shown(relative));
    char *path = join(root, relative);
    if (!path) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    size_t prefix = strlen(root) + 1;
    int status = EK_OK;
    for (char *c = path + prefix;; ++c) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        struct stat info;
        if (lstat(path, &info) != 0) {
            status = ek_fail(EK_ERR_INTEGRITY, "package %s is missing %s; re-export it", shown(root), shown(relative));
        } else if (S_ISLNK(info.st_mode)) {
            status = ek_fail(EK_ERR_PACKAGE, "%s %s is a symlink; a package holds its files itself: re-export it",
                             label, shown(relative));
        } else if (saved == '\0' && !S_ISREG(info.st_mode)) {
            status = ek_fail(EK_ERR_PACKAGE, "%s %s is not a regular file; re-export the package", label, shown(relative));
        } else if (saved == '\0' && bytes >= 0 && (long long)info.st_size != bytes) {
            status = ek_fail(EK_ERR_INTEGRITY, "package %s: size changed for %s; re-export it", shown(root), shown(relative));
        }
        *c = saved;
        if (status != EK_OK || saved == '\0') break;
    }
    free(path);
    return status;
}

static int is_hex64(const char *text) {
    if (!text || strlen(text) != 64) return 0;
    for (const char *c = text; *c; ++c)
        if (!strchr("0123456789abcdefABCDEF", *c)) return 0;
    return 1;
}

/* A file entry {file, sha256, bytes}: checked and recorded in m->files; its relative path in *file. */
static int check_entry(ek_manifest *m, const cJSON *entry, const char *label, const char **file) {
    long bytes = 0;
    *file = get_string(entry, "file");
    const char *sha256 = get_string(entry, "sha256");
    if (!*file || !get_int(entry, "bytes", 0, LONG_MAX, &bytes) || !is_hex64(sha256))
        return ek_fail(EK_ERR_PACKAGE, "%s: a file entry needs file, sha256 (64 hex digits) and bytes; re-export the package",
                       label);
    int status = check_file(m->root, *file, bytes, label);
    if (status) return status;
    if (m->n_files == m->files_capacity) {
        size_t capacity = m->files_capacity ? 2 * m->files_capacity : 32;
        ek_file *files = realloc(m->files, capacity * sizeof *files);
        if (!files) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
        m->files = files;
        m->files_capacity = capacity;
    }
    ek_file *record = &m->files[m->n_files++];
    record->path = join(m->root, *file);
    record->relative = dup(*file);
    for (int i = 0; i < 65; ++i) record->sha256[i] = (char)(i < 64 ? (sha256[i] | 0x20) : 0); /* lower case */
    return EK_OK;
}

int ek_manifest_verify(const ek_manifest *m) {
    for (size_t i = 0; i < m->n_files; ++i) {
        char hex[65];
        int status = ek_sha256_file(m->files[i].path, hex);
        if (status) return status;
        if (strcmp(hex, m->files[i].sha256))
            return ek_fail(EK_ERR_INTEGRITY, "package %s: hash mismatch for %s; re-export it", shown(m->root),
                           m->files[i].relative);
    }
    return EK_OK;
}

/* manifest.sha256: one line `<sha256 of manifest.json>[  manifest.json]`, matching `text`. */
static int check_digest(const ek_manifest *m, const char *text, size_t size) {
    int status = check_file(m->root, "manifest.sha256", -1, "package file");
    if (status == EK_ERR_INTEGRITY)
        return ek_fail(EK_ERR_INTEGRITY, "package %s has no manifest.sha256 (the sha256 of manifest.json written at "
                       "export); re-export the package", shown(m->root));
    if (status) return status;
    char *path = join(m->root, "manifest.sha256"), line[1100] = "";
    FILE *file = path ? fopen(path, "rb") : NULL;
    free(path);
    size_t got = file ? fread(line, 1, sizeof line - 1, file) : 0;
    if (file) fclose(file);
    line[got] = '\0';
    char digest[65] = "", name[64] = "", rest[8] = "";
    int fields = got <= 1024 ? sscanf(line, " %64[0-9a-fA-F] %63s %7s", digest, name, rest) : 0;
    int ok = fields >= 1 && fields <= 2 && strlen(digest) == 64 &&
             (fields == 1 || !strcmp(name, "manifest.json") || !strcmp(name, "*manifest.json"));
    if (!ok)
        return ek_fail(EK_ERR_INTEGRITY, "package %s: manifest.sha256 is not one line '<sha256>  manifest.json'; "
                       "re-export the package", shown(m->root));
    char actual[65];
    status = ek_sha256_bytes(text, size, actual);
    if (status) return status;
    for (int i = 0; i < 64; ++i) digest[i] |= 0x20;
    if (strcmp(actual, digest))
        return ek_fail(EK_ERR_INTEGRITY, "package %s: manifest.json does not match its digest (manifest.sha256); "
                       "re-export the package, or after an edit you made on purpose run `sha256sum manifest.json > "
                       "manifest.sha256` in it", shown(m->root));
    return EK_OK;
}

static int read_io(const cJSON *list, ek_io **out, size_t *count, const char *graph, const char *kind) {
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1 || cJSON_GetArraySize(list) > 256)
        return ek_fail(EK_ERR_PACKAGE, "graph %s: %s must be a list of 1..256 tensors; re-export the package", graph, kind);
    *count = (size_t)cJSON_GetArraySize(list);
    *out = calloc(*count, sizeof **out);
    if (!*out) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    size_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list) {
        const char *name = get_string(item, "name"), *dtype = get_string(item, "dtype");
        if (!name || !dtype)
            return ek_fail(EK_ERR_PACKAGE, "graph %s: every %s entry needs a name and a dtype; re-export the package",
                           graph, kind);
        (*out)[i].name = dup(name);
        (*out)[i].dtype = dup(dtype);
        ++i;
    }
    return EK_OK;
}

/* The graph file's external-data locations must each be one of the entry's listed files (they
 * resolve next to the .onnx file), and it may hold no EPContext node: edgekit/containment.py. */
static int check_references(const ek_graph *graph, const cJSON *files) {
    ek_onnx_refs refs;
    int status = ek_onnx_refs_read(graph->path, &refs);
    if (status) return status;
    const char *slash = strrchr(graph->relpath, '/');
    size_t folder = slash ? (size_t)(slash - graph->relpath) + 1 : 0;
    for (size_t i = 0; !status && i < refs.count; ++i) {
        const char *location = refs.locations[i];
        int listed = 0;
        const cJSON *entry;
        cJSON_ArrayForEach(entry, files) {
            const char *file = get_string(entry, "file");
            listed |= file && strlen(file) == folder + strlen(location) && !strncmp(file, graph->relpath, folder) &&
                      !strcmp(file + folder, location);
        }
        if (!relative_path_ok(location) || !listed)
            status = ek_fail(EK_ERR_PACKAGE, "graph '%s': %s reads external data from '%s', which is not one of the "
                             "graph's listed files; re-export the package; packages may not read files outside "
                             "themselves", shown(graph->name), shown(graph->relpath), shown(location));
    }
    if (!status && refs.epcontext)
        status = ek_fail(EK_ERR_PACKAGE, "graph '%s': %s has an EPContext node (a compiled blob); edgekit packages hold "
                         "portable ONNX graphs only: re-export the package", shown(graph->name), shown(graph->relpath));
    ek_onnx_refs_free(&refs);
    return status;
}

static const char *RANKING_ROLES[] = {"embeddings", "layer", "head", "depth_head"};

static int read_graph(ek_manifest *m, const cJSON *item, ek_graph *graph) {
    const char *name = get_string(item, "name"), *role = get_string(item, "role"), *path = get_string(item, "path");
    if (!name || !role || !path)
        return ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is malformed (a graph entry needs name, role and path); "
                       "re-export the package", shown(m->root));
    graph->name = dup(name);
    graph->role = dup(role);
    graph->relpath = dup(path);
    graph->path = join(m->root, path);
    graph->index = -1;
    int known = 0;
    for (size_t i = 0; i < sizeof RANKING_ROLES / sizeof *RANKING_ROLES; ++i) known |= !strcmp(role, RANKING_ROLES[i]);
    if (!known)
        return ek_fail(EK_ERR_PACKAGE, "graph %s: role %s is not one of embeddings, layer, head, depth_head; "
                       "re-export the package", shown(name), shown(role));
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(item, "index");
    long value;
    if (!strcmp(role, "layer") || !strcmp(role, "depth_head")) {
        if (!get_int(item, "index", 0, MAX_LAYERS, &value))
            return ek_fail(EK_ERR_PACKAGE, "graph %s: a %s graph needs an integer index; re-export the package",
                           shown(name), role);
        graph->index = (int)value;
    } else if (index && !cJSON_IsNull(index)) {
        return ek_fail(EK_ERR_PACKAGE, "graph %s: a %s graph has index null; re-export the package", shown(name), role);
    }
    if (!relative_path_ok(path))
        return ek_fail(EK_ERR_PACKAGE, "graph %s: path '%s' must be relative, use '/', and hold no '..'; re-export the "
                       "package", shown(name), shown(path));
    size_t n = strlen(path);
    if (n < 6 || strcmp(path + n - 5, ".onnx"))
        return ek_fail(EK_ERR_PACKAGE, "graph %s: an onnx graph's file ends with .onnx, not %s; re-export the package",
                       shown(name), shown(path));
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(item, "files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1)
        return ek_fail(EK_ERR_PACKAGE, "graph %s lists no files; re-export the package", shown(name));
    const cJSON *entry;
    int first = 1;
    cJSON_ArrayForEach(entry, files) {
        const char *file;
        char label[160];
        snprintf(label, sizeof label, "graph %s: file", shown(name));
        int status = check_entry(m, entry, label, &file);
        if (status) return status;
        if (first && strcmp(file, path))
            return ek_fail(EK_ERR_PACKAGE, "graph %s: an onnx graph lists its .onnx file %s first; re-export the package",
                           shown(name), shown(path));
        first = 0;
    }
    int status = check_references(graph, files);
    if (status) return status;
    if (cJSON_GetObjectItemCaseSensitive(item, "weights"))
        return ek_fail(EK_ERR_UNSUPPORTED, "graph %s carries shared-layer weights, which the native runtime does not "
                       "implement yet; export without --shared-layers", shown(name));
    status = read_io(cJSON_GetObjectItemCaseSensitive(item, "inputs"), &graph->inputs, &graph->n_inputs, name, "inputs");
    if (status) return status;
    return read_io(cJSON_GetObjectItemCaseSensitive(item, "outputs"), &graph->outputs, &graph->n_outputs, name, "outputs");
}

static int read_graphs(ek_manifest *m, const cJSON *graphs) {
    if (!cJSON_IsArray(graphs) || cJSON_GetArraySize(graphs) < 1)
        return ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is malformed (graphs must be a non-empty list); re-export the package",
                       shown(m->root));
    size_t total = (size_t)cJSON_GetArraySize(graphs), onnx = 0, other = 0;
    m->graphs = calloc(total, sizeof *m->graphs);
    if (!m->graphs) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    const cJSON *item;
    cJSON_ArrayForEach(item, graphs) {
        const char *format = get_string(item, "format");
        if (format && !strcmp(format, "mlpackage")) { ++other; continue; } /* Core ML twins: not ours */
        if (format && strcmp(format, "onnx"))
            return ek_fail(EK_ERR_PACKAGE, "graph %s: format %s is not one of onnx, mlpackage; re-export the package",
                           shown(get_string(item, "name")), shown(format));
        int status = read_graph(m, item, &m->graphs[onnx]);
        ++onnx;
        m->n_graphs = onnx;
        if (status) return status;
    }
    if (onnx == 0 && other > 0)
        return ek_fail(EK_ERR_UNSUPPORTED, "package %s holds Core ML graphs only; the native runtime runs ONNX graphs: "
                       "export with --format onnx or onnx,coreml", shown(m->root));
    for (size_t i = 0; i < onnx; ++i)
        for (size_t j = 0; j < i; ++j) {
            if (!strcmp(m->graphs[i].name, m->graphs[j].name))
                return ek_fail(EK_ERR_PACKAGE, "graph %s is listed twice (graph names are unique); re-export the package",
                               shown(m->graphs[i].name));
            if (!strcmp(m->graphs[i].role, m->graphs[j].role) && m->graphs[i].index == m->graphs[j].index)
                return ek_fail(EK_ERR_PACKAGE, "graph %s: role %s with index %d is taken by another graph; re-export the package",
                               shown(m->graphs[i].name), m->graphs[i].role, m->graphs[i].index);
        }
    return EK_OK;
}

static int find_roles(ek_manifest *m) {
    m->layers = calloc((size_t)m->num_layers, sizeof *m->layers);
    if (!m->layers) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    for (size_t i = 0; i < m->n_graphs; ++i) {
        const ek_graph *g = &m->graphs[i];
        if (!strcmp(g->role, "embeddings")) m->embeddings = g;
        else if (!strcmp(g->role, "head")) m->head = g;
        else if (!strcmp(g->role, "layer")) {
            if (g->index >= m->num_layers)
                return ek_fail(EK_ERR_PACKAGE, "layer graphs must have indices 0..%d, got %d; re-export the package",
                               m->num_layers - 1, g->index);
            m->layers[g->index] = g;
        } else if (!strcmp(g->role, "depth_head") && strcmp(m->task, "rerank")) {
            return ek_fail(EK_ERR_PACKAGE, "depth_head graphs are for rerank packages; re-export the package");
        }
    }
    if (!m->embeddings) return ek_fail(EK_ERR_PACKAGE, "the onnx graphs have no 'embeddings' graph; re-export the package");
    if (!m->head) return ek_fail(EK_ERR_PACKAGE, "the onnx graphs have no 'head' graph; re-export the package");
    for (int i = 0; i < m->num_layers; ++i)
        if (!m->layers[i])
            return ek_fail(EK_ERR_PACKAGE, "layer graphs must have indices 0..%d, layer %d is missing; re-export the package",
                           m->num_layers - 1, i);
    for (size_t i = 0; i < m->n_graphs; ++i) {
        const ek_graph *g = &m->graphs[i];
        if (!strcmp(g->role, "embeddings")) continue;
        if (strcmp(g->inputs[0].name, "hidden_states"))
            return ek_fail(EK_ERR_PACKAGE, "graph %s: a %s graph takes hidden_states first; re-export the package",
                           shown(g->name), g->role);
        if (g->n_outputs != 1)
            return ek_fail(EK_ERR_PACKAGE, "graph %s: a %s graph has one output, not %zu; re-export the package",
                           shown(g->name), g->role, g->n_outputs);
    }
    return EK_OK;
}

static int read_tokenizer(ek_manifest *m, const cJSON *tokenizer) {
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(tokenizer, "files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1)
        return ek_fail(EK_ERR_PACKAGE, "tokenizer must list its files (tokenizer.json first); re-export the package");
    const cJSON *entry;
    int first = 1;
    cJSON_ArrayForEach(entry, files) {
        const char *file;
        int status = check_entry(m, entry, "tokenizer file", &file);
        if (status) return status;
        if (first) m->tokenizer_path = join(m->root, file);
        first = 0;
    }
    long pad;
    if (!get_int(tokenizer, "pad_token_id", 0, LONG_MAX, &pad))
        return ek_fail(EK_ERR_PACKAGE, "ranking.tokenizer.pad_token_id must be an integer >= 0; re-export the package");
    m->pad_token_id = pad;
    const cJSON *pair = cJSON_GetObjectItemCaseSensitive(tokenizer, "pair");
    const cJSON *type_ids = cJSON_GetObjectItemCaseSensitive(tokenizer, "type_ids");
    const char *truncation = get_string(tokenizer, "truncation");
    if (!cJSON_IsBool(pair) || !cJSON_IsBool(type_ids) || !truncation)
        return ek_fail(EK_ERR_PACKAGE, "ranking.tokenizer needs pair, type_ids and truncation; re-export the package");
    if (strcmp(truncation, "longest_first") && strcmp(truncation, "only_first") && strcmp(truncation, "only_second"))
        return ek_fail(EK_ERR_PACKAGE, "tokenizer truncation %s is not one of longest_first, only_second, only_first; "
                       "re-export the package", shown(truncation));
    m->pair = cJSON_IsTrue(pair);
    m->type_ids = cJSON_IsTrue(type_ids);
    snprintf(m->truncation, sizeof m->truncation, "%s", truncation);
    return EK_OK;
}

static int read_table(ek_manifest *m, const cJSON *table) {
    if (!cJSON_IsObject(table))
        return ek_fail(EK_ERR_UNSUPPORTED, "the package has no embedding_table; the native runtime needs one: re-export "
                       "the package with this edgekit");
    const char *file;
    int status = check_entry(m, cJSON_GetObjectItemCaseSensitive(table, "entry"), "embedding table", &file);
    if (status) return status;
    m->table_path = join(m->root, file);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(table, "shape");
    const char *dtype = get_string(table, "dtype");
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 2 || !dtype)
        return ek_fail(EK_ERR_PACKAGE, "embedding_table needs shape [vocab, E] and a dtype; re-export the package");
    double rows = cJSON_GetArrayItem(shape, 0)->valuedouble, cols = cJSON_GetArrayItem(shape, 1)->valuedouble;
    if (!(rows >= 1 && cols >= 1 && rows < 1e9 && cols < 1e6))
        return ek_fail(EK_ERR_PACKAGE, "embedding_table.shape must hold two positive integers; re-export the package");
    m->table_rows = (size_t)rows;
    m->table_cols = (size_t)cols;
    const char *want = !strcmp(m->dtype, "fp32") ? "float32" : "int8";
    if (strcmp(dtype, want))
        return ek_fail(EK_ERR_PACKAGE, "a %s package has a %s embedding table, not %s; re-export the package", m->dtype,
                       want, shown(dtype));
    snprintf(m->table_dtype, sizeof m->table_dtype, "%s", dtype);
    const cJSON *scales = cJSON_GetObjectItemCaseSensitive(table, "scales");
    if (!strcmp(dtype, "int8") != (scales != NULL && !cJSON_IsNull(scales)))
        return ek_fail(EK_ERR_PACKAGE, "embedding_table: an int8 table has a `scales` file and no other table has one; "
                       "re-export the package");
    if (scales && !cJSON_IsNull(scales)) {
        status = check_entry(m, scales, "embedding table scales", &file);
        if (status) return status;
        m->scales_path = join(m->root, file);
    }
    if ((size_t)m->pad_token_id >= m->table_rows)
        return ek_fail(EK_ERR_PACKAGE, "pad_token_id %lld is not a row of the embedding table (%zu rows); re-export the package",
                       (long long)m->pad_token_id, m->table_rows);
    return EK_OK;
}

static int read_calibration(ek_manifest *m, const cJSON *calibration) {
    if (!calibration || cJSON_IsNull(calibration)) return EK_OK;
    if (!cJSON_IsObject(calibration))
        return ek_fail(EK_ERR_PACKAGE, "calibration must be an object; re-run `edgekit calibrate`");
    m->has_calibration = 1;
    long top_k;
    m->calibration_top_k = get_int(calibration, "top_k", 1, LONG_MAX, &top_k) ? top_k : -1;
    const char *policy = get_string(calibration, "policy");
    snprintf(m->calibration_policy, sizeof m->calibration_policy, "%s", policy ? policy : "cluster");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(calibration, "params");
    const cJSON *source = params ? params : calibration; /* the first calibration shape: fields at the top */
    const cJSON *threshold = cJSON_GetObjectItemCaseSensitive(source, "threshold");
    if (cJSON_IsNull(params) || (!params && (!threshold || cJSON_IsNull(threshold)))) return EK_OK; /* certified none */
    if (!cJSON_IsObject(source) || (strcmp(m->calibration_policy, "cluster") == 0 && !cJSON_IsNumber(threshold)))
        return ek_fail(EK_ERR_PACKAGE, "the package's calibration is malformed; re-run `edgekit calibrate`");
    m->calibration_certified = 1;
    m->calibration_threshold = cJSON_IsNumber(threshold) ? threshold->valuedouble : 0.0;
    long value;
    m->calibration_clusters = get_int(source, "clusters", 2, 64, &value) ? (int)value : 3;
    m->calibration_min_depth = get_int(source, "min_depth", 1, MAX_LAYERS, &value) ? (int)value : 1;
    return EK_OK;
}

static int read_ranking(ek_manifest *m, const cJSON *ranking) {
    if (!cJSON_IsObject(ranking))
        return ek_fail(EK_ERR_PACKAGE, "a %s package needs a ranking section; re-export the package", m->task);
    long value;
    if (!get_int(ranking, "max_length", 1, 1 << 20, &value))
        return ek_fail(EK_ERR_PACKAGE, "ranking.max_length must be a positive integer; re-export the package");
    m->max_length = (size_t)value;
    if (!get_int(ranking, "hidden_size", 1, 1 << 20, &value))
        return ek_fail(EK_ERR_PACKAGE, "ranking.hidden_size must be a positive integer; re-export the package");
    m->hidden_size = (int)value;
    if (!get_int(ranking, "num_layers", 1, MAX_LAYERS, &value))
        return ek_fail(EK_ERR_PACKAGE, "ranking.num_layers must be an integer in 1..%d; re-export the package", MAX_LAYERS);
    m->num_layers = (int)value;
    int status = read_tokenizer(m, cJSON_GetObjectItemCaseSensitive(ranking, "tokenizer"));
    if (status) return status;
    const cJSON *scoring = cJSON_GetObjectItemCaseSensitive(ranking, "scoring");
    const char *kind = get_string(scoring, "kind");
    if (!kind || (strcmp(kind, "logit") && strcmp(kind, "probability") && strcmp(kind, "cosine")))
        return ek_fail(EK_ERR_PACKAGE, "ranking.scoring.kind must be logit, probability or cosine; re-export the package");
    snprintf(m->scoring_kind, sizeof m->scoring_kind, "%s", kind);
    int select = !strcmp(m->task, "select");
    if (select != !strcmp(kind, "cosine"))
        return ek_fail(EK_ERR_PACKAGE, "task %s needs scoring kind %s, not %s; re-export the package", m->task,
                       select ? "cosine" : "logit or probability", kind);
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(ranking, "prompt");
    m->has_prompt = prompt && !cJSON_IsNull(prompt);
    if (!select && m->pair == m->has_prompt)
        return ek_fail(EK_ERR_PACKAGE, "task rerank: rerank packages need pair tokenization or a prompt (one of them); "
                       "re-export the package");
    const char *side = get_string(ranking, "padding_side");
    if (side && strcmp(side, "left") && strcmp(side, "right"))
        return ek_fail(EK_ERR_PACKAGE, "padding_side %s is not one of right, left; re-export the package", shown(side));
    m->left_padding = side && !strcmp(side, "left");
    const cJSON *rotary = cJSON_GetObjectItemCaseSensitive(ranking, "rotary");
    if (rotary && !cJSON_IsNull(rotary)) {
        const cJSON *theta = cJSON_GetObjectItemCaseSensitive(rotary, "theta");
        const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(rotary, "scaling");
        if (!cJSON_IsNumber(theta) || !(theta->valuedouble > 0) || !get_int(rotary, "dim", 2, 1 << 16, &value) || value % 2)
            return ek_fail(EK_ERR_PACKAGE, "ranking.rotary needs theta > 0 and an even dim; re-export the package");
        m->has_rotary = 1;
        m->rotary_theta = theta->valuedouble;
        m->rotary_dim = (int)value;
        m->rotary_scaling = cJSON_IsNumber(scaling) ? scaling->valuedouble : 1.0;
    }
    status = read_table(m, cJSON_GetObjectItemCaseSensitive(ranking, "embedding_table"));
    if (status) return status;
    return read_calibration(m, cJSON_GetObjectItemCaseSensitive(ranking, "calibration"));
}

static int read_header(ek_manifest *m, const cJSON *root) {
    const char *format = get_string(root, "format");
    if (!format || strcmp(format, "edgekit-package"))
        return ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is not an edgekit-package manifest; re-export the package",
                       shown(m->root));
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    if (!cJSON_IsNumber(version) || version->valuedouble != 2.0)
        return ek_fail(EK_ERR_PACKAGE, "package format_version %g is not 2, the version this runtime reads; re-export "
                       "the package with this edgekit", cJSON_IsNumber(version) ? version->valuedouble : -1.0);
    const cJSON *requires = cJSON_GetObjectItemCaseSensitive(root, "requires");
    const cJSON *feature;
    if (requires && !cJSON_IsArray(requires))
        return ek_fail(EK_ERR_PACKAGE, "requires must be a list; re-export the package");
    cJSON_ArrayForEach(feature, requires) {
        return ek_fail(EK_ERR_UNSUPPORTED, "package requires %s, which the native runtime does not implement; export "
                       "without it (e.g. without --shared-layers)", cJSON_IsString(feature) ? shown(feature->valuestring) : "?");
    }
    const char *task = get_string(root, "task"), *dtype = get_string(root, "dtype");
    if (!task || !dtype)
        return ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is malformed (missing task or dtype); re-export the package",
                       shown(m->root));
    if (!strcmp(task, "video"))
        return ek_fail(EK_ERR_UNSUPPORTED, "%s is a video package; the native runtime ranks (rerank/select packages): "
                       "run it with `edgekit run PKG --image ...`", shown(m->root));
    if (strcmp(task, "rerank") && strcmp(task, "select"))
        return ek_fail(EK_ERR_PACKAGE, "task %s is not one of rerank, select, video; re-export the package", shown(task));
    if (!strcmp(dtype, "fp16"))
        return ek_fail(EK_ERR_UNSUPPORTED, "fp16 packages are not implemented in the native runtime yet; export with "
                       "--dtype fp32 or int8");
    if (strcmp(dtype, "fp32") && strcmp(dtype, "int8") && strcmp(dtype, "mixed"))
        return ek_fail(EK_ERR_PACKAGE, "dtype %s is not one of fp32, fp16, int8, mixed; re-export the package", shown(dtype));
    snprintf(m->task, sizeof m->task, "%s", task);
    snprintf(m->dtype, sizeof m->dtype, "%s", dtype);
    const cJSON *exporter = cJSON_GetObjectItemCaseSensitive(root, "exporter");
    if (!get_string(exporter, "edgekit"))
        return ek_fail(EK_ERR_PACKAGE, "exporter must name the edgekit version that wrote the package; re-export it");
    return EK_OK;
}

static int read_text(const char *root, char **text, size_t *length) {
    struct stat info;
    if (stat(root, &info) != 0)
        return ek_fail(EK_ERR_PACKAGE, "package directory %s does not exist; export one with `edgekit export`", shown(root));
    if (!S_ISDIR(info.st_mode))
        return ek_fail(EK_ERR_PACKAGE, "%s is not a package directory; point at the folder `edgekit export` wrote",
                       shown(root));
    char *path = join(root, "manifest.json");
    FILE *file = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!file)
        return ek_fail(EK_ERR_PACKAGE, "%s has no readable manifest.json (%s); it is not an edgekit package: re-export it",
                       shown(root), strerror(errno));
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    if (size < 0 || size > MAX_MANIFEST_BYTES) {
        fclose(file);
        return ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is larger than %ld MiB; re-export the package", shown(root),
                       MAX_MANIFEST_BYTES >> 20);
    }
    *text = malloc((size_t)size + 1);
    size_t got = *text ? fread(*text, 1, (size_t)size, file) : 0;
    fclose(file);
    if (!*text) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    (*text)[got] = '\0';
    *length = got;
    return EK_OK;
}

int ek_manifest_load(const char *root, ek_manifest **out) {
    *out = NULL;
    ek_manifest *m = calloc(1, sizeof *m);
    if (!m) return ek_fail(EK_ERR_MEMORY, "out of memory reading the manifest");
    char resolved[PATH_MAX];
    m->root = dup(realpath(root, resolved) ? resolved : root);
    char *text = NULL;
    size_t length = 0;
    int status = read_text(m->root, &text, &length);
    cJSON *json = NULL;
    if (!status) {
        json = cJSON_Parse(text);
        if (!cJSON_IsObject(json))
            status = ek_fail(EK_ERR_PACKAGE, "%s/manifest.json is not readable JSON; re-export the package", shown(m->root));
    }
    if (!status) status = read_header(m, json);
    if (!status) status = check_digest(m, text, length);
    if (!status) status = read_ranking(m, cJSON_GetObjectItemCaseSensitive(json, "ranking"));
    if (!status) status = read_graphs(m, cJSON_GetObjectItemCaseSensitive(json, "graphs"));
    if (!status) status = find_roles(m);
    cJSON_Delete(json);
    free(text);
    if (status) {
        ek_manifest_free(m);
        return status;
    }
    *out = m;
    return EK_OK;
}

static void free_io(ek_io *io, size_t n) {
    for (size_t i = 0; io && i < n; ++i) {
        free(io[i].name);
        free(io[i].dtype);
    }
    free(io);
}

void ek_manifest_free(ek_manifest *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_graphs; ++i) {
        ek_graph *g = &m->graphs[i];
        free(g->name); free(g->role); free(g->path); free(g->relpath);
        free_io(g->inputs, g->n_inputs);
        free_io(g->outputs, g->n_outputs);
    }
    free(m->graphs);
    free(m->layers);
    for (size_t i = 0; i < m->n_files; ++i) { free(m->files[i].path); free(m->files[i].relative); }
    free(m->files);
    free(m->root); free(m->tokenizer_path); free(m->table_path); free(m->scales_path);
    free(m);
}
