/* Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"): GPT-2, LLaMA-3, Qwen2, SmolLM...
 *
 * Encoding one run of text:
 *   1. pre-tokenize: the regexes of tokenizer.ggml.pre cut it into pieces (pretokenize.c);
 *   2. byte map: every byte of a piece becomes one printable character (GPT-2's
 *      bytes_to_unicode), so the vocabulary holds no raw bytes ("Ġthe" is " the");
 *   3. merge: starting from one symbol per byte, repeatedly join the adjacent pair with
 *      the lowest merge rank (tokenizer.ggml.merges order), leftmost first on ties,
 *      until no adjacent pair has a merge. With ignore_merges (LLaMA-3) a piece whose
 *      byte-mapped text is itself a token is emitted whole first.
 * This is the algorithm of HF tokenizers' BPE model (and llama.cpp's
 * llm_tokenizer_bpe_session): a priority queue of candidate pairs keyed (rank, position). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

struct tl_bpe {
    const tl_pretokenizer *pre;
    bool ignore_merges;

    /* merge ranks: (left id, right id) -> (rank, merged id), open addressing */
    uint64_t *pair_key; /* ((uint64_t)left << 32 | right) + 1; 0 = empty slot */
    int32_t *pair_rank;
    int32_t *pair_merged;
    size_t pair_mask;

    /* each byte's character in the byte map, as UTF-8, and its token id (-1 none) */
    char byte_text[256][2];
    uint8_t byte_text_len[256];
    int32_t byte_id[256];
};

/* ------------------------------------------------------------------ the byte map */

/* GPT-2's bytes_to_unicode: the bytes that print as themselves ('!'..'~', '¡'..'¬',
 * '®'..'ÿ') keep their code point; the other 68 (C0 controls and space, DEL and C1
 * controls and NBSP, soft hyphen) take U+0100, U+0101, ... in byte order. */
static uint32_t byte_to_cpt(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) {
        return b;
    }
    if (b <= 0x20) {
        return 0x100 + b; /* 0x00..0x20 -> U+0100..U+0120 ('Ġ' is the space) */
    }
    if (b <= 0xA0) {
        return 0x121 + (b - 0x7F); /* 0x7F..0xA0 -> U+0121..U+0142 */
    }
    return 0x143; /* 0xAD */
}

/* The byte a byte-map character stands for, -1 when it is not one. */
static int cpt_to_byte(uint32_t c) {
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)) {
        return (int)c;
    }
    if (c >= 0x100 && c <= 0x120) {
        return (int)(c - 0x100);
    }
    if (c >= 0x121 && c <= 0x142) {
        return (int)(0x7F + (c - 0x121));
    }
    if (c == 0x143) {
        return 0xAD;
    }
    return -1;
}

size_t tl_bpe_token_bytes(const char *text, size_t len, char *buf, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        uint32_t c = tl_utf8_decode(text + i, len - i, &used);
        int b = cpt_to_byte(c);
        if (b >= 0) {
            if (n < cap) {
                buf[n] = (char)b;
            }
            n++;
        } else {
            /* not a byte-map character (an added token's text): its bytes as they are */
            for (size_t k = 0; k < used; k++, n++) {
                if (n < cap) {
                    buf[n] = text[i + k];
                }
            }
        }
        i += used;
    }
    return n;
}

/* ------------------------------------------------------------------ merge ranks */

static size_t pair_hash(uint64_t key) {
    key ^= key >> 33; /* murmur3 finalizer */
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    key ^= key >> 33;
    return (size_t)key;
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

/* Slot of (left, right): where it is, or the empty slot where it would go. */
static size_t pair_slot(const tl_bpe *b, uint64_t key) {
    size_t i = pair_hash(key) & b->pair_mask;
    while (b->pair_key[i] != 0 && b->pair_key[i] != key) {
        i = (i + 1) & b->pair_mask;
    }
    return i;
}

/* Rank of merging (left, right), -1 when there is no such merge. */
static int32_t pair_rank(const tl_bpe *b, int32_t left, int32_t right, int32_t *merged) {
    size_t i = pair_slot(b, pair_key(left, right));
    if (b->pair_key[i] == 0) {
        return -1;
    }
    *merged = b->pair_merged[i];
    return b->pair_rank[i];
}

void tl_bpe_free(tl_bpe *b) {
    if (b == NULL) {
        return;
    }
    free(b->pair_key);
    free(b->pair_rank);
    free(b->pair_merged);
    free(b);
}

tl_status tl_bpe_setup(tl_tokenizer *t, const tl_string *merges, size_t n_merges, const char *pre) {
    const tl_pretokenizer *p;
    tl_status st = tl_pretokenizer_lookup(pre, &p);
    if (st != TL_OK) {
        return st;
    }
    if (n_merges > INT32_MAX) {
        return tl_set_error(TL_ERR_FORMAT, "tokenizer: %zu merges (at most %d)", n_merges, INT32_MAX);
    }
    tl_bpe *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
    }
    b->pre = p;
    b->ignore_merges = tl_pretokenizer_ignore_merges(p);

    size_t cap = 16;
    while (cap < 2 * n_merges) {
        cap *= 2;
    }
    b->pair_mask = cap - 1;
    b->pair_key = calloc(cap, sizeof *b->pair_key);
    b->pair_rank = malloc(cap * sizeof *b->pair_rank);
    b->pair_merged = malloc(cap * sizeof *b->pair_merged);
    char *joined = NULL;
    size_t joined_cap = 0;
    if (b->pair_key == NULL || b->pair_rank == NULL || b->pair_merged == NULL) {
        st = tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for %zu merges", n_merges);
        goto error;
    }

    for (size_t i = 0; i < n_merges; i++) {
        const char *s = merges[i].ptr;
        size_t len = (size_t)merges[i].len;
        /* "left right", split at the first space after the first byte (llama.cpp's
         * rule: byte-mapped tokens hold no spaces, so this only matters for odd files) */
        const char *space = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (space == NULL) {
            st = tl_set_error(TL_ERR_FORMAT, "tokenizer: merge %zu ('%.*s') is not 'left right'", i,
                              (int)(len < 64 ? len : 64), s);
            goto error;
        }
        size_t left_len = (size_t)(space - s), right_len = len - left_len - 1;
        int32_t left = tl_tokenizer_find(t, s, left_len);
        int32_t right = tl_tokenizer_find(t, space + 1, right_len);
        if (left < 0 || right < 0) {
            continue; /* a merge of non-tokens can never apply (HF refuses such files) */
        }
        if (left_len + right_len > joined_cap) {
            joined_cap = 2 * (left_len + right_len);
            char *j = realloc(joined, joined_cap);
            if (j == NULL) {
                st = tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory");
                goto error;
            }
            joined = j;
        }
        memcpy(joined, s, left_len);
        memcpy(joined + left_len, space + 1, right_len);
        int32_t merged = tl_tokenizer_find(t, joined, left_len + right_len);
        if (merged < 0) {
            continue; /* its result is no token: the merge could never be emitted */
        }
        uint64_t key = pair_key(left, right);
        size_t slot = pair_slot(b, key);
        if (b->pair_key[slot] == 0) { /* a repeated pair keeps its first rank (llama.cpp) */
            b->pair_key[slot] = key;
            b->pair_rank[slot] = (int32_t)i;
            b->pair_merged[slot] = merged;
        }
    }
    free(joined);

    for (int v = 0; v < 256; v++) {
        char utf8[4];
        size_t n = tl_utf8_encode(byte_to_cpt((uint8_t)v), utf8);
        memcpy(b->byte_text[v], utf8, n); /* one or two bytes: code points below U+0800 */
        b->byte_text_len[v] = (uint8_t)n;
        b->byte_id[v] = tl_tokenizer_find(t, utf8, n);
    }

    tl_bpe_free(t->bpe);
    t->bpe = b;
    t->add_bos = tl_pretokenizer_add_bos(p);
    return TL_OK;

error:
    free(joined);
    tl_bpe_free(b);
    return st;
}

/* ------------------------------------------------------------------ encoding */

/* A candidate merge of the symbols at left and right, queued by (rank, left). */
typedef struct candidate {
    int32_t rank;
    int32_t left, right;          /* symbol positions */
    int32_t left_id, right_id;    /* their tokens when queued (stale if either changed) */
    int32_t merged;               /* the token the merge makes */
} candidate;

/* The scratch of one encode call. */
typedef struct merge_state {
    int32_t *id;   /* token of each symbol; -1: a byte without a token */
    int32_t *prev, *next;
    bool *alive;
    candidate *heap;
    size_t n_heap;
    size_t cap;
    char *mapped; /* a piece in the byte map, for ignore_merges */
} merge_state;

static bool cand_before(const candidate *a, const candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(merge_state *m, candidate c) {
    size_t i = m->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &m->heap[parent])) {
            break;
        }
        m->heap[i] = m->heap[parent];
        i = parent;
    }
    m->heap[i] = c;
}

static candidate heap_pop(merge_state *m) {
    candidate top = m->heap[0];
    candidate last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && cand_before(&m->heap[child + 1], &m->heap[child])) {
            child++;
        }
        if (!cand_before(&m->heap[child], &last)) {
            break;
        }
        m->heap[i] = m->heap[child];
        i = child;
    }
    if (n > 0) {
        m->heap[i] = last;
    }
    return top;
}

static void try_queue(const tl_bpe *b, merge_state *m, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || m->id[left] < 0 || m->id[right] < 0) {
        return;
    }
    int32_t merged;
    int32_t rank = pair_rank(b, m->id[left], m->id[right], &merged);
    if (rank >= 0) {
        heap_push(m, (candidate){rank, left, right, m->id[left], m->id[right], merged});
    }
}

static tl_status reserve(merge_state *m, size_t n) {
    if (n <= m->cap) {
        return TL_OK;
    }
    if (n > INT32_MAX / 3) {
        return tl_set_error(TL_ERR_INVALID, "tokenizer: a %zu-byte piece is too long to merge", n);
    }
    /* each merge queues at most two candidates: n - 1 initial + 2 (n - 1) */
    size_t heap_n = 3 * n;
    free(m->id);
    free(m->prev);
    free(m->next);
    free(m->alive);
    free(m->heap);
    free(m->mapped);
    m->id = malloc(n * sizeof *m->id);
    m->prev = malloc(n * sizeof *m->prev);
    m->next = malloc(n * sizeof *m->next);
    m->alive = malloc(n * sizeof *m->alive);
    m->heap = malloc(heap_n * sizeof *m->heap);
    m->mapped = malloc(2 * n);
    if (!m->id || !m->prev || !m->next || !m->alive || !m->heap || !m->mapped) {
        m->cap = 0;
        return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte piece", n);
    }
    m->cap = n;
    return TL_OK;
}

static void merge_state_free(merge_state *m) {
    free(m->id);
    free(m->prev);
    free(m->next);
    free(m->alive);
    free(m->heap);
    free(m->mapped);
}

/* A symbol left as a single byte whose character is not in the vocabulary has no
 * token: it is dropped, as llama.cpp and HF tokenizers (without an unk_token) drop it.
 * Complete byte-level vocabularies have all 256; some (SmolLM2) lack a few controls. */
static tl_status push_symbol(int32_t id, tl_ids *out) {
    return id >= 0 ? tl_ids_push(out, id) : TL_OK;
}

/* Merges one piece (raw bytes) and appends its tokens. */
static tl_status encode_piece(const tl_tokenizer *t, merge_state *m, const unsigned char *s, size_t n, tl_ids *out) {
    const tl_bpe *b = t->bpe;
    tl_status st = reserve(m, n);
    if (st != TL_OK) {
        return st;
    }
    if (b->ignore_merges) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(m->mapped + k, b->byte_text[s[i]], b->byte_text_len[s[i]]);
            k += b->byte_text_len[s[i]];
        }
        int32_t whole = tl_tokenizer_find(t, m->mapped, k);
        if (whole >= 0) {
            return tl_ids_push(out, whole);
        }
    }

    for (size_t i = 0; i < n; i++) {
        m->id[i] = b->byte_id[s[i]];
        m->prev[i] = (int32_t)i - 1;
        m->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        m->alive[i] = true;
    }
    m->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        try_queue(b, m, (int32_t)i, (int32_t)i + 1);
    }
    while (m->n_heap > 0) {
        candidate c = heap_pop(m);
        /* stale: a side was merged away or has grown since this pair was queued */
        if (!m->alive[c.left] || !m->alive[c.right] || m->next[c.left] != c.right || m->id[c.left] != c.left_id ||
            m->id[c.right] != c.right_id) {
            continue;
        }
        m->id[c.left] = c.merged;
        m->alive[c.right] = false;
        m->next[c.left] = m->next[c.right];
        if (m->next[c.right] >= 0) {
            m->prev[m->next[c.right]] = c.left;
        }
        try_queue(b, m, m->prev[c.left], c.left);
        try_queue(b, m, c.left, m->next[c.left]);
    }
    for (int32_t i = 0; i >= 0; i = m->next[i]) { /* symbol 0 is never merged away */
        if ((st = push_symbol(m->id[i], out)) != TL_OK) {
            return st;
        }
    }
    return TL_OK;
}

tl_status tl_bpe_encode(const tl_tokenizer *t, const char *text, size_t len, tl_ids *out) {
    if (t->bpe == NULL) {
        return tl_set_error(TL_ERR_INVALID, "tokenizer: not a byte-level BPE vocabulary");
    }
    tl_pretokens pt = {0};
    merge_state m = {0};
    tl_status st = tl_pretokenize(t->bpe->pre, text, len, &pt);
    for (size_t i = 0, start = 0; st == TL_OK && i < pt.n; i++) {
        st = encode_piece(t, &m, (const unsigned char *)pt.text + start, pt.end[i] - start, out);
        start = pt.end[i];
    }
    merge_state_free(&m);
    tl_pretokens_free(&pt);
    return st;
}
