/* ek-tokenize TOKENIZER_JSON: the native tokenizer as a filter, for the parity tests against HF
 * tokenizers. Reads JSON lines {"a": str, "b": str|null, "max_length": int, "truncation": str}
 * on stdin; writes one line each: {"ids": [...], "type_ids": [...], "truncated": bool} or
 * {"error": "...", "status": N}. Text may hold any bytes: JSON strings are decoded by cJSON, and
 * {"a_hex": "..."} passes raw bytes (invalid UTF-8 included). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit.h"
#include "tokenizer.h"

static char *from_hex(const char *hex) {
    size_t n = strlen(hex) / 2;
    char *bytes = malloc(n + 1);
    for (size_t i = 0; bytes && i < n; ++i) {
        unsigned value = 0;
        sscanf(hex + 2 * i, "%2x", &value);
        bytes[i] = (char)value;
    }
    if (bytes) bytes[n] = '\0';
    return bytes;
}

static void print_ids(const char *key, const int64_t *values, size_t n) {
    printf("\"%s\":[", key);
    for (size_t i = 0; i < n; ++i) printf(i ? ",%lld" : "%lld", (long long)values[i]);
    printf("]");
}

static void print_error(int status) {
    cJSON *error = cJSON_CreateObject();
    cJSON_AddStringToObject(error, "error", ek_last_error());
    cJSON_AddNumberToObject(error, "status", status);
    char *text = cJSON_PrintUnformatted(error);
    puts(text);
    free(text);
    cJSON_Delete(error);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: ek-tokenize TOKENIZER_JSON < requests.jsonl\n"); return 2; }
    ek_tokenizer *tokenizer = NULL;
    int status = ek_tokenizer_load(argv[1], &tokenizer);
    if (status) {
        print_error(status);
        return 0;
    }
    char *line = NULL;
    size_t capacity = 0;
    while (getline(&line, &capacity, stdin) > 0) {
        cJSON *request = cJSON_Parse(line);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(request, "a");
        const cJSON *a_hex = cJSON_GetObjectItemCaseSensitive(request, "a_hex");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(request, "b");
        const cJSON *max_length = cJSON_GetObjectItemCaseSensitive(request, "max_length");
        const cJSON *truncation = cJSON_GetObjectItemCaseSensitive(request, "truncation");
        char *raw = cJSON_IsString(a_hex) ? from_hex(a_hex->valuestring) : NULL;
        const char *first = raw ? raw : cJSON_IsString(a) ? a->valuestring : "";
        ek_encoding encoding;
        status = ek_tokenizer_encode(tokenizer, first, cJSON_IsString(b) ? b->valuestring : NULL,
                                     cJSON_IsNumber(max_length) ? (size_t)max_length->valuedouble : 512,
                                     cJSON_IsString(truncation) ? truncation->valuestring : "longest_first", &encoding);
        if (status) {
            print_error(status);
        } else {
            printf("{");
            print_ids("ids", encoding.ids, encoding.length);
            printf(",");
            print_ids("type_ids", encoding.type_ids, encoding.length);
            printf(",\"truncated\":%s}\n", encoding.truncated ? "true" : "false");
            ek_encoding_free(&encoding);
        }
        free(raw);
        cJSON_Delete(request);
    }
    free(line);
    ek_tokenizer_free(tokenizer);
    return 0;
}
