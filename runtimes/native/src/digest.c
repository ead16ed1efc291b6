/* sha256 with libcrypto (digest.h). */
#include "digest.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgekit.h"
#include "error.h"

static void to_hex(const unsigned char *digest, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; ++i) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
}

int ek_sha256_bytes(const void *data, size_t size, char hex[65]) {
    unsigned char digest[32];
    unsigned int length = 0;
    if (!EVP_Digest(data, size, digest, &length, EVP_sha256(), NULL) || length != 32)
        return ek_fail(EK_ERR_RUNTIME, "libcrypto could not compute a sha256");
    to_hex(digest, hex);
    return EK_OK;
}

int ek_sha256_file(const char *path, char hex[65]) {
    FILE *file = fopen(path, "rb");
    if (!file) return ek_fail(EK_ERR_INTEGRITY, "cannot read %s to check its sha256; re-export the package", path);
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    unsigned char *block = malloc(1 << 20);
    int ok = context && block && EVP_DigestInit_ex(context, EVP_sha256(), NULL);
    size_t got;
    while (ok && (got = fread(block, 1, 1 << 20, file)) > 0) ok = EVP_DigestUpdate(context, block, got);
    ok = ok && !ferror(file);
    unsigned char digest[32];
    unsigned int length = 0;
    ok = ok && EVP_DigestFinal_ex(context, digest, &length) && length == 32;
    EVP_MD_CTX_free(context);
    free(block);
    fclose(file);
    if (!ok) return ek_fail(EK_ERR_INTEGRITY, "cannot hash %s; re-export the package", path);
    to_hex(digest, hex);
    return EK_OK;
}
