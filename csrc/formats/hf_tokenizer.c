/* A Hugging Face folder's tokenizer as llama.cpp's tokenizer.ggml.* keys, so that
 * tl_tokenizer_from_weights builds it like any GGUF vocabulary.
 *
 * tokenizer.json (the `tokenizers` library's format), model.type BPE only:
 *   - byte-level (a ByteLevel pre-tokenizer or decoder): tokenizer.ggml.model = "gpt2",
 *     the vocabulary and merges as they are, tokenizer.ggml.pre chosen by recognising
 *     the pre-tokenizer (the Split regex and its steps) among the ones pretokenize.c
 *     implements. An unknown pre-tokenizer is an error, not a guess: a wrong pre name
 *     gives different token ids without any other sign.
 *   - SentencePiece style (byte_fallback, U+2581 for spaces): tokenizer.ggml.model =
 *     "llama". Pieces, scores and types come from tokenizer.model when the folder has
 *     one (spm_model.c reads it); otherwise score(token) = -rank of the first merge that
 *     produces it, so SentencePiece's "best-scored pair first" merges in the order of
 *     the merge list. add_space_prefix from the Prepend normalizer / Metaspace.
 * Token types: added special tokens CONTROL, other added tokens USER_DEFINED, <0xNN>
 * BYTE (SentencePiece style), the unk token UNKNOWN; ids with no token up to the
 * embedding's rows are "[PADn]" UNUSED (as llama.cpp's converter writes them).
 * add_bos/add_eos from tokenizer_config.json, else from the post-processor.
 * Special ids: tokenizer_config.json's tokens, else config.json / generation_config.json
 * ids. generation_config.json's eos_token_id list -> torchless.eog_token_ids.
 * Chat template: chat_template.jinja, else tokenizer_config.json's chat_template. */
#include "formats/hf.h"

#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHOW(len) ((int)((len) > 120 ? 120 : (len)))

typedef struct tok_build {
    hf_table *h;
    char path[1200]; /* tokenizer.json, for messages */
    const tl_json *root, *model, *vocab, *added;
    bool byte_level;
    bool from_model;     /* pieces came from tokenizer.model; tokenizer.json only fills gaps */
    int32_t n;           /* vocabulary size being written */
    tl_string *tokens;   /* in w->arena */
    int32_t *types;
    float *scores;       /* SentencePiece style only */
    int64_t bos, eos, unk, pad;
    int add_bos, add_eos, space_prefix; /* -1 = not known */
} tok_build;

static bool str_is(const tl_json *v, const char *s) { return v && v->kind == TL_JSON_STRING && strcmp(v->string.ptr, s) == 0; }

static const tl_json *member(const tl_json *v, const char *key) {
    const tl_json *x = tl_json_get(v, key);
    return x && x->kind != TL_JSON_NULL ? x : NULL;
}

/* The "type" of a tokenizers component, for messages. */
static const char *type_name(const tl_json *v) {
    const tl_json *t = member(v, "type");
    return t && t->kind == TL_JSON_STRING ? t->string.ptr : "?";
}

/* Steps of a normalizer / pre-tokenizer / decoder, Sequences flattened (one level is
 * all tokenizers writes; nested ones are walked too). */
typedef struct steps {
    const tl_json *v[32];
    int n;
} steps;

static void flatten(const tl_json *v, const char *list_key, steps *out, int depth) {
    if (!v || v->kind != TL_JSON_OBJECT || depth > 4) return;
    if (str_is(member(v, "type"), "Sequence")) {
        const tl_json *items = member(v, list_key);
        for (size_t i = 0; items && i < tl_json_len(items); i++) flatten(tl_json_index(items, i), list_key, out, depth + 1);
        return;
    }
    if (out->n < 32) out->v[out->n++] = v;
}

static bool has_type(const steps *s, const char *type) {
    for (int i = 0; i < s->n; i++)
        if (str_is(member(s->v[i], "type"), type)) return true;
    return false;
}

/* ---------------------------------------------------------------- byte-level pre-tokenizers */

/* The Split regexes we recognise, as tokenizers writes them and as llama.cpp spells them. */
static const struct {
    const char *regex, *name;
} split_regexes[] = {
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "gpt2"},
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt2"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "llama3"},
    {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "llama3"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "qwen2"},
    {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "qwen2"},
};

/* Step signatures, joined by ',' and matched against the known pipelines. */
static const struct {
    const char *sig, *pre;
} pipelines[] = {
    {"bytelevel+regex", "gpt-2"},
    {"split:gpt2,bytelevel", "gpt-2"},
    {"split:llama3,bytelevel", "llama-bpe"},
    {"split:qwen2,bytelevel", "qwen2"},
    {"digits,bytelevel+regex", "smollm"},
};

static tl_status byte_level_pre(tok_build *b, const steps *pre, const char **out) {
    char sig[256] = "";
    for (int i = 0; i < pre->n; i++) {
        const tl_json *st = pre->v[i];
        const tl_json *type = member(st, "type");
        char one[64];
        if (str_is(type, "ByteLevel")) {
            const tl_json *aps = member(st, "add_prefix_space"), *ur = member(st, "use_regex");
            if (aps && aps->kind == TL_JSON_BOOL && aps->boolean)
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: ByteLevel pre-tokenizer with add_prefix_space=true is not supported",
                                    b->path);
            bool regex = !(ur && ur->kind == TL_JSON_BOOL && !ur->boolean);
            snprintf(one, sizeof one, "%s", regex ? "bytelevel+regex" : "bytelevel");
        } else if (str_is(type, "Split")) {
            const tl_json *pat = member(st, "pattern"), *re = pat ? member(pat, "Regex") : NULL;
            const tl_json *beh = member(st, "behavior"), *inv = member(st, "invert");
            if (!re || re->kind != TL_JSON_STRING || (beh && !str_is(beh, "Isolated")) ||
                (inv && inv->kind == TL_JSON_BOOL && inv->boolean))
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: only Split pre-tokenizers with a Regex pattern and "
                                    "behavior Isolated are supported", b->path);
            const char *name = NULL;
            for (size_t k = 0; k < sizeof split_regexes / sizeof split_regexes[0] && !name; k++)
                if (strcmp(re->string.ptr, split_regexes[k].regex) == 0) name = split_regexes[k].name;
            if (!name)
                return tl_set_error(TL_ERR_UNSUPPORTED,
                                    "hf: %s: the Split pre-tokenizer regex '%.*s' is not one torchless knows (GPT-2, "
                                    "LLaMA-3, Qwen2); its tokenization would be wrong",
                                    b->path, SHOW(re->string.len), re->string.ptr);
            snprintf(one, sizeof one, "split:%s", name);
        } else if (str_is(type, "Digits")) {
            const tl_json *ind = member(st, "individual_digits");
            if (!(ind && ind->kind == TL_JSON_BOOL && ind->boolean))
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: Digits pre-tokenizer without individual_digits is not supported",
                                    b->path);
            snprintf(one, sizeof one, "digits");
        } else {
            return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: pre-tokenizer '%s' is not supported for byte-level BPE", b->path,
                                type_name(st));
        }
        size_t n = strlen(sig);
        snprintf(sig + n, sizeof sig - n, "%s%s", n ? "," : "", one);
    }
    for (size_t k = 0; k < sizeof pipelines / sizeof pipelines[0]; k++) {
        if (strcmp(sig, pipelines[k].sig) == 0) {
            *out = pipelines[k].pre;
            return TL_OK;
        }
    }
    return tl_set_error(TL_ERR_UNSUPPORTED,
                        "hf: %s: pre-tokenizer steps [%s] are not supported (known: ByteLevel; Split(GPT-2 | LLaMA-3 | "
                        "Qwen2 regex) + ByteLevel; Digits + ByteLevel)",
                        b->path, sig);
}

/* ---------------------------------------------------------------- SentencePiece style */

static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581 */

static tl_status spm_prefix(tok_build *b, const steps *norm, const steps *pre) {
    b->space_prefix = 0;
    for (int i = 0; i < norm->n; i++) {
        const tl_json *st = norm->v[i], *type = member(st, "type");
        if (str_is(type, "Prepend")) {
            if (!str_is(member(st, "prepend"), SPACE_MARK))
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: a Prepend normalizer of something other than U+2581 is not supported",
                                    b->path);
            b->space_prefix = 1;
        } else if (str_is(type, "Replace")) {
            const tl_json *pat = member(st, "pattern");
            if (!(pat && str_is(member(pat, "String"), " ") && str_is(member(st, "content"), SPACE_MARK)))
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: only the Replace(' ' -> U+2581) normalizer is supported",
                                    b->path);
        } else {
            return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: normalizer '%s' is not supported for SentencePiece-style BPE",
                                b->path, type_name(st));
        }
    }
    for (int i = 0; i < pre->n; i++) {
        const tl_json *st = pre->v[i], *type = member(st, "type");
        const tl_json *pat = str_is(type, "Split") ? member(st, "pattern") : NULL;
        if (pat && str_is(member(pat, "String"), " ") && has_type(norm, "Replace"))
            continue; /* Gemma: splitting at ' ' after the normalizer replaced every ' ' does nothing */
        if (!str_is(type, "Metaspace"))
            return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: pre-tokenizer '%s' is not supported for SentencePiece-style BPE",
                                b->path, type_name(st));
        const tl_json *rep = member(st, "replacement"), *scheme = member(st, "prepend_scheme"),
                      *aps = member(st, "add_prefix_space");
        if (rep && !str_is(rep, SPACE_MARK))
            return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: Metaspace replacement other than U+2581", b->path);
        if (scheme) b->space_prefix = !str_is(scheme, "never");
        else if (aps && aps->kind == TL_JSON_BOOL) b->space_prefix = aps->boolean;
        else b->space_prefix = 1;
    }
    return TL_OK;
}

/* ---------------------------------------------------------------- vocabulary */

static tl_status set_token(tok_build *b, int64_t id, const char *s, size_t len) {
    return tl_weights_strdup(b->h->w, s, len, &b->tokens[id]);
}

/* Id of the token with text (s, len): added tokens first, then the vocabulary. */
static int64_t find_token(const tok_build *b, const char *s, size_t len) {
    for (size_t i = 0; b->added && i < tl_json_len(b->added); i++) {
        const tl_json *a = tl_json_index(b->added, i), *c = member(a, "content"), *id = member(a, "id");
        if (c && c->kind == TL_JSON_STRING && c->string.len == len && memcmp(c->string.ptr, s, len) == 0 && id &&
            id->kind == TL_JSON_NUMBER && id->number.is_int)
            return id->number.i64;
    }
    const tl_json *v = b->vocab ? tl_json_get_n(b->vocab, s, len) : NULL;
    if (v && v->kind == TL_JSON_NUMBER && v->number.is_int) return v->number.i64;
    if (b->tokens && len) /* tokenizer.model pieces not in tokenizer.json */
        for (int32_t i = 0; i < b->n; i++)
            if (b->tokens[i].len == len && memcmp(b->tokens[i].ptr, s, len) == 0) return i;
    return -1;
}

/* The size of the vocabulary: the largest id + 1 over vocab and added tokens. */
static tl_status vocab_size(tok_build *b, int64_t *n) {
    *n = 0;
    for (size_t i = 0; i < b->vocab->object.n; i++) {
        const tl_json_member *m = &b->vocab->object.members[i];
        if (m->value.kind != TL_JSON_NUMBER || !m->value.number.is_int || m->value.number.i64 < 0 ||
            m->value.number.i64 >= (1 << 28))
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: vocab entry '%.*s' has no valid id", b->path, SHOW(m->key_len), m->key);
        if (m->value.number.i64 + 1 > *n) *n = m->value.number.i64 + 1;
    }
    for (size_t i = 0; b->added && i < tl_json_len(b->added); i++) {
        const tl_json *a = tl_json_index(b->added, i), *id = member(a, "id"), *c = member(a, "content");
        if (!id || id->kind != TL_JSON_NUMBER || !id->number.is_int || id->number.i64 < 0 || id->number.i64 >= (1 << 28) ||
            !c || c->kind != TL_JSON_STRING)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: added_tokens entry %zu needs an 'id' and a 'content'", b->path, i);
        if (id->number.i64 + 1 > *n) *n = id->number.i64 + 1;
    }
    return TL_OK;
}

static tl_status alloc_arrays(tok_build *b, bool scores) {
    tl_weights *w = b->h->w;
    b->tokens = tl_arena_alloc_array(&w->arena, (size_t)b->n, sizeof *b->tokens, 8);
    b->types = tl_arena_alloc_array(&w->arena, (size_t)b->n, sizeof *b->types, 8);
    b->scores = scores ? tl_arena_alloc_array(&w->arena, (size_t)b->n, sizeof *b->scores, 8) : NULL;
    if (!b->tokens || !b->types || (scores && !b->scores)) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory for the vocabulary");
    memset(b->tokens, 0, (size_t)b->n * sizeof *b->tokens);
    if (scores) memset(b->scores, 0, (size_t)b->n * sizeof *b->scores);
    for (int32_t i = 0; i < b->n; i++) b->types[i] = 0; /* 0: no token yet */
    return TL_OK;
}

/* Vocabulary texts from tokenizer.json; a second text for one id is an error. */
static tl_status fill_vocab(tok_build *b) {
    tl_status s;
    for (size_t i = 0; i < b->vocab->object.n; i++) {
        const tl_json_member *m = &b->vocab->object.members[i];
        int64_t id = m->value.number.i64;
        if (b->types[id] && !b->from_model)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: id %lld is given to two vocab entries", b->path, (long long)id);
        if (b->types[id]) continue; /* tokenizer.model already has it */
        if ((s = set_token(b, id, m->key, m->key_len))) return s;
        b->types[id] = TL_TOKEN_NORMAL;
        if (!b->byte_level && m->key_len == 6 && memcmp(m->key, "<0x", 3) == 0 && m->key[5] == '>') b->types[id] = TL_TOKEN_BYTE;
    }
    return TL_OK;
}

static tl_status fill_added_and_pad(tok_build *b) {
    tl_status s;
    for (size_t i = 0; b->added && i < tl_json_len(b->added); i++) {
        const tl_json *a = tl_json_index(b->added, i), *c = member(a, "content"), *sp = member(a, "special");
        int64_t id = member(a, "id")->number.i64;
        if ((s = set_token(b, id, c->string.ptr, c->string.len))) return s;
        b->types[id] = sp && sp->kind == TL_JSON_BOOL && sp->boolean ? TL_TOKEN_CONTROL : TL_TOKEN_USER_DEFINED;
        if (b->scores) b->scores[id] = 0.0f;
    }
    for (int32_t i = 0; i < b->n; i++) {
        if (b->types[i]) continue;
        char pad[32];
        int len = snprintf(pad, sizeof pad, "[PAD%d]", i);
        if ((s = set_token(b, i, pad, (size_t)len))) return s;
        b->types[i] = TL_TOKEN_UNUSED;
        if (b->scores) b->scores[i] = -1e9f;
    }
    if (b->unk >= 0 && b->unk < b->n && b->types[b->unk] != TL_TOKEN_USER_DEFINED) b->types[b->unk] = TL_TOKEN_UNKNOWN;
    return TL_OK;
}

/* One merge as its two sides. */
static tl_status merge_sides(const tok_build *b, size_t i, const tl_json *m, const char **l, size_t *ll, const char **r,
                             size_t *rl) {
    if (m->kind == TL_JSON_STRING) {
        const char *sp = memchr(m->string.ptr, ' ', m->string.len);
        if (!sp || sp == m->string.ptr) goto bad;
        *l = m->string.ptr;
        *ll = (size_t)(sp - m->string.ptr);
        *r = sp + 1;
        *rl = m->string.len - *ll - 1;
        if (*rl == 0 || memchr(*r, ' ', *rl)) goto bad;
        return TL_OK;
    }
    if (m->kind == TL_JSON_ARRAY && m->array.n == 2 && m->array.items[0].kind == TL_JSON_STRING &&
        m->array.items[1].kind == TL_JSON_STRING) {
        *l = m->array.items[0].string.ptr;
        *ll = m->array.items[0].string.len;
        *r = m->array.items[1].string.ptr;
        *rl = m->array.items[1].string.len;
        return TL_OK;
    }
bad:
    return tl_set_error(TL_ERR_FORMAT, "hf: %s: merge %zu is not \"left right\" or [left, right]", b->path, i);
}

/* gpt2: tokenizer.ggml.merges as "left right" strings. */
static tl_status put_merges(tok_build *b, const tl_json *merges) {
    size_t n = tl_json_len(merges);
    tl_weights *w = b->h->w;
    tl_string *out = tl_arena_alloc_array(&w->arena, n ? n : 1, sizeof *out, 8);
    if (!out) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory for %zu merges", n);
    tl_status s;
    for (size_t i = 0; i < n; i++) {
        const tl_json *m = tl_json_index(merges, i);
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if ((s = merge_sides(b, i, m, &l, &ll, &r, &rl))) return s;
        if (m->kind == TL_JSON_STRING) {
            if ((s = tl_weights_strdup(w, m->string.ptr, m->string.len, &out[i]))) return s;
        } else {
            char *p = tl_arena_alloc(&w->arena, ll + rl + 2, 1);
            if (!p) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
            memcpy(p, l, ll);
            p[ll] = ' ';
            memcpy(p + ll + 1, r, rl);
            p[ll + rl + 1] = '\0';
            out[i] = (tl_string){p, ll + rl + 1};
        }
    }
    return hf_put(b->h, "tokenizer.ggml.merges",
                  (tl_value){.type = TL_VAL_ARRAY, .arr = {.elem_type = TL_VAL_STRING, .n = n, .data = out}});
}

/* SentencePiece style without tokenizer.model: score = -rank of the first merge making the token. */
static tl_status scores_from_merges(tok_build *b, const tl_json *merges) {
    size_t n = tl_json_len(merges);
    const float base = -(float)n - 1.0f;
    bool *set = calloc((size_t)b->n, 1);
    if (!set) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    for (int32_t i = 0; i < b->n; i++) b->scores[i] = base;
    char small[256];
    tl_status s = TL_OK;
    for (size_t i = 0; i < n && !s; i++) {
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if ((s = merge_sides(b, i, tl_json_index(merges, i), &l, &ll, &r, &rl))) break;
        char *buf = ll + rl <= sizeof small ? small : malloc(ll + rl);
        if (!buf) {
            s = tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
            break;
        }
        memcpy(buf, l, ll);
        memcpy(buf + ll, r, rl);
        const tl_json *v = tl_json_get_n(b->vocab, buf, ll + rl);
        if (buf != small) free(buf);
        if (!v) continue; /* tokenizers refuses such files; nothing to score */
        int64_t id = v->number.i64;
        if (!set[id]) {
            set[id] = true;
            b->scores[id] = -(float)i;
        }
    }
    free(set);
    return s;
}

/* tokenizer.model's pieces, scores and types, when the folder has one we can read. */
static bool from_spm_model(tok_build *b, int64_t n_min) {
    char path[1200];
    if (!hf_path(b->h, "tokenizer.model", path, sizeof path) || !hf_file_exists(path)) return false;
    tl_mapping *map;
    if (tl_mapping_open(path, &map)) return false;
    tl_tokenizer *t = NULL;
    tl_status s = tl_spm_model_load(tl_mapping_data(map), tl_mapping_size(map), path, &t);
    tl_mapping_release(map);
    if (s) return false; /* tokenizer.json is what transformers uses: fall back to it */
    b->n = t->n_vocab > n_min ? t->n_vocab : (int32_t)n_min;
    if (alloc_arrays(b, true)) {
        tl_tokenizer_free(t);
        return false;
    }
    for (int32_t i = 0; i < t->n_vocab && !s; i++) {
        s = set_token(b, i, t->text[i], t->text_len[i]);
        b->scores[i] = t->scores[i];
        b->types[i] = t->types[i];
    }
    b->from_model = true;
    if (b->space_prefix < 0) b->space_prefix = t->add_space_prefix;
    if (b->bos < 0) b->bos = t->bos;
    if (b->eos < 0) b->eos = t->eos;
    if (b->unk < 0) b->unk = t->unk;
    tl_tokenizer_free(t);
    return s == TL_OK;
}

/* ---------------------------------------------------------------- special tokens */

/* A token given as "text" or {"content": "text"} -> id (-1 when absent or unknown). */
static int64_t token_ref(const tok_build *b, const tl_json *v) {
    if (v && v->kind == TL_JSON_OBJECT) v = member(v, "content");
    if (!v || v->kind != TL_JSON_STRING) return -1;
    return find_token(b, v->string.ptr, v->string.len);
}

static void post_processor(tok_build *b, const tl_json *pp, int depth) {
    if (!pp || pp->kind != TL_JSON_OBJECT || depth > 4) return;
    const tl_json *type = member(pp, "type");
    if (str_is(type, "ByteLevel")) {
        if (b->add_bos < 0) b->add_bos = 0;
        if (b->add_eos < 0) b->add_eos = 0;
    } else if (str_is(type, "Sequence")) {
        const tl_json *list = member(pp, "processors");
        for (size_t i = 0; list && i < tl_json_len(list); i++) post_processor(b, tl_json_index(list, i), depth + 1);
    } else if (str_is(type, "TemplateProcessing")) {
        const tl_json *single = member(pp, "single"), *specials = member(pp, "special_tokens");
        bool seen_a = false;
        int bos = 0, eos = 0;
        for (size_t i = 0; single && i < tl_json_len(single); i++) {
            const tl_json *item = tl_json_index(single, i), *sp = member(item, "SpecialToken");
            if (member(item, "Sequence")) {
                seen_a = true;
                continue;
            }
            const tl_json *name = sp ? member(sp, "id") : NULL;
            if (!name || name->kind != TL_JSON_STRING) continue;
            int64_t id = -1;
            const tl_json *entry = specials ? tl_json_get(specials, name->string.ptr) : NULL;
            const tl_json *ids = entry ? member(entry, "ids") : NULL;
            const tl_json *first = ids ? tl_json_index(ids, 0) : NULL;
            if (first && first->kind == TL_JSON_NUMBER && first->number.is_int) id = first->number.i64;
            else id = find_token(b, name->string.ptr, name->string.len);
            if (!seen_a) {
                bos = 1;
                if (b->bos < 0) b->bos = id;
            } else {
                eos = 1;
                if (b->eos < 0) b->eos = id;
            }
        }
        b->add_bos = bos;
        b->add_eos = eos;
    }
}

static tl_status read_json(hf_table *h, const char *name, const tl_json **out) {
    char path[1200];
    *out = NULL;
    if (!hf_path(h, name, path, sizeof path) || !hf_file_exists(path)) return TL_OK;
    tl_status s = tl_json_parse_file(path, &h->scratch, out);
    if (s) return s;
    if ((*out)->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: expected a JSON object, got %s", path, tl_json_kind_name((*out)->kind));
    return TL_OK;
}

static tl_status chat_template(tok_build *b, const tl_json *tc) {
    hf_table *h = b->h;
    char path[1200];
    tl_status s;
    if (hf_path(h, "chat_template.jinja", path, sizeof path) && hf_file_exists(path)) {
        tl_mapping *m;
        if ((s = tl_mapping_open(path, &m))) return s;
        s = hf_put_str(h, "tokenizer.chat_template", (const char *)tl_mapping_data(m), tl_mapping_size(m));
        tl_mapping_release(m);
        return s;
    }
    const tl_json *ct = tc ? member(tc, "chat_template") : NULL;
    if (!ct) return TL_OK;
    if (ct->kind == TL_JSON_STRING) return hf_put_str(h, "tokenizer.chat_template", ct->string.ptr, ct->string.len);
    if (ct->kind != TL_JSON_ARRAY)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s/tokenizer_config.json: 'chat_template' must be a string or a list", h->dir);
    for (size_t i = 0; i < ct->array.n; i++) {
        const tl_json *e = &ct->array.items[i], *name = member(e, "name"), *tpl = member(e, "template");
        if (!name || name->kind != TL_JSON_STRING || !tpl || tpl->kind != TL_JSON_STRING)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s/tokenizer_config.json: 'chat_template' entry %zu needs 'name' and 'template'",
                                h->dir, i);
        char key[160];
        if (strcmp(name->string.ptr, "default") == 0) snprintf(key, sizeof key, "tokenizer.chat_template");
        else snprintf(key, sizeof key, "tokenizer.chat_template.%.100s", name->string.ptr);
        if (hf_has(h, key)) continue;
        if ((s = hf_put_str(h, key, tpl->string.ptr, tpl->string.len))) return s;
    }
    return TL_OK;
}

/* An id field of config.json / generation_config.json: an int, or the first of a list. */
static int64_t first_id(const tl_json *obj, const char *key) {
    const tl_json *v = obj ? member(obj, key) : NULL;
    if (v && v->kind == TL_JSON_ARRAY) v = tl_json_index(v, 0);
    return v && v->kind == TL_JSON_NUMBER && v->number.is_int ? v->number.i64 : -1;
}

static tl_status special_keys(tok_build *b) {
    hf_table *h = b->h;
    tl_status s;
    const tl_json *tc, *gen;
    if ((s = read_json(h, "tokenizer_config.json", &tc)) || (s = read_json(h, "generation_config.json", &gen))) return s;
    if (tc) {
        int64_t id;
        if ((id = token_ref(b, member(tc, "bos_token"))) >= 0) b->bos = id;
        if ((id = token_ref(b, member(tc, "eos_token"))) >= 0) b->eos = id;
        if ((id = token_ref(b, member(tc, "unk_token"))) >= 0) b->unk = id;
        if ((id = token_ref(b, member(tc, "pad_token"))) >= 0) b->pad = id;
        const tl_json *ab = member(tc, "add_bos_token"), *ae = member(tc, "add_eos_token");
        if (ab && ab->kind == TL_JSON_BOOL) b->add_bos = ab->boolean;
        if (ae && ae->kind == TL_JSON_BOOL) b->add_eos = ae->boolean;
    }
    if (b->bos < 0) b->bos = first_id(h->config, "bos_token_id");
    if (b->bos < 0) b->bos = first_id(gen, "bos_token_id");
    if (b->eos < 0) b->eos = first_id(h->config, "eos_token_id");
    if (b->eos < 0) b->eos = first_id(gen, "eos_token_id");
    if (b->pad < 0) b->pad = first_id(h->config, "pad_token_id");

    static const char *const keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    const int64_t ids[4] = {b->bos, b->eos, b->unk, b->pad};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0 && ids[i] < b->n && (s = hf_put_u32(h, keys[i], (uint32_t)ids[i]))) return s;
    if (b->add_bos >= 0 && (s = hf_put_bool(h, "tokenizer.ggml.add_bos_token", b->add_bos))) return s;
    if (b->add_eos >= 0 && (s = hf_put_bool(h, "tokenizer.ggml.add_eos_token", b->add_eos))) return s;

    /* every end-of-sequence id generation_config.json (or config.json) lists ends generation */
    const tl_json *eos = gen ? member(gen, "eos_token_id") : NULL;
    if (!eos) eos = member(h->config, "eos_token_id");
    if (eos && (eos->kind == TL_JSON_ARRAY || eos->kind == TL_JSON_NUMBER)) {
        size_t n = eos->kind == TL_JSON_ARRAY ? eos->array.n : 1;
        int32_t *v = tl_arena_alloc_array(&h->w->arena, n ? n : 1, sizeof *v, 8);
        if (!v) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const tl_json *x = eos->kind == TL_JSON_ARRAY ? &eos->array.items[i] : eos;
            if (x->kind != TL_JSON_NUMBER || !x->number.is_int || x->number.i64 < 0 || x->number.i64 >= b->n)
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'eos_token_id' has an id outside the vocabulary (%d tokens)",
                                    h->dir, b->n);
            v[k++] = (int32_t)x->number.i64;
        }
        if (k && (s = hf_put(h, "torchless.eog_token_ids",
                             (tl_value){.type = TL_VAL_ARRAY, .arr = {.elem_type = TL_VAL_INT32, .n = k, .data = v}})))
            return s;
    }
    return chat_template(b, tc);
}

/* ---------------------------------------------------------------- the whole tokenizer */

static tl_status put_vocab_arrays(tok_build *b) {
    hf_table *h = b->h;
    tl_status s = hf_put(h, "tokenizer.ggml.tokens",
                         (tl_value){.type = TL_VAL_ARRAY, .arr = {.elem_type = TL_VAL_STRING, .n = (uint64_t)b->n, .data = b->tokens}});
    if (!s) s = hf_put(h, "tokenizer.ggml.token_type",
                       (tl_value){.type = TL_VAL_ARRAY, .arr = {.elem_type = TL_VAL_INT32, .n = (uint64_t)b->n, .data = b->types}});
    if (!s && b->scores)
        s = hf_put(h, "tokenizer.ggml.scores",
                   (tl_value){.type = TL_VAL_ARRAY, .arr = {.elem_type = TL_VAL_FLOAT32, .n = (uint64_t)b->n, .data = b->scores}});
    return s;
}

static tl_status from_tokenizer_json(tok_build *b, int64_t n_rows) {
    hf_table *h = b->h;
    tl_status s;
    if ((s = tl_json_parse_file(b->path, &h->scratch, &b->root))) return s;
    if (b->root->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: expected a JSON object, got %s", b->path, tl_json_kind_name(b->root->kind));
    b->model = member(b->root, "model");
    if (!b->model || b->model->kind != TL_JSON_OBJECT) return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'model' is missing", b->path);
    const tl_json *type = member(b->model, "type");
    if (type && !str_is(type, "BPE"))
        return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: tokenizer model type '%.40s' is not supported (only BPE)", b->path,
                            type->kind == TL_JSON_STRING ? type->string.ptr : "?");
    b->vocab = member(b->model, "vocab");
    const tl_json *merges = member(b->model, "merges");
    if (!b->vocab || b->vocab->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'model.vocab' must be an object of token -> id", b->path);
    static const tl_json no_merges = {.kind = TL_JSON_ARRAY};
    if (!merges) merges = &no_merges;
    if (merges->kind != TL_JSON_ARRAY) return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'model.merges' must be a list", b->path);
    b->added = member(b->root, "added_tokens");
    if (b->added && b->added->kind != TL_JSON_ARRAY)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'added_tokens' must be a list", b->path);
    const tl_json *suffix = member(b->model, "end_of_word_suffix"), *prefix = member(b->model, "continuing_subword_prefix");
    if ((suffix && tl_json_len(suffix)) || (prefix && tl_json_len(prefix)))
        return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: BPE with a subword prefix or word suffix is not supported", b->path);

    steps norm = {0}, pre = {0}, dec = {0};
    flatten(member(b->root, "normalizer"), "normalizers", &norm, 0);
    flatten(member(b->root, "pre_tokenizer"), "pretokenizers", &pre, 0);
    flatten(member(b->root, "decoder"), "decoders", &dec, 0);
    const tl_json *bf = member(b->model, "byte_fallback");
    bool byte_fallback = bf && bf->kind == TL_JSON_BOOL && bf->boolean;
    b->byte_level = has_type(&pre, "ByteLevel") || has_type(&dec, "ByteLevel");
    bool spm = !b->byte_level && (byte_fallback || has_type(&pre, "Metaspace") || has_type(&norm, "Replace") ||
                                  has_type(&norm, "Prepend") || has_type(&dec, "Metaspace"));
    if (!b->byte_level && !spm)
        return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: BPE that is neither byte-level nor SentencePiece-style (U+2581, "
                            "byte fallback) is not supported", b->path);

    const char *pre_name = NULL;
    bool nfc = false;
    if (b->byte_level) {
        for (int i = 0; i < norm.n; i++) {
            /* NFC (Qwen2) becomes torchless.tokenizer.normalizer; llama.cpp ignores it */
            if (!str_is(member(norm.v[i], "type"), "NFC"))
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: normalizer '%s' is not supported for byte-level BPE", b->path,
                                    type_name(norm.v[i]));
            nfc = true;
        }
        if ((s = byte_level_pre(b, &pre, &pre_name))) return s;
    } else if ((s = spm_prefix(b, &norm, &pre))) {
        return s;
    }

    int64_t n = 0;
    if ((s = vocab_size(b, &n))) return s;
    if (n_rows > n) n = n_rows;
    const tl_json *unk = member(b->model, "unk_token");
    if (unk && unk->kind == TL_JSON_STRING) b->unk = find_token(b, unk->string.ptr, unk->string.len);

    if (spm && from_spm_model(b, n)) {
        if ((s = fill_vocab(b))) return s; /* ids tokenizer.model lacks */
    } else {
        b->n = (int32_t)n;
        if ((s = alloc_arrays(b, spm)) || (s = fill_vocab(b))) return s;
        if (spm && (s = scores_from_merges(b, merges))) return s;
    }
    if ((s = fill_added_and_pad(b))) return s;

    if ((s = hf_put_str(h, "tokenizer.ggml.model", spm ? "llama" : "gpt2", spm ? 5 : 4))) return s;
    if (pre_name && (s = hf_put_str(h, "tokenizer.ggml.pre", pre_name, strlen(pre_name)))) return s;
    if (nfc && (s = hf_put_str(h, "torchless.tokenizer.normalizer", "nfc", 3))) return s;
    if ((s = put_vocab_arrays(b))) return s;
    if (!spm && (s = put_merges(b, merges))) return s;
    if (spm && (s = hf_put_bool(h, "tokenizer.ggml.add_space_prefix", b->space_prefix > 0))) return s;
    post_processor(b, member(b->root, "post_processor"), 0);
    if (!member(b->root, "post_processor")) b->add_bos = b->add_eos = 0; /* nothing added */
    return TL_OK;
}

tl_status tl_hf_tokenizer_keys(hf_table *h, int64_t n_rows) {
    tok_build b = {.h = h, .bos = -1, .eos = -1, .unk = -1, .pad = -1, .add_bos = -1, .add_eos = -1, .space_prefix = -1};
    tl_status s;
    if (!hf_path(h, "tokenizer.json", b.path, sizeof b.path)) return tl_set_error(TL_ERR_INVALID, "hf: path too long");
    if (hf_file_exists(b.path)) {
        if ((s = from_tokenizer_json(&b, n_rows))) return s;
    } else if (from_spm_model(&b, n_rows)) {
        hf_path(h, "tokenizer.model", b.path, sizeof b.path);
        if ((s = fill_added_and_pad(&b)) || (s = hf_put_str(h, "tokenizer.ggml.model", "llama", 5)) ||
            (s = put_vocab_arrays(&b)) ||
            (s = hf_put_bool(h, "tokenizer.ggml.add_space_prefix", b.space_prefix > 0)))
            return s;
    } else {
        return TL_OK; /* weights only */
    }
    return special_keys(&b);
}
