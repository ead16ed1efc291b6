/* Test tool: `ek-tokenize TOKENIZER_JSON` tokenises JSON lines from stdin,
 *   {"a": str, "b": str|null, "max_length": int (0 or absent: no truncation), "truncation": str}
 * writing one JSON line per input: {"ids": [...], "type_ids": [...], "truncated": bool} or
 * {"error": "...", "status": N}. A tokenizer that does not load: one error line, exit status 1. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

static void print_error(int status) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", ek_last_error());
    cJSON_AddNumberToObject(o, "status", status);
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

static void handle(const ek_tokenizer *tok, const char *line) {
    cJSON *in = cJSON_Parse(line);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(in, "a"), *b = cJSON_GetObjectItemCaseSensitive(in, "b");
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(in, "max_length");
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(in, "truncation");
    if (!cJSON_IsString(a)) {
        puts("{\"error\": \"input line is not {\\\"a\\\": str, ...}\", \"status\": 1}");
        cJSON_Delete(in);
        return;
    }
    ek_encoding enc;
    int rc = ek_tokenizer_encode(tok, a->valuestring, cJSON_IsString(b) ? b->valuestring : NULL,
                                 cJSON_IsNumber(ml) ? (size_t)ml->valuedouble : 0,
                                 cJSON_IsString(tr) ? tr->valuestring : "longest_first", &enc);
    cJSON_Delete(in);
    if (rc) { print_error(rc); return; }
    cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "ids"), *types = cJSON_AddArrayToObject(o, "type_ids");
    for (size_t i = 0; i < enc.length; i++) {
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)enc.ids[i]));
        cJSON_AddItemToArray(types, cJSON_CreateNumber((double)enc.type_ids[i]));
    }
    cJSON_AddBoolToObject(o, "truncated", enc.truncated);
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
    ek_encoding_free(&enc);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: ek-tokenize TOKENIZER_JSON < lines.jsonl\n"); return 2; }
    ek_tokenizer *tok = NULL;
    int rc = ek_tokenizer_load(argv[1], &tok);
    if (rc) { print_error(rc); return 1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (n == 1 && line[0] == '\n') continue;
        handle(tok, line);
        fflush(stdout);
    }
    free(line);
    ek_tokenizer_free(tok);
    return 0;
}
