/* Internal: native WordPiece tokenisation of a Hugging Face tokenizer.json (BERT family).
 *
 * Supported: model WordPiece; normalizer BertNormalizer (clean_text, handle_chinese_chars,
 * strip_accents (null: follows lowercase), lowercase); pre_tokenizer BertPreTokenizer;
 * post_processor TemplateProcessing or BertProcessing ([CLS] A [SEP] (B [SEP]) with type ids);
 * added tokens (normalized false, no lstrip/rstrip/single_word) matched in the raw text before
 * normalisation, leftmost then longest; truncation longest_first,
 * only_first, only_second as tokenizers does (special tokens counted). Anything else: load fails
 * with EK_ERR_UNSUPPORTED and a message saying to use ek_rank_ids.
 * The file's own truncation/padding sections are ignored (the caller passes max_length; right side,
 * no stride). Unicode: utf8proc for NFD, categories and lowercase, with tokenizers' older
 * punctuation/mark/format classification where it differs (tables in tokenizer.c).
 */
#ifndef EK_TOKENIZER_H
#define EK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ek_tokenizer ek_tokenizer;

typedef struct ek_encoding {
    int64_t *ids;      /* malloc'd, `length` entries */
    int64_t *type_ids; /* malloc'd, `length` entries (0 for A, 1 for B) */
    size_t length;
    int truncated;     /* 1 when tokens were cut to fit max_length */
} ek_encoding;

/* Load tokenizer.json. EK_OK, or an error code with ek_last_error set (unsupported kinds name
 * ek_rank_ids as the fix). */
int ek_tokenizer_load(const char *path, ek_tokenizer **out);

/* Encode `a` (and `b` when not NULL, as a pair) with special tokens, truncated to `max_length`
 * tokens by `truncation` ("longest_first", "only_first", "only_second"; NULL: longest_first) as
 * tokenizers' truncate_encodings does; max_length 0: no truncation. Text must be UTF-8 (invalid
 * UTF-8: EK_ERR_ARGUMENT; text stops at its first NUL byte, a C string). As in tokenizers, a
 * max_length below the special-token count truncates nothing, and EK_ERR_ARGUMENT comes when
 * only_first/only_second cannot remove enough (tokenizers raises there). Free with ek_encoding_free. */
int ek_tokenizer_encode(const ek_tokenizer *tokenizer, const char *a, const char *b, size_t max_length,
                        const char *truncation, ek_encoding *out);

/* Tokens in the vocabulary including added tokens (the largest id + 1). */
size_t ek_tokenizer_vocab_size(const ek_tokenizer *tokenizer);

void ek_encoding_free(ek_encoding *encoding);
void ek_tokenizer_free(ek_tokenizer *tokenizer);

#endif
