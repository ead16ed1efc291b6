/* Internal: sha256 through OpenSSL's libcrypto — the manifest's digest (manifest.sha256) and,
 * unless the caller opts out, every file a run reads (the Python runtime's `verify`). */
#ifndef EK_DIGEST_H
#define EK_DIGEST_H

#include <stddef.h>

/* Lower-case hex sha256 of `size` bytes into hex[65]. */
int ek_sha256_bytes(const void *data, size_t size, char hex[65]);
/* Lower-case hex sha256 of the file at `path` (read in 1 MiB blocks) into hex[65]. */
int ek_sha256_file(const char *path, char hex[65]);

#endif
