/* ember tokenizer: reproduces llama.cpp's llama_tokenize / llama_token_to_piece for
 * GGUF vocabularies of type "gpt2" (byte-level BPE) and "llama" (SentencePiece BPE).
 *
 * Interface agreed in INTERFACES.md; the functions after the marked line are additions. */
#ifndef EMBER_TOKENIZER_H
#define EMBER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_tokenizer em_tokenizer;
typedef struct em_tokenizer_config {
    const char *model;            /* tokenizer.ggml.model: "gpt2" or "llama" (NUL-terminated) */
    const char *pre;              /* tokenizer.ggml.pre or NULL */
    uint32_t n_vocab;
    const char *const *tokens;    /* n_vocab strings, NOT NUL-terminated (point into the GGUF mmap) */
    const uint64_t *token_lens;
    const float *scores;          /* may be NULL */
    const int32_t *token_types;   /* may be NULL; llama.cpp's values: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte */
    uint32_t n_merges;            /* gpt2 only */
    const char *const *merges;    /* "a b" strings, NOT NUL-terminated */
    const uint64_t *merge_lens;
    int32_t bos_id, eos_id, unk_id, pad_id;   /* -1 when absent */
    int add_bos, add_eos, add_space_prefix;   /* -1 when absent from metadata: tokenizer applies llama.cpp's default for the model */
} em_tokenizer_config;

/* The tokenizer copies everything it needs: the config may be freed after create. */
int  em_tokenizer_create(const em_tokenizer_config *cfg, em_tokenizer **out, char *err, size_t errlen); /* 0 ok, else non-zero + message */
void em_tokenizer_free(em_tokenizer *t);
/* Tokenize like llama.cpp's llama_tokenize(vocab, text, len, add_special, parse_special).
   Writes up to cap ids; *n_out gets the full count (call again with a larger buffer if > cap). 0 ok. */
int  em_tokenize(const em_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                 int32_t *out, size_t cap, size_t *n_out);
/* Piece of one token as llama.cpp's llama_token_to_piece(special=false/true) gives it; returns bytes written
   (needed size if > cap), negative on bad id. */
int  em_token_to_piece(const em_tokenizer *t, int32_t id, int special, char *buf, size_t cap);
int  em_tokenizer_is_eog(const em_tokenizer *t, int32_t id);
uint32_t em_tokenizer_n_vocab(const em_tokenizer *t);

/* ---- additions (not in INTERFACES.md) ---- */

/* Special ids after llama.cpp's defaults and range checks were applied; -1 when none. */
int32_t em_tokenizer_bos(const em_tokenizer *t);
int32_t em_tokenizer_eos(const em_tokenizer *t);
/* Effective add_bos / add_eos (metadata, else llama.cpp's default for the model): 0 or 1. */
int em_tokenizer_add_bos(const em_tokenizer *t);
int em_tokenizer_add_eos(const em_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_TOKENIZER_H */
