/* The tokenizer's vocabulary and its public face: loading from GGUF metadata (or by
 * file content), the text -> id index, special-token partitioning, and the
 * token -> bytes direction. The merging itself lives in spm.c (SentencePiece BPE)
 * and bpe.c (byte-level BPE).
 *
 * Semantics follow llama.cpp's llama-vocab.cpp where it defines them (special-token
 * partition, SPM dummy prefix after specials, the EOG set) and sentencepiece where
 * llama.cpp differs from it (which tokens a merge may produce, decoding). */
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_nfc.h"
#include "formats/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- ids */

tl_status tl_ids_push(tl_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return TL_OK;
}

void tl_ids_free(tl_ids *ids) {
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

/* ---------------------------------------------------------------- building */

static const char tl_empty_text[1] = "";

tl_status tl_tokenizer_new(tl_tokenizer_kind kind, int32_t n_vocab, tl_tokenizer **out) {
    *out = NULL;
    if (n_vocab <= 0) return tl_set_error(TL_ERR_FORMAT, "tokenizer: empty vocabulary");
    tl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->bos = t->eos = t->unk = t->pad = t->eot = -1;
    for (int i = 0; i < 256; i++) t->byte_token[i] = -1;
    size_t n = (size_t)n_vocab;
    t->text = tl_arena_alloc_array(&t->arena, n, sizeof *t->text, 8);
    t->text_len = tl_arena_alloc_array(&t->arena, n, sizeof *t->text_len, 4);
    t->scores = tl_arena_alloc_array(&t->arena, n, sizeof *t->scores, 4);
    t->types = tl_arena_alloc_array(&t->arena, n, sizeof *t->types, 1);
    if (!t->text || !t->text_len || !t->scores || !t->types) {
        tl_tokenizer_free(t);
        return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n_vocab);
    }
    for (size_t i = 0; i < n; i++) {
        t->text[i] = tl_empty_text;
        t->types[i] = TL_TOKEN_NORMAL;
    }
    *out = t;
    return TL_OK;
}

tl_status tl_tokenizer_set_token(tl_tokenizer *t, int32_t id, const char *text, size_t len, float score,
                                 tl_token_type type) {
    if (id < 0 || id >= t->n_vocab) return tl_set_error(TL_ERR_INVALID, "tokenizer: token id %d out of range", id);
    if (len > UINT32_MAX - 1) return tl_set_error(TL_ERR_FORMAT, "tokenizer: token %d is %zu bytes long", id, len);
    char *copy = tl_arena_alloc(&t->arena, len + 1, 1);
    if (!copy) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for token %d", id);
    if (len) memcpy(copy, text, len);
    t->text[id] = copy;
    t->text_len[id] = (uint32_t)len;
    t->scores[id] = score;
    t->types[id] = (uint8_t)type;
    return TL_OK;
}

/* FNV-1a: the token texts are short, so a simple byte hash is as fast as any. */
static uint32_t text_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int32_t tl_tokenizer_find(const tl_tokenizer *t, const char *s, size_t len) {
    uint32_t slot = text_hash(s, len) & t->index_mask;
    for (;;) {
        int32_t id = t->index[slot];
        if (id < 0) return -1;
        if (t->text_len[id] == len && memcmp(t->text[id], s, len) == 0) return id;
        slot = (slot + 1) & t->index_mask;
    }
}

/* Text -> id over every token; a text that occurs twice maps to its last id, as
 * llama.cpp's token_to_id map does. */
static tl_status build_index(tl_tokenizer *t) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)t->n_vocab) cap *= 2;
    t->index = tl_arena_alloc_array(&t->arena, cap, sizeof *t->index, 4);
    if (!t->index) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for the token index");
    memset(t->index, 0xff, (size_t)cap * sizeof *t->index);
    t->index_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint32_t slot = text_hash(t->text[id], t->text_len[id]) & t->index_mask;
        for (;;) {
            int32_t other = t->index[slot];
            if (other < 0) {
                t->index[slot] = id;
                break;
            }
            if (t->text_len[other] == t->text_len[id] && memcmp(t->text[other], t->text[id], t->text_len[id]) == 0) {
                t->index[slot] = id;
                break;
            }
            slot = (slot + 1) & t->index_mask;
        }
    }
    return TL_OK;
}

/* Texts of vocabulary tokens that end a turn (llama.cpp llama_vocab::load, special_eog_ids). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>",  "<|return|>",      "<|call|>",          "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
};

static bool eog_contains(const tl_tokenizer *t, int32_t id) {
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

static void eog_add(tl_tokenizer *t, int32_t id) {
    if (id >= 0 && id < t->n_vocab && !eog_contains(t, id)) t->eog[t->n_eog++] = id;
}

/* (length, id) pairs for sorting the special tokens without a global comparator context. */
typedef struct special_key {
    uint32_t len;
    int32_t id;
} special_key;

static int special_cmp(const void *a, const void *b) {
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool is_special_type(uint8_t type) {
    return type == TL_TOKEN_CONTROL || type == TL_TOKEN_USER_DEFINED || type == TL_TOKEN_UNKNOWN;
}

tl_status tl_tokenizer_finish(tl_tokenizer *t) {
    tl_status s = build_index(t);
    if (s) return s;

    /* SentencePiece byte fallback: <0x00> .. <0xFF> (upper-case hex, as sentencepiece writes them) */
    t->byte_fallback = false;
    if (t->kind == TL_TOKENIZER_SPM) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            static const char hex[] = "0123456789ABCDEF";
            memcpy(name, "<0x", 3);
            name[3] = hex[b >> 4];
            name[4] = hex[b & 15];
            name[5] = '>';
            int32_t id = tl_tokenizer_find(t, name, 6);
            if (id >= 0 && t->types[id] == TL_TOKEN_BYTE) {
                t->byte_token[b] = id;
                t->byte_fallback = true;
            }
        }
    }

    /* End of generation: EOS, EOT, and the end-of-turn tokens the vocabulary has. llama.cpp
     * forces those to CONTROL type (they are, in every model that has them on purpose). */
    size_t n_eog_texts = sizeof eog_texts / sizeof eog_texts[0];
    t->eog = tl_arena_alloc_array(&t->arena, n_eog_texts + 2, sizeof *t->eog, 4);
    if (!t->eog) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
    t->n_eog = 0;
    eog_add(t, t->eos);
    eog_add(t, t->eot);
    for (size_t i = 0; i < n_eog_texts; i++) {
        int32_t id = tl_tokenizer_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0) {
            eog_add(t, id);
            t->types[id] = TL_TOKEN_CONTROL;
        }
    }

    /* The special tokens special=true looks for in text, longest text first (llama.cpp
     * cache_special_tokens); ties by id so the order does not depend on the sort. */
    int32_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special_type(t->types[id]) && t->text_len[id] > 0) n++;
    t->specials = tl_arena_alloc_array(&t->arena, n ? (size_t)n : 1, sizeof *t->specials, 4);
    special_key *keys = malloc((n ? (size_t)n : 1) * sizeof *keys);
    if (!t->specials || !keys) {
        free(keys);
        return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
    }
    t->n_specials = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special_type(t->types[id]) && t->text_len[id] > 0) keys[t->n_specials++] = (special_key){t->text_len[id], id};
    qsort(keys, (size_t)t->n_specials, sizeof *keys, special_cmp);
    for (int32_t i = 0; i < t->n_specials; i++) t->specials[i] = keys[i].id;
    free(keys);
    return TL_OK;
}

void tl_tokenizer_free(tl_tokenizer *t) {
    if (!t) return;
    if (t->bpe) tl_bpe_free(t->bpe);
    tl_arena_free_all(&t->arena);
    free(t);
}

/* ---------------------------------------------------------------- GGUF metadata */

static bool kv_int(const tl_weights *w, const char *key, int64_t *out) {
    const tl_kv *kv = tl_weights_find_kv(w, key);
    if (!kv) return false;
    switch (kv->value.type) {
    case TL_VAL_UINT8: case TL_VAL_UINT16: case TL_VAL_UINT32: case TL_VAL_UINT64:
        *out = kv->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)kv->value.u64;
        return true;
    case TL_VAL_INT8: case TL_VAL_INT16: case TL_VAL_INT32: case TL_VAL_INT64:
        *out = kv->value.i64;
        return true;
    default: return false;
    }
}

static bool kv_bool(const tl_weights *w, const char *key, bool *out) {
    const tl_kv *kv = tl_weights_find_kv(w, key);
    if (!kv || kv->value.type != TL_VAL_BOOL) return false;
    *out = kv->value.b;
    return true;
}

/* A special-token id key: kept when present and inside the vocabulary (llama.cpp
 * ignores an out-of-range id and keeps its default). */
static void kv_token_id(const tl_weights *w, const char *key, const tl_tokenizer *t, int32_t *id) {
    int64_t v;
    if (kv_int(w, key, &v) && v >= 0 && v < t->n_vocab) *id = (int32_t)v;
}

/* Element i of a numeric metadata array as a double (elements are packed little-endian
 * and aligned, tl_value's contract). */
static double arr_number(const tl_value *v, uint64_t i) {
    const void *d = v->arr.data;
    switch (v->arr.elem_type) {
    case TL_VAL_FLOAT32: return ((const float *)d)[i];
    case TL_VAL_FLOAT64: return ((const double *)d)[i];
    case TL_VAL_INT32: return ((const int32_t *)d)[i];
    case TL_VAL_UINT32: return ((const uint32_t *)d)[i];
    case TL_VAL_INT8: return ((const int8_t *)d)[i];
    case TL_VAL_UINT8: return ((const uint8_t *)d)[i];
    case TL_VAL_INT16: return ((const int16_t *)d)[i];
    case TL_VAL_UINT16: return ((const uint16_t *)d)[i];
    case TL_VAL_INT64: return (double)((const int64_t *)d)[i];
    case TL_VAL_UINT64: return (double)((const uint64_t *)d)[i];
    default: return 0;
    }
}

static bool is_numeric(tl_value_type t) {
    return t != TL_VAL_STRING && t != TL_VAL_ARRAY && t != TL_VAL_BOOL && t < TL_VAL_TYPE_COUNT;
}

/* An optional per-token array: absent is fine, present must be numeric and n_vocab long. */
static tl_status token_array(const tl_weights *w, const char *key, int32_t n_vocab, const tl_value **out) {
    *out = NULL;
    const tl_kv *kv = tl_weights_find_kv(w, key);
    if (!kv) return TL_OK;
    if (kv->value.type != TL_VAL_ARRAY || !is_numeric(kv->value.arr.elem_type))
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: %s is not a numeric array", key);
    if (kv->value.arr.n != (uint64_t)n_vocab)
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: %s has %llu entries for %d tokens", key,
                            (unsigned long long)kv->value.arr.n, n_vocab);
    *out = &kv->value;
    return TL_OK;
}

tl_status tl_tokenizer_from_weights(const tl_weights *w, tl_tokenizer **out) {
    *out = NULL;
    const tl_kv *model = tl_weights_find_kv(w, "tokenizer.ggml.model");
    if (!model) return tl_set_error(TL_ERR_NOT_FOUND, "tokenizer: the file has no tokenizer.ggml.model");
    if (model->value.type != TL_VAL_STRING)
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: tokenizer.ggml.model is not a string");
    tl_string name = model->value.str;
    tl_tokenizer_kind kind;
    if (name.len == 5 && memcmp(name.ptr, "llama", 5) == 0) {
        kind = TL_TOKENIZER_SPM;
    } else if (name.len == 4 && memcmp(name.ptr, "gpt2", 4) == 0) {
        kind = TL_TOKENIZER_BPE;
    } else {
        int n = name.len > 64 ? 64 : (int)name.len;
        return tl_set_error(TL_ERR_UNSUPPORTED, "tokenizer: model '%.*s' is not supported (only 'llama' and 'gpt2')",
                            n, name.ptr);
    }

    const tl_kv *tokens = tl_weights_find_kv(w, "tokenizer.ggml.tokens");
    if (!tokens) return tl_set_error(TL_ERR_NOT_FOUND, "tokenizer: the file has no tokenizer.ggml.tokens");
    if (tokens->value.type != TL_VAL_ARRAY || tokens->value.arr.elem_type != TL_VAL_STRING)
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens is not an array of strings");
    if (tokens->value.arr.n == 0 || tokens->value.arr.n > INT32_MAX / 2)
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens has %llu entries",
                            (unsigned long long)tokens->value.arr.n);
    int32_t n_vocab = (int32_t)tokens->value.arr.n;
    const tl_string *texts = tokens->value.arr.data;

    const tl_value *scores, *types;
    tl_status s = token_array(w, "tokenizer.ggml.scores", n_vocab, &scores);
    if (!s) s = token_array(w, "tokenizer.ggml.token_type", n_vocab, &types);
    if (s) return s;

    tl_tokenizer *t;
    if ((s = tl_tokenizer_new(kind, n_vocab, &t))) return s;
    for (int32_t i = 0; i < n_vocab && !s; i++) {
        float score = scores ? (float)arr_number(scores, (uint64_t)i) : 0.0f;
        double type = types ? arr_number(types, (uint64_t)i) : TL_TOKEN_NORMAL;
        if (!(type >= TL_TOKEN_NORMAL && type <= TL_TOKEN_BYTE)) type = TL_TOKEN_NORMAL; /* 0 = undefined */
        s = tl_tokenizer_set_token(t, i, texts[i].ptr, texts[i].len, score, (tl_token_type)(int)type);
    }
    if (s) goto fail;

    /* defaults: llama.cpp llama_vocab::load */
    if (kind == TL_TOKENIZER_SPM) {
        t->bos = 1 < n_vocab ? 1 : -1;
        t->eos = 2 < n_vocab ? 2 : -1;
        t->unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
    }
    kv_token_id(w, "tokenizer.ggml.bos_token_id", t, &t->bos);
    kv_token_id(w, "tokenizer.ggml.eos_token_id", t, &t->eos);
    kv_token_id(w, "tokenizer.ggml.unknown_token_id", t, &t->unk);
    kv_token_id(w, "tokenizer.ggml.padding_token_id", t, &t->pad);
    kv_token_id(w, "tokenizer.ggml.eot_token_id", t, &t->eot);
    if ((s = tl_tokenizer_finish(t))) goto fail;
    /* more ids that end generation: EOM, and torchless.eog_token_ids (an HF folder's
     * generation_config.json eos_token_id list) */
    int32_t eom = -1;
    kv_token_id(w, "tokenizer.ggml.eom_token_id", t, &eom);
    const tl_kv *extra = tl_weights_find_kv(w, "torchless.eog_token_ids");
    uint64_t n_extra = extra && extra->value.type == TL_VAL_ARRAY && is_numeric(extra->value.arr.elem_type)
                           ? extra->value.arr.n : 0;
    if (eom >= 0 || n_extra) {
        /* room: finish() sized eog for the text list plus EOS and EOT */
        int32_t *eog = n_extra < (uint64_t)INT32_MAX
                           ? tl_arena_alloc_array(&t->arena, (size_t)t->n_eog + 1 + (size_t)n_extra, sizeof *eog, 4)
                           : NULL;
        if (!eog) {
            s = tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
            goto fail;
        }
        memcpy(eog, t->eog, (size_t)t->n_eog * sizeof *eog);
        t->eog = eog;
        eog_add(t, eom);
        for (uint64_t i = 0; i < n_extra; i++) {
            double id = arr_number(&extra->value, i);
            if (id >= 0 && id < t->n_vocab) eog_add(t, (int32_t)id);
        }
    }

    if (kind == TL_TOKENIZER_BPE) {
        const tl_kv *merges = tl_weights_find_kv(w, "tokenizer.ggml.merges");
        const tl_string *m = NULL;
        size_t n_merges = 0;
        if (merges) {
            if (merges->value.type != TL_VAL_ARRAY || merges->value.arr.elem_type != TL_VAL_STRING) {
                s = tl_set_error(TL_ERR_FORMAT, "tokenizer: tokenizer.ggml.merges is not an array of strings");
                goto fail;
            }
            m = merges->value.arr.data;
            n_merges = (size_t)merges->value.arr.n;
        }
        char pre[128] = "";
        const tl_kv *pkv = tl_weights_find_kv(w, "tokenizer.ggml.pre");
        if (pkv && pkv->value.type == TL_VAL_STRING) {
            size_t n = pkv->value.str.len < sizeof pre - 1 ? (size_t)pkv->value.str.len : sizeof pre - 1;
            memcpy(pre, pkv->value.str.ptr, n);
            pre[n] = 0;
        }
        if ((s = tl_bpe_setup(t, m, n_merges, pre))) goto fail;
    }
    /* explicit keys win over the defaults and over what the pre-tokenizer name implies */
    kv_bool(w, "tokenizer.ggml.add_bos_token", &t->add_bos);
    kv_bool(w, "tokenizer.ggml.add_eos_token", &t->add_eos);
    kv_bool(w, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    /* torchless.tokenizer.normalizer: "nfc" (HF tokenizer.json's NFC normalizer; GGUF has no key) */
    const tl_kv *nkv = tl_weights_find_kv(w, "torchless.tokenizer.normalizer");
    if (nkv) {
        if (nkv->value.type != TL_VAL_STRING || !tl_string_eq_cstr(nkv->value.str, "nfc")) {
            s = tl_set_error(TL_ERR_UNSUPPORTED, "tokenizer: torchless.tokenizer.normalizer must be \"nfc\"");
            goto fail;
        }
        t->nfc = true;
    }
    if (t->add_bos && t->bos < 0) t->add_bos = false;
    if (t->add_eos && t->eos < 0) t->add_eos = false;
    *out = t;
    return TL_OK;
fail:
    tl_tokenizer_free(t);
    return s;
}

tl_status tl_tokenizer_open(const char *path, tl_tokenizer **out) {
    *out = NULL;
    struct stat st;
    if (path && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) { /* a Hugging Face folder */
        tl_weights *w;
        tl_status s = tl_weights_open(path, &w);
        if (s) return s;
        s = tl_tokenizer_from_weights(w, out);
        tl_weights_free(w);
        return s;
    }
    tl_mapping *m;
    tl_status s = tl_mapping_open(path, &m);
    if (s) return s;
    const uint8_t *data = tl_mapping_data(m);
    size_t size = tl_mapping_size(m);
    if ((size >= 4 && memcmp(data, "GGUF", 4) == 0) || (size >= 8 && memcmp(data, "TLESS\0\0\0", 8) == 0)) {
        tl_mapping_release(m);
        tl_weights *w;
        if ((s = tl_weights_open(path, &w))) return s;
        s = tl_tokenizer_from_weights(w, out);
        tl_weights_free(w);
        return s;
    }
    /* A ModelProto starts with field 1 (pieces), length-delimited: byte 0x0A. A llama2.c
     * tokenizer.bin starts with int32 max_token_length, which may be 10 too: when the
     * protobuf reading fails, try tokenizer.bin before reporting the protobuf error. */
    if (size > 0 && data[0] == 0x0A) {
        s = tl_spm_model_load(data, size, path, out);
        if (s) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tl_last_error());
            tl_status s2 = tl_llama2c_tokenizer_load(data, size, path, out);
            if (s2) tl_set_error(s, "%s", msg);
            else s = TL_OK;
        }
    } else {
        s = tl_llama2c_tokenizer_load(data, size, path, out);
    }
    tl_mapping_release(m);
    return s;
}

/* ---------------------------------------------------------------- getters */

tl_tokenizer_kind tl_tokenizer_get_kind(const tl_tokenizer *t) { return t->kind; }
int32_t tl_tokenizer_n_vocab(const tl_tokenizer *t) { return t->n_vocab; }
int32_t tl_tokenizer_bos(const tl_tokenizer *t) { return t->bos; }
int32_t tl_tokenizer_eos(const tl_tokenizer *t) { return t->eos; }
bool tl_tokenizer_add_bos_default(const tl_tokenizer *t) { return t->add_bos; }

bool tl_tokenizer_is_eog(const tl_tokenizer *t, int32_t id) { return id >= 0 && eog_contains(t, id); }

const char *tl_tokenizer_token_text(const tl_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text_len[id];
    return t->text[id];
}

float tl_tokenizer_token_score(const tl_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->scores[id] : 0.0f;
}

tl_token_type tl_tokenizer_token_type(const tl_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? (tl_token_type)t->types[id] : (tl_token_type)0;
}

/* ---------------------------------------------------------------- text -> ids */

/* A piece of the input: raw text (id < 0) or one special token. */
typedef struct fragment {
    size_t off, len;
    int32_t id;
} fragment;

typedef struct fragments {
    fragment *v;
    size_t n, cap;
} fragments;

static tl_status frag_push(fragments *f, size_t off, size_t len, int32_t id) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        fragment *v = realloc(f->v, cap * sizeof *v);
        if (!v) return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (fragment){off, len, id};
    return TL_OK;
}

/* llama.cpp tokenizer_st_partition: for each special token, longest text first, split
 * every remaining raw fragment at each of its occurrences (left to right). User-defined
 * tokens are always split out; control and unknown ones only when `special`. */
static tl_status partition(const tl_tokenizer *t, const char *text, size_t len, bool special, fragments *out) {
    fragments cur = {0}, next = {0};
    tl_status s = TL_OK;
    if (len && (s = frag_push(&cur, 0, len, -1))) goto done;
    for (int32_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        uint8_t type = t->types[id];
        if (!special && type != TL_TOKEN_USER_DEFINED) continue;
        const char *tok = t->text[id];
        size_t tok_len = t->text_len[id];
        bool found = false;
        for (size_t i = 0; i < cur.n && !found; i++)
            found = cur.v[i].id < 0 && cur.v[i].len >= tok_len && memmem(text + cur.v[i].off, cur.v[i].len, tok, tok_len);
        if (!found) continue;
        next.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            fragment f = cur.v[i];
            if (f.id >= 0) {
                if ((s = frag_push(&next, f.off, f.len, f.id))) goto done;
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            while (pos < end) {
                const char *hit = end - pos >= tok_len ? memmem(text + pos, end - pos, tok, tok_len) : NULL;
                if (!hit) {
                    s = frag_push(&next, pos, end - pos, -1);
                    break;
                }
                size_t at = (size_t)(hit - text);
                if (at > pos && (s = frag_push(&next, pos, at - pos, -1))) break;
                if ((s = frag_push(&next, at, tok_len, id))) break;
                pos = at + tok_len;
            }
            if (s) goto done;
        }
        fragments tmp = cur;
        cur = next;
        next = tmp;
    }
done:
    free(next.v);
    if (s) {
        free(cur.v);
        return s;
    }
    *out = cur;
    return TL_OK;
}

/* SentencePiece normalization of one raw fragment: optional removal of extra spaces,
 * the dummy prefix, and ' ' -> U+2581. Returns the length written to buf (which holds
 * 3 * (len + 1) bytes). */
static size_t spm_escape(const tl_tokenizer *t, const char *text, size_t len, bool dummy_prefix, char *buf) {
    static const char space[3] = {'\xe2', '\x96', '\x81'};
    size_t start = 0, end = len;
    if (t->remove_extra_whitespaces) {
        while (start < end && text[start] == ' ') start++;
        while (end > start && text[end - 1] == ' ') end--;
        if (start == end) return 0;
    }
    size_t n = 0;
    if (dummy_prefix) {
        memcpy(buf, space, 3);
        n = 3;
    }
    for (size_t i = start; i < end; i++) {
        if (text[i] == ' ') {
            if (t->remove_extra_whitespaces && i > start && text[i - 1] == ' ') continue;
            memcpy(buf + n, space, 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    /* sentencepiece strips trailing U+2581 after escaping, so a literal '▁' at the end goes too */
    if (t->remove_extra_whitespaces)
        while (n >= 3 && memcmp(buf + n - 3, space, 3) == 0) n -= 3;
    return n;
}

static tl_status tokenize_to(const tl_tokenizer *t, const char *text, size_t len, bool add_bos, bool special,
                             tl_ids *out) {
    tl_status s;
    if (add_bos) {
        if (t->bos < 0) return tl_set_error(TL_ERR_INVALID, "tokenizer: add_bos requested but the vocabulary has no BOS");
        if ((s = tl_ids_push(out, t->bos))) return s;
    }
    fragments frags = {0};
    if ((s = partition(t, text, len, special, &frags))) return s;
    char *buf = NULL;
    size_t buf_cap = 0;
    bool prev_special = true; /* llama.cpp: the dummy prefix goes before the first fragment and after specials */
    for (size_t i = 0; i < frags.n && !s; i++) {
        fragment f = frags.v[i];
        if (f.id >= 0) {
            s = tl_ids_push(out, f.id);
            prev_special = true;
            continue;
        }
        /* the normalizer runs on the plain text between special tokens, as HF tokenizers' does */
        const char *ftext = text + f.off;
        size_t flen = f.len;
        char *norm = NULL;
        if (t->nfc) {
            if ((s = tl_utf8_nfc(ftext, flen, &norm, &flen))) break;
            if (norm) ftext = norm;
            else flen = f.len;
        }
        if (t->kind == TL_TOKENIZER_BPE) {
            s = tl_bpe_encode(t, ftext, flen, out);
            free(norm);
            continue;
        }
        size_t need;
        if (tl_add_overflows(flen, 1, &need) || tl_mul_overflows(need, 3, &need)) {
            free(norm);
            s = tl_set_error(TL_ERR_NOMEM, "tokenizer: text too long");
            break;
        }
        if (need > buf_cap) {
            char *nb = realloc(buf, need);
            if (!nb) {
                free(norm);
                s = tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for %zu bytes of text", flen);
                break;
            }
            buf = nb;
            buf_cap = need;
        }
        size_t n = spm_escape(t, ftext, flen, t->add_space_prefix && prev_special, buf);
        free(norm);
        if (n == 0) continue;
        s = tl_spm_encode(t, buf, n, out);
        prev_special = false;
    }
    free(buf);
    free(frags.v);
    if (!s && add_bos && t->add_eos && t->eos >= 0) s = tl_ids_push(out, t->eos);
    return s;
}

tl_status tl_tokenize(const tl_tokenizer *t, const char *text, size_t len, bool add_bos, bool special,
                      int32_t *ids, size_t cap, size_t *n_out) {
    *n_out = 0;
    if (!text && len) return tl_set_error(TL_ERR_INVALID, "tokenize: text is NULL");
    tl_ids out = {0};
    tl_status s = tokenize_to(t, text ? text : "", len, add_bos, special, &out);
    if (!s) {
        *n_out = out.n;
        if (out.n && ids) memcpy(ids, out.v, (out.n < cap ? out.n : cap) * sizeof *ids);
    }
    tl_ids_free(&out);
    return s;
}

/* ---------------------------------------------------------------- ids -> text */

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Appends src to buf (capacity cap, used *n), counting what does not fit. */
static void put(char *buf, size_t cap, size_t *n, const char *src, size_t len) {
    if (*n < cap) memcpy(buf + *n, src, len < cap - *n ? len : cap - *n);
    *n += len;
}

/* One token's bytes; strip_space drops the leading ' ' of an SPM piece (the dummy prefix). */
static void piece(const tl_tokenizer *t, int32_t id, bool special, bool strip_space, char *buf, size_t cap, size_t *n) {
    const char *text = t->text[id];
    size_t len = t->text_len[id];
    uint8_t type = t->types[id];
    if (type == TL_TOKEN_CONTROL || type == TL_TOKEN_UNKNOWN) {
        if (special) put(buf, cap, n, text, len);
        return;
    }
    if (type == TL_TOKEN_USER_DEFINED) {
        put(buf, cap, n, text, len);
        return;
    }
    if (t->kind == TL_TOKENIZER_BPE) {
        char small[64];
        size_t need = tl_bpe_token_bytes(text, len, small, sizeof small);
        if (need <= sizeof small) {
            put(buf, cap, n, small, need);
        } else if (*n + need <= cap) {
            tl_bpe_token_bytes(text, len, buf + *n, need);
            *n += need;
        } else {
            char *tmp = malloc(need);
            if (tmp) {
                tl_bpe_token_bytes(text, len, tmp, need);
                put(buf, cap, n, tmp, need);
                free(tmp);
            } else {
                *n += need; /* the caller retries with a larger buffer */
            }
        }
        return;
    }
    if (type == TL_TOKEN_BYTE && len == 6 && memcmp(text, "<0x", 3) == 0 && text[5] == '>' && hex_digit(text[3]) >= 0 &&
        hex_digit(text[4]) >= 0) {
        char b = (char)(hex_digit(text[3]) * 16 + hex_digit(text[4]));
        put(buf, cap, n, &b, 1);
        return;
    }
    /* NORMAL and UNUSED (sentencepiece decodes unused pieces as text): U+2581 -> ' ' */
    size_t i = 0;
    while (i < len) {
        if (i + 3 <= len && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            if (!(strip_space && i == 0)) put(buf, cap, n, " ", 1);
            i += 3;
            continue;
        }
        size_t j = i;
        while (j < len && !(j + 3 <= len && memcmp(text + j, "\xe2\x96\x81", 3) == 0)) j++;
        put(buf, cap, n, text + i, j - i);
        i = j;
    }
}

tl_status tl_token_to_piece(const tl_tokenizer *t, int32_t id, bool special, char *buf, size_t cap, size_t *n_out) {
    *n_out = 0;
    if (id < 0 || id >= t->n_vocab)
        return tl_set_error(TL_ERR_INVALID, "token id %d out of range [0, %d)", id, t->n_vocab);
    piece(t, id, special, false, buf, cap, n_out);
    return TL_OK;
}

tl_status tl_detokenize(const tl_tokenizer *t, const int32_t *ids, size_t n, bool special, char *buf, size_t cap,
                        size_t *n_out) {
    *n_out = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return tl_set_error(TL_ERR_INVALID, "token id %d (at %zu) out of range [0, %d)", ids[i], i, t->n_vocab);
    /* sentencepiece: the first piece after the start of the text loses the space the
     * dummy prefix stands for; control tokens before it (BOS) do not count as text */
    bool at_start = t->kind == TL_TOKENIZER_SPM && t->add_space_prefix;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t before = used;
        uint8_t type = t->types[ids[i]];
        piece(t, ids[i], special, at_start, buf, cap, &used);
        if (type != TL_TOKEN_CONTROL && type != TL_TOKEN_UNKNOWN) at_start = false;
        else if (used > before) at_start = false;
    }
    *n_out = used;
    return TL_OK;
}
