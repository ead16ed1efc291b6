/* Internal: the v2 manifest of a ranking package, read with cJSON and checked.
 *
 * The checks are the Python runtime's (edgekit/manifest.py, ranking_manifest.py, containment.py)
 * that decide whether a package can run: format and version, required features, task, the
 * ranking section, one embeddings graph, layers 0..L-1, one head, every path relative and
 * inside the package (no `..`, no absolute path, no symlink), every listed file present with
 * its recorded size, the embedding table's shape. A refusal is one line naming the fix.
 */
#ifndef EK_MANIFEST_H
#define EK_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

typedef struct ek_io {
    char *name;
    char *dtype;
} ek_io;

typedef struct ek_graph {
    char *name;
    char *role;
    int index;     /* -1 when null */
    char *path;    /* absolute path of the .onnx file */
    char *relpath; /* as the manifest says */
    ek_io *inputs;
    size_t n_inputs;
    ek_io *outputs;
    size_t n_outputs;
} ek_graph;

/* A listed package file: where it is and the sha256 the manifest records. */
typedef struct ek_file {
    char *path;     /* absolute */
    char *relative; /* as listed */
    char sha256[65];
} ek_file;

typedef struct ek_manifest {
    char *root;
    char task[16];        /* rerank | select */
    char dtype[8];        /* fp32 | int8 | mixed (fp16 refused: unsupported) */
    ek_graph *graphs;     /* the ONNX graphs */
    size_t n_graphs;
    const ek_graph *embeddings;
    const ek_graph **layers; /* num_layers entries, by index */
    const ek_graph *head;
    int num_layers;
    int hidden_size;
    size_t max_length;
    char *tokenizer_path; /* absolute path of tokenizer.json */
    int64_t pad_token_id;
    int pair;             /* 1: encode (query, candidate) pairs */
    char truncation[16];
    int type_ids;         /* 1: feed the tokenizer's segment ids */
    int has_prompt;       /* decoder rerankers: texts need the prompt (ek_rank_ids only) */
    char scoring_kind[16];/* logit | probability | cosine */
    int left_padding;
    char *table_path;     /* absolute path of the embedding table .npy */
    size_t table_rows, table_cols;
    char table_dtype[8];  /* float32 | int8 */
    char *scales_path;    /* int8 tables: per-row scales .npy, else NULL */
    int has_rotary;
    double rotary_theta, rotary_scaling;
    int rotary_dim;
    /* calibration (--prune auto): policy "cluster" with its params; has_calibration 0 when absent */
    int has_calibration;
    char calibration_policy[32];
    int calibration_certified; /* 0: params null (auto runs exact) */
    double calibration_threshold;
    int calibration_clusters, calibration_min_depth;
    long calibration_top_k;    /* -1 when absent */
    ek_file *files;            /* every file the run reads: graph files, tokenizer files, table (+ scales) */
    size_t n_files, files_capacity;
} ek_manifest;

/* Read and check `root`/manifest.json, and its digest `root`/manifest.sha256 (the sha256 of
 * manifest.json's bytes, written at export; always checked, as the Python runtime does). EK_OK
 * or an error with ek_last_error set. */
int ek_manifest_load(const char *root, ek_manifest **out);
void ek_manifest_free(ek_manifest *manifest);

/* Hash every file in manifest->files against its recorded sha256 (EK_ERR_INTEGRITY naming the
 * first mismatch, as the Python runtime's `verify`). */
int ek_manifest_verify(const ek_manifest *manifest);

#endif
