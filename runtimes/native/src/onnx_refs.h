/* Internal: what an ONNX model file refers to outside itself, read from its protobuf without an
 * ONNX library: the external-data `location` of every tensor (initializers, sparse
 * initializers, attribute tensors, in the main graph and every subgraph) and whether it holds an
 * `EPContext` node (a compiled blob a provider would load). The manifest check (manifest.c)
 * requires every location to be one of the graph's listed files, as edgekit/containment.py does:
 * a graph reads nothing its entry does not list and hash. */
#ifndef EK_ONNX_REFS_H
#define EK_ONNX_REFS_H

#include <stddef.h>

typedef struct ek_onnx_refs {
    char **locations; /* malloc'd strings, in file order (repeats kept) */
    size_t count, capacity;
    int epcontext;    /* 1: an EPContext node */
} ek_onnx_refs;

/* Walk the model at `path`. EK_ERR_INTEGRITY when it is not a readable ONNX protobuf. */
int ek_onnx_refs_read(const char *path, ek_onnx_refs *out);
void ek_onnx_refs_free(ek_onnx_refs *refs);

#endif
