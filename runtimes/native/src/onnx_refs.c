/* External-data references of an ONNX model, from its protobuf wire format (onnx_refs.h).
 * Field numbers are onnx.proto's: ModelProto.graph 7; GraphProto.node 1, .initializer 5,
 * .sparse_initializer 15; NodeProto.op_type 4, .attribute 5; AttributeProto.t 5, .g 6,
 * .tensors 10, .graphs 11, .sparse_tensor 22, .sparse_tensors 23; SparseTensorProto.values 1,
 * .indices 2; TensorProto.external_data 13; StringStringEntryProto.key 1, .value 2. */
#include "onnx_refs.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgekit.h"
#include "error.h"

#define MAX_DEPTH 64

typedef struct cursor {
    const uint8_t *at, *end;
} cursor;

typedef enum kind { GRAPH, NODE, ATTRIBUTE, TENSOR, SPARSE, ENTRY } kind;

static int varint(cursor *c, uint64_t *value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->at >= c->end) return 0;
        uint8_t byte = *c->at++;
        *value |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) return 1;
    }
    return 0;
}

/* The next field: its number, wire type, and for length-delimited fields its bytes. */
static int field(cursor *c, uint64_t *number, int *wire, cursor *body) {
    uint64_t tag, length;
    if (!varint(c, &tag)) return 0;
    *number = tag >> 3;
    *wire = (int)(tag & 7);
    switch (*wire) {
    case 0: return varint(c, &length);
    case 1: if (c->end - c->at < 8) return 0; c->at += 8; return 1;
    case 5: if (c->end - c->at < 4) return 0; c->at += 4; return 1;
    case 2:
        if (!varint(c, &length) || length > (uint64_t)(c->end - c->at)) return 0;
        *body = (cursor){c->at, c->at + length};
        c->at += length;
        return 1;
    default: return 0; /* groups: not in ONNX */
    }
}

static int add_location(ek_onnx_refs *refs, cursor value) {
    if (refs->count == refs->capacity) {
        size_t capacity = refs->capacity ? 2 * refs->capacity : 16;
        char **grown = realloc(refs->locations, capacity * sizeof *grown);
        if (!grown) return 0;
        refs->locations = grown;
        refs->capacity = capacity;
    }
    size_t length = (size_t)(value.end - value.at);
    char *text = malloc(length + 1);
    if (!text) return 0;
    memcpy(text, value.at, length);
    text[length] = '\0';
    refs->locations[refs->count++] = text;
    return 1;
}

/* Walk one message of `what`; 0 on malformed input or out of memory. */
static int walk(cursor c, kind what, int depth, ek_onnx_refs *refs) {
    if (depth > MAX_DEPTH) return 0;
    cursor key = {0}, value = {0};
    int has_key = 0, has_value = 0;
    while (c.at < c.end) {
        uint64_t number;
        int wire;
        cursor body = {0};
        if (!field(&c, &number, &wire, &body)) return 0;
        if (wire != 2) continue;
        int ok = 1;
        switch (what) {
        case GRAPH:
            if (number == 1) ok = walk(body, NODE, depth + 1, refs);
            else if (number == 5) ok = walk(body, TENSOR, depth + 1, refs);
            else if (number == 15) ok = walk(body, SPARSE, depth + 1, refs);
            break;
        case NODE:
            if (number == 4 && body.end - body.at == 9 && !memcmp(body.at, "EPContext", 9)) refs->epcontext = 1;
            else if (number == 5) ok = walk(body, ATTRIBUTE, depth + 1, refs);
            break;
        case ATTRIBUTE:
            if (number == 5 || number == 10) ok = walk(body, TENSOR, depth + 1, refs);
            else if (number == 6 || number == 11) ok = walk(body, GRAPH, depth + 1, refs);
            else if (number == 22 || number == 23) ok = walk(body, SPARSE, depth + 1, refs);
            break;
        case SPARSE:
            if (number == 1 || number == 2) ok = walk(body, TENSOR, depth + 1, refs);
            break;
        case TENSOR:
            if (number == 13) ok = walk(body, ENTRY, depth + 1, refs);
            break;
        case ENTRY:
            if (number == 1) { key = body; has_key = 1; }
            else if (number == 2) { value = body; has_value = 1; }
            break;
        }
        if (!ok) return 0;
    }
    if (what == ENTRY && has_key && has_value && key.end - key.at == 8 && !memcmp(key.at, "location", 8))
        return add_location(refs, value);
    return 1;
}

int ek_onnx_refs_read(const char *path, ek_onnx_refs *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) != 0 || info.st_size == 0) {
        if (fd >= 0) close(fd);
        return ek_fail(EK_ERR_INTEGRITY, "cannot read %s as an ONNX model; re-export the package", path);
    }
    void *map = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ek_fail(EK_ERR_INTEGRITY, "cannot map %s; re-export the package", path);
    cursor model = {map, (const uint8_t *)map + info.st_size};
    int ok = 1;
    while (ok && model.at < model.end) {
        uint64_t number;
        int wire;
        cursor body = {0};
        ok = field(&model, &number, &wire, &body);
        if (ok && wire == 2 && number == 7) ok = walk(body, GRAPH, 0, out);
    }
    munmap(map, (size_t)info.st_size);
    if (!ok) {
        ek_onnx_refs_free(out);
        return ek_fail(EK_ERR_INTEGRITY, "%s is not a readable ONNX model (malformed protobuf); re-export the package", path);
    }
    return EK_OK;
}

void ek_onnx_refs_free(ek_onnx_refs *refs) {
    for (size_t i = 0; i < refs->count; ++i) free(refs->locations[i]);
    free(refs->locations);
    memset(refs, 0, sizeof *refs);
}
