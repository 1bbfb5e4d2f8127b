/* The tokenizer's internals, shared by the loader (tokenizer.c), SentencePiece BPE
 * (spm.c) and byte-level BPE (bpe.c, pretokenize.c, unicode.c). The public face is
 * the tl_tokenizer_* / tl_tokenize / tl_detokenize functions in torchless.h. */
#ifndef TL_TOKENIZER_H
#define TL_TOKENIZER_H

#include "core/arena.h"
#include "core/status.h"
#include "torchless.h"

/* A growable vector of token ids. */
typedef struct tl_ids {
    int32_t *v;
    size_t n, cap;
} tl_ids;

tl_status tl_ids_push(tl_ids *ids, int32_t id);
void tl_ids_free(tl_ids *ids);

typedef struct tl_bpe tl_bpe; /* merge ranks and pre-tokenizer choice (bpe.c) */

struct tl_tokenizer {
    tl_tokenizer_kind kind;
    int32_t n_vocab;
    const char **text;  /* token strings as stored, NUL-terminated, in the arena */
    uint32_t *text_len;
    float *scores;      /* SPM merge priorities (0 when absent) */
    uint8_t *types;     /* tl_token_type */
    tl_arena arena;

    /* token text -> id (open addressing over the arena copies) */
    int32_t *index;
    uint32_t index_mask;

    int32_t bos, eos, unk, pad, eot; /* -1 when absent */
    bool add_bos, add_eos;
    bool add_space_prefix; /* SPM: prepend '▁' to the text (tokenizer.ggml.add_space_prefix) */
    bool remove_extra_whitespaces; /* SPM .model normalizer: drop leading/trailing spaces, collapse runs */
    bool nfc;              /* normalize plain text to Unicode NFC first (HF NFC normalizer) */
    bool byte_fallback;    /* SPM: some <0xNN> token exists; else unknown characters become unk */
    int32_t *eog;          /* ids that end generation */
    int32_t n_eog;
    int32_t *specials;     /* control and user-defined ids, longest text first, for special=true */
    int32_t n_specials;

    int32_t byte_token[256]; /* SPM: id of <0xNN>, or -1 */

    tl_bpe *bpe; /* byte-level BPE only */
};

/* Building a tokenizer (tokenizer.c), for the loaders (GGUF, spm_model.c, llama2c.c):
 * new() allocates n_vocab empty NORMAL tokens, set_token() copies one token's text
 * into the arena, finish() builds the text index, byte tokens, special list and
 * EOG set. On failure the loader frees the half-built tokenizer with tl_tokenizer_free. */
tl_status tl_tokenizer_new(tl_tokenizer_kind kind, int32_t n_vocab, tl_tokenizer **out);
tl_status tl_tokenizer_set_token(tl_tokenizer *t, int32_t id, const char *text, size_t len, float score,
                                 tl_token_type type);
tl_status tl_tokenizer_finish(tl_tokenizer *t);

/* SentencePiece ModelProto (.model) and llama2.c tokenizer.bin, from bytes in memory;
 * `what` names the source in error messages. */
tl_status tl_spm_model_load(const uint8_t *data, size_t size, const char *what, tl_tokenizer **out);
tl_status tl_llama2c_tokenizer_load(const uint8_t *data, size_t size, const char *what, tl_tokenizer **out);

/* Id of the token whose text is exactly (s, len), or -1. */
int32_t tl_tokenizer_find(const tl_tokenizer *t, const char *s, size_t len);

/* SentencePiece BPE of one run of plain text (no special tokens in it; the caller
 * has already replaced spaces with '▁' and added the dummy prefix). */
tl_status tl_spm_encode(const tl_tokenizer *t, const char *text, size_t len, tl_ids *out);

/* Byte-level BPE. setup: merges as "left right" strings in rank order (tokenizer.ggml.merges)
 * and the pre-tokenizer name (tokenizer.ggml.pre; NULL or "" = "default"); it also sets
 * t->add_bos and the ignore_merges behaviour that name implies. */
tl_status tl_bpe_setup(tl_tokenizer *t, const tl_string *merges, size_t n_merges, const char *pre);
void tl_bpe_free(tl_bpe *b);
/* Pre-tokenize, byte-map and merge one run of plain text. */
tl_status tl_bpe_encode(const tl_tokenizer *t, const char *text, size_t len, tl_ids *out);
/* The raw bytes a byte-level token text stands for (GPT-2 byte map reversed).
 * Writes at most cap bytes, returns the number needed. */
size_t tl_bpe_token_bytes(const char *text, size_t len, char *buf, size_t cap);

#endif
