/* Internal: a memory-mapped .npy file (format 1.0/2.0, little-endian, C order): the embedding
 * table [vocab, E] (float32 or int8) and an int8 table's per-row scales [vocab] (float32).
 * Rows are read through the map: a batch touches only the pages of its tokens' rows. */
#ifndef EK_NPY_H
#define EK_NPY_H

#include <stddef.h>

typedef struct ek_npy {
    void *map;          /* the whole file */
    size_t map_bytes;
    const void *data;   /* the array's first element */
    size_t shape[2];
    int ndim;
    char dtype;         /* 'f' float32, 'b' int8 */
} ek_npy;

/* Map `path`; checks the header's dtype (`dtype` '<f4' -> 'f', '|i1' -> 'b'), C order and that
 * the shape is `rows` (x `cols` when cols > 0), and that the file holds every element. */
int ek_npy_open(const char *path, char dtype, size_t rows, size_t cols, ek_npy *out);
void ek_npy_close(ek_npy *npy);

#endif
