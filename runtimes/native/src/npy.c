/* Memory-mapped .npy arrays (npy.h). */
#include "npy.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgekit.h"
#include "error.h"

static int bad(const char *path, const char *why) {
    const char *name = strrchr(path, '/');
    return ek_fail(EK_ERR_INTEGRITY, "cannot read %s (%s); run `edgekit verify` and re-export", name ? name + 1 : path, why);
}

int ek_npy_open(const char *path, char dtype, size_t rows, size_t cols, ek_npy *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bad(path, "cannot open it");
    struct stat info;
    if (fstat(fd, &info) != 0 || info.st_size < 16) {
        close(fd);
        return bad(path, "too short for a .npy header");
    }
    void *map = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return bad(path, "cannot map it");
    out->map = map;
    out->map_bytes = (size_t)info.st_size;
    const unsigned char *bytes = map;
    if (memcmp(bytes, "\x93NUMPY", 6) != 0) { ek_npy_close(out); return bad(path, "not a .npy file"); }
    size_t header_len, start;
    if (bytes[6] == 1) { header_len = bytes[8] | (size_t)bytes[9] << 8; start = 10; }
    else if (bytes[6] == 2 || bytes[6] == 3) {
        header_len = bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 | (size_t)bytes[11] << 24;
        start = 12;
    } else { ek_npy_close(out); return bad(path, "unknown .npy version"); }
    if (start + header_len > out->map_bytes || header_len > 65536) { ek_npy_close(out); return bad(path, "truncated header"); }
    char header[65537];
    memcpy(header, bytes + start, header_len);
    header[header_len] = '\0';
    const char *want = dtype == 'f' ? "'descr': '<f4'" : "'descr': '|i1'";
    if (!strstr(header, want)) { ek_npy_close(out); return bad(path, dtype == 'f' ? "not little-endian float32" : "not int8"); }
    if (!strstr(header, "'fortran_order': False")) { ek_npy_close(out); return bad(path, "not C order"); }
    const char *shape = strstr(header, "'shape': (");
    unsigned long long a = 0, b = 0;
    int got = shape ? sscanf(shape, "'shape': (%llu, %llu)", &a, &b) : 0;
    size_t want_ndim = cols > 0 ? 2 : 1;
    if (got < 1 || (want_ndim == 2 && (got != 2 || a != rows || b != cols)) || (want_ndim == 1 && (a != rows || got != 1))) {
        char message[160];
        if (cols) snprintf(message, sizeof message, "its shape is not the manifest's [%zu, %zu]", rows, cols);
        else snprintf(message, sizeof message, "its shape is not the manifest's [%zu]", rows);
        ek_npy_close(out);
        return bad(path, message);
    }
    size_t itemsize = dtype == 'f' ? 4 : 1;
    size_t elements = want_ndim == 2 ? (size_t)a * (size_t)b : (size_t)a;
    if (start + header_len + elements * itemsize > out->map_bytes) { ek_npy_close(out); return bad(path, "truncated data"); }
    out->data = bytes + start + header_len;
    out->shape[0] = (size_t)a;
    out->shape[1] = (size_t)b;
    out->ndim = (int)want_ndim;
    out->dtype = dtype;
    return EK_OK;
}

void ek_npy_close(ek_npy *npy) {
    if (npy->map) munmap(npy->map, npy->map_bytes);
    memset(npy, 0, sizeof *npy);
}
