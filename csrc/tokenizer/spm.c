/* SentencePiece BPE (llama.cpp llm_tokenizer_spm, sentencepiece bpe_model.cc).
 *
 * The text (already normalized: spaces are U+2581, dummy prefix added) is split into
 * UTF-8 characters. Every adjacent pair whose concatenation is a vocabulary piece is a
 * candidate, scored by that piece's score; the best candidate (highest score, leftmost
 * on ties) is merged and the candidates next to it are refreshed, until none is left.
 * A final symbol that is not a piece becomes its bytes' <0xNN> tokens (byte fallback)
 * or, without byte tokens, one unk per run of unknown symbols.
 *
 * As in sentencepiece (and unlike llama.cpp), merges only produce NORMAL, USER_DEFINED
 * and UNUSED pieces: control, unknown and byte pieces are not reachable by merging
 * ("<s>" in text is "<", "s", ">"), and an UNUSED piece is split back into the pair it
 * was made of. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

typedef struct symbol {
    int32_t prev, next; /* neighbours in the linked list of live symbols; -1 at the ends */
    uint32_t off, n;    /* bytes of the text; n == 0 once merged into its left neighbour */
} symbol;

typedef struct bigram {
    int32_t left, right; /* symbol indices */
    float score;
    uint32_t size; /* bytes of the concatenation, to spot candidates made stale by a merge */
} bigram;

/* An UNUSED piece that a merge produced, remembered by text (sentencepiece rev_merge). */
typedef struct unused_merge {
    uint32_t off, n, left_n;
} unused_merge;

typedef struct spm_state {
    const tl_tokenizer *t;
    const char *text;
    symbol *sym;
    bigram *heap;
    size_t n_heap, cap_heap;
    unused_merge *rev;
    size_t n_rev, cap_rev;
    tl_ids *out;
    bool last_unk; /* the last id pushed is an unk standing for unknown symbols */
} spm_state;

/* Heap order: higher score first, then the leftmost pair. */
static bool before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static tl_status heap_push(spm_state *st, bigram b) {
    if (st->n_heap == st->cap_heap) {
        size_t cap = st->cap_heap ? st->cap_heap * 2 : 64;
        bigram *h = realloc(st->heap, cap * sizeof *h);
        if (!h) return tl_set_error(TL_ERR_NOMEM, "spm: out of memory");
        st->heap = h;
        st->cap_heap = cap;
    }
    size_t i = st->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&b, &st->heap[parent])) break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = b;
    return TL_OK;
}

static bigram heap_pop(spm_state *st) {
    bigram top = st->heap[0];
    bigram last = st->heap[--st->n_heap];
    size_t i = 0, n = st->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&st->heap[c + 1], &st->heap[c])) c++;
        if (!before(&st->heap[c], &last)) break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n) st->heap[i] = last;
    return top;
}

static bool mergeable(uint8_t type) {
    return type == TL_TOKEN_NORMAL || type == TL_TOKEN_USER_DEFINED || type == TL_TOKEN_UNUSED;
}

static tl_status try_add_bigram(spm_state *st, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return TL_OK;
    const symbol *l = &st->sym[left], *r = &st->sym[right];
    uint32_t size = l->n + r->n;
    int32_t id = tl_tokenizer_find(st->t, st->text + l->off, size);
    if (id < 0 || !mergeable(st->t->types[id])) return TL_OK;
    if (st->t->types[id] == TL_TOKEN_UNUSED) {
        if (st->n_rev == st->cap_rev) {
            size_t cap = st->cap_rev ? st->cap_rev * 2 : 16;
            unused_merge *v = realloc(st->rev, cap * sizeof *v);
            if (!v) return tl_set_error(TL_ERR_NOMEM, "spm: out of memory");
            st->rev = v;
            st->cap_rev = cap;
        }
        st->rev[st->n_rev++] = (unused_merge){l->off, size, l->n};
    }
    return heap_push(st, (bigram){left, right, st->t->scores[id], size});
}

static tl_status push_unknown(spm_state *st, uint32_t off, uint32_t n) {
    const tl_tokenizer *t = st->t;
    if (t->byte_fallback) {
        for (uint32_t i = 0; i < n; i++) {
            int32_t id = t->byte_token[(uint8_t)st->text[off + i]];
            if (id < 0) id = t->unk;
            if (id < 0) return tl_set_error(TL_ERR_INVALID, "spm: byte 0x%02x has no token and there is no unk",
                                            (uint8_t)st->text[off + i]);
            tl_status s = tl_ids_push(st->out, id);
            if (s) return s;
        }
        st->last_unk = false;
        return TL_OK;
    }
    if (t->unk < 0) return tl_set_error(TL_ERR_INVALID, "spm: text has a character outside the vocabulary and there is no unk");
    if (st->last_unk) return TL_OK; /* sentencepiece merges a run of unknown pieces into one unk */
    st->last_unk = true;
    return tl_ids_push(st->out, t->unk);
}

/* Emits the tokens of one final symbol (sentencepiece resegment). */
static tl_status resegment(spm_state *st, uint32_t off, uint32_t n) {
    const tl_tokenizer *t = st->t;
    int32_t id = tl_tokenizer_find(t, st->text + off, n);
    if (id >= 0 && t->types[id] != TL_TOKEN_UNUSED && t->types[id] != TL_TOKEN_BYTE) {
        st->last_unk = false;
        return tl_ids_push(st->out, id);
    }
    if (id >= 0 && t->types[id] == TL_TOKEN_UNUSED) {
        for (size_t k = st->n_rev; k-- > 0;) {
            const unused_merge *m = &st->rev[k];
            if (m->n == n && memcmp(st->text + m->off, st->text + off, n) == 0) {
                tl_status s = resegment(st, off, m->left_n);
                return s ? s : resegment(st, off + m->left_n, n - m->left_n);
            }
        }
    }
    return push_unknown(st, off, n);
}

/* Length of the UTF-8 sequence a lead byte starts (1 for stray continuation bytes). */
static uint32_t utf8_len(uint8_t c) {
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

tl_status tl_spm_encode(const tl_tokenizer *t, const char *text, size_t len, tl_ids *out) {
    if (len == 0) return TL_OK;
    if (len > INT32_MAX / 2) return tl_set_error(TL_ERR_INVALID, "spm: text of %zu bytes is too long", len);
    spm_state st = {.t = t, .text = text, .out = out};
    st.sym = malloc(len * sizeof *st.sym);
    if (!st.sym) return tl_set_error(TL_ERR_NOMEM, "spm: out of memory for %zu bytes of text", len);

    /* one symbol per UTF-8 character */
    int32_t n_sym = 0;
    for (size_t off = 0; off < len;) {
        uint32_t n = utf8_len((uint8_t)text[off]);
        if (n > len - off) n = (uint32_t)(len - off);
        st.sym[n_sym] = (symbol){n_sym - 1, off + n == len ? -1 : n_sym + 1, (uint32_t)off, n};
        n_sym++;
        off += n;
    }

    tl_status s = TL_OK;
    for (int32_t i = 1; i < n_sym && !s; i++) s = try_add_bigram(&st, i - 1, i);
    while (st.n_heap > 0 && !s) {
        bigram b = heap_pop(&st);
        symbol *l = &st.sym[b.left], *r = &st.sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* one side changed since */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) st.sym[r->next].prev = b.left;
        s = try_add_bigram(&st, l->prev, b.left);
        if (!s) s = try_add_bigram(&st, b.left, l->next);
    }
    for (int32_t i = 0; i != -1 && !s; i = st.sym[i].next) s = resegment(&st, st.sym[i].off, st.sym[i].n);

    free(st.sym);
    free(st.heap);
    free(st.rev);
    return s;
}
