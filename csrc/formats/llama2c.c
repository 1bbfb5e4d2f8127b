/* llama2.c checkpoints (karpathy/llama2.c) as a GGUF-named weights table.
 *
 * Layouts (all little-endian, weights float32, row-major [out, in]):
 *   v0 (legacy_export, read by run.c): 7 int32 dim, hidden_dim, n_layers, n_heads,
 *      n_kv_heads, vocab_size, seq_len (a negative vocab_size means the classifier is
 *      stored separately), then token embedding, attention norms, wq, wk, wv, wo (each
 *      for every layer in turn), ffn norms, w1, w2, w3, final norm, freq_cis_real and
 *      freq_cis_imag (seq_len * head_size / 2 each, skipped), and the classifier when
 *      it is not shared.
 *   v1 (export.py version1_export): 256-byte header: u32 magic "ak42" (0x616b3432),
 *      i32 version 1, the same 7 int32, u8 shared_classifier, zeros; then the attention
 *      norms, ffn norms, final norm, token embedding, wq, wk, wv, wo, w1, w2, w3 and the
 *      classifier when not shared. No freq_cis.
 *   v2 (version2_export, read by runq.c): the v1 header plus an int32 group size GS at
 *      byte 37; the norms in float32 as in v1, then each matrix of v1's order as its int8
 *      values followed by one float32 scale per GS values. No GGML block type holds
 *      float32 scales per group of 64, so these matrices are dequantized once at load
 *      into float32 (value * scale, as runq.c's dequantize computes it): 4x the file's
 *      int8 bytes in memory. Convert to GGUF q8_0 to keep a large model small.
 *
 * Everything else is a zero-copy F32 view into the mapping. w1/w3/w2 are the gate, up and
 * down projections. llama2.c rotates adjacent pairs, as GGUF `llama` does (RoPE NORM),
 * so q/k need no permutation. The norm epsilon (1e-5) and RoPE base (10000) are
 * run.c's constants.
 */
#include "weights.h"

#include "core/mapping.h"

#include <stdio.h>
#include <string.h>

#define LLAMA2C_MAGIC 0x616b3432u
#define V1_HEADER_BYTES 256
#define MAX_DIM (1 << 24) /* a sanity bound on every header number */

typedef struct header {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} header;

static void read_header(const uint8_t *p, header *h) { memcpy(h, p, sizeof *h); }

static bool in_range(int64_t v) { return v > 0 && v <= MAX_DIM; }

/* A header whose numbers could describe a model: what v0 is recognised by. */
static bool plausible(const header *h) {
    int64_t vocab = h->vocab_size < 0 ? -(int64_t)h->vocab_size : h->vocab_size; /* INT32_MIN included */
    return in_range(h->dim) && in_range(h->hidden_dim) && in_range(h->n_layers) && in_range(h->n_heads) &&
           in_range(h->n_kv_heads) && in_range(vocab) && in_range(h->seq_len) && h->dim % h->n_heads == 0 &&
           h->n_kv_heads <= h->n_heads && h->n_heads % h->n_kv_heads == 0;
}

/* Bytes the weights need (freq_cis included for v0; int8 + scales for v2's matrices),
 * or 0 on overflow or (v2) a matrix that is not a whole number of groups. */
static uint64_t weight_bytes(const header *h, int version, bool shared, uint64_t gs) {
    uint64_t dim = (uint64_t)h->dim, hidden = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    uint64_t vocab = (uint64_t)(h->vocab_size < 0 ? -(int64_t)h->vocab_size : h->vocab_size);
    uint64_t hs = dim / (uint64_t)h->n_heads, kv_dim = hs * (uint64_t)h->n_kv_heads;
    /* every number is below 2^24, so products of two fit; products of three are checked */
    uint64_t wq, wkv, w13;
    if (__builtin_mul_overflow(L * dim, dim, &wq) || __builtin_mul_overflow(L * dim, kv_dim, &wkv) ||
        __builtin_mul_overflow(L * dim, hidden, &w13))
        return 0;
    const uint64_t vectors[] = {
        2 * L * dim + dim,                                 /* attention, ffn and final norms */
        version == 0 ? (uint64_t)h->seq_len * hs : 0,      /* freq_cis real + imag (v0) */
    };
    const uint64_t matrices[] = {
        vocab * dim,                                       /* token embedding */
        wq, wkv, wkv, wq,                                  /* wq, wk, wv, wo (all layers) */
        w13, w13, w13,                                     /* w1, w2, w3 */
        shared ? 0 : vocab * dim,                          /* classifier */
    };
    /* the size of one layer's matrix, each a whole number of groups in v2 */
    const uint64_t one[] = {vocab * dim, dim * dim, dim * kv_dim, dim * hidden};
    if (version == 2)
        for (size_t i = 0; i < sizeof one / sizeof one[0]; i++)
            if (one[i] % gs) return 0;
    uint64_t floats = 0, elements = 0, total;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
        if (__builtin_add_overflow(floats, vectors[i], &floats)) return 0;
    for (size_t i = 0; i < sizeof matrices / sizeof matrices[0]; i++)
        if (__builtin_add_overflow(elements, matrices[i], &elements)) return 0;
    if (version != 2) {
        if (__builtin_add_overflow(floats, elements, &floats) || floats > UINT64_MAX / 8) return 0;
        return floats * 4;
    }
    if (floats > UINT64_MAX / 8 || __builtin_add_overflow(floats * 4, elements, &total) ||
        __builtin_add_overflow(total, elements / gs * 4, &total))
        return 0;
    return total;
}

bool tl_llama2c_sniff(const uint8_t *head, size_t n, size_t file_size, bool bin_suffix) {
    uint32_t magic;
    if (n >= 4) {
        memcpy(&magic, head, 4);
        if (magic == LLAMA2C_MAGIC) return true;
    }
    if (n < sizeof(header)) return false;
    header h;
    read_header(head, &h);
    if (!plausible(&h)) return false;
    if (bin_suffix) return true; /* the reader explains a size mismatch */
    uint64_t bytes = weight_bytes(&h, 0, h.vocab_size > 0, 1);
    return bytes && bytes <= UINT64_MAX - sizeof h && bytes + sizeof h == file_size;
}

/* ---------------------------------------------------------------- the table */

typedef struct builder {
    tl_weights *w;
    const char *path;
    const uint8_t *data;
    size_t pos;         /* next tensor's byte offset */
    int32_t group_size; /* v2: values per float32 scale; 0: float32 matrices */
    uint8_t *dq;        /* v2: where the dequantized matrices go (w->computed) */
    size_t dq_pos, dq_size;
} builder;

static tl_status add_kv_u32(tl_weights *w, const char *key, uint32_t v) {
    tl_kv *kv = &w->kv[w->n_kv++];
    kv->key = (tl_string){key, strlen(key)};
    kv->value.type = TL_VAL_UINT32;
    kv->value.u64 = v;
    return TL_OK;
}

static void add_kv_f32(tl_weights *w, const char *key, float v) {
    tl_kv *kv = &w->kv[w->n_kv++];
    kv->key = (tl_string){key, strlen(key)};
    kv->value.type = TL_VAL_FLOAT32;
    kv->value.f64 = v;
}

static void add_kv_str(tl_weights *w, const char *key, const char *v) {
    tl_kv *kv = &w->kv[w->n_kv++];
    kv->key = (tl_string){key, strlen(key)};
    kv->value.type = TL_VAL_STRING;
    kv->value.str = (tl_string){v, strlen(v)};
}

/* The next tensor of the file: ne0 x ne1 values (ne1 = 0: a vector), named `name`. */
static tl_status take(builder *b, const char *name, int64_t ne0, int64_t ne1) {
    tl_named_tensor *nt = &b->w->tensors[b->w->n_tensors];
    tl_status s = tl_weights_strdup(b->w, name, strlen(name), &nt->name);
    if (s) return s;
    tl_tensor *t = &nt->tensor;
    t->dtype = TL_F32;
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->ne[2] = t->ne[3] = 1;
    const size_t n = (size_t)ne0 * (size_t)t->ne[1];
    t->nbytes = n * sizeof(float);
    if (ne1 && b->group_size) {
        /* v2: n int8 values, then n / GS float32 scales (runq.c's init_quantized_tensors) */
        const size_t gs = (size_t)b->group_size;
        if (t->nbytes > b->dq_size - b->dq_pos) /* parse() sized it from the same header: cannot happen */
            return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: no room to dequantize '%s'", b->path, name);
        float *x = (float *)(b->dq + b->dq_pos);
        b->dq_pos += (t->nbytes + 63) / 64 * 64;
        const int8_t *q = (const int8_t *)(b->data + b->pos);
        const uint8_t *scales = b->data + b->pos + n;
        for (size_t g = 0; g < n / gs; g++) {
            float scale;
            memcpy(&scale, scales + g * sizeof scale, sizeof scale); /* unaligned after int8 values */
            for (size_t i = g * gs; i < (g + 1) * gs; i++) x[i] = (float)q[i] * scale;
        }
        t->data = x;
        t->owner = b->w->computed;
        b->pos += n + n / gs * sizeof(float);
    } else {
        t->data = b->data + b->pos;
        t->owner = b->w->maps[0];
        b->pos += t->nbytes;
    }
    b->w->n_tensors++;
    return TL_OK;
}

/* One tensor per layer, `fmt` with the layer number, in the file's per-kind order. */
static tl_status take_layers(builder *b, int n_layers, const char *fmt, int64_t ne0, int64_t ne1) {
    char name[64];
    for (int l = 0; l < n_layers; l++) {
        snprintf(name, sizeof name, fmt, l);
        tl_status s = take(b, name, ne0, ne1);
        if (s) return s;
    }
    return TL_OK;
}

static tl_status build(builder *b, const header *h, int version, bool shared, size_t weights_at) {
    tl_weights *w = b->w;
    const int64_t dim = h->dim, hidden = h->hidden_dim, hs = h->dim / h->n_heads;
    const int64_t q_dim = hs * h->n_heads, kv_dim = hs * h->n_kv_heads;
    const int64_t vocab = h->vocab_size < 0 ? -(int64_t)h->vocab_size : h->vocab_size;
    const int L = h->n_layers;

    w->kv = tl_arena_alloc_array(&w->arena, 16, sizeof(tl_kv), 8);
    w->tensors = tl_arena_alloc_array(&w->arena, (size_t)L * 9 + 4, sizeof(tl_named_tensor), 8);
    if (!w->kv || !w->tensors) return tl_set_error(TL_ERR_NOMEM, "llama2c: %s: out of memory", b->path);

    add_kv_str(w, "general.architecture", "llama");
    add_kv_str(w, "general.name", "llama2.c checkpoint");
    add_kv_u32(w, "llama.vocab_size", (uint32_t)vocab);
    add_kv_u32(w, "llama.context_length", (uint32_t)h->seq_len);
    add_kv_u32(w, "llama.embedding_length", (uint32_t)dim);
    add_kv_u32(w, "llama.block_count", (uint32_t)L);
    add_kv_u32(w, "llama.feed_forward_length", (uint32_t)hidden);
    add_kv_u32(w, "llama.attention.head_count", (uint32_t)h->n_heads);
    add_kv_u32(w, "llama.attention.head_count_kv", (uint32_t)h->n_kv_heads);
    add_kv_u32(w, "llama.rope.dimension_count", (uint32_t)hs);
    add_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    add_kv_f32(w, "llama.rope.freq_base", 10000.0f);
    add_kv_str(w, "torchless.source", "llama2c");

    tl_status s;
    b->pos = weights_at;
#define TAKE(...) if ((s = take(b, __VA_ARGS__))) return s
#define LAYERS(...) if ((s = take_layers(b, L, __VA_ARGS__))) return s
    if (version == 0) {
        TAKE("token_embd.weight", dim, vocab);
        LAYERS("blk.%d.attn_norm.weight", dim, 0);
        LAYERS("blk.%d.attn_q.weight", dim, q_dim);
        LAYERS("blk.%d.attn_k.weight", dim, kv_dim);
        LAYERS("blk.%d.attn_v.weight", dim, kv_dim);
        LAYERS("blk.%d.attn_output.weight", q_dim, dim);
        LAYERS("blk.%d.ffn_norm.weight", dim, 0);
        LAYERS("blk.%d.ffn_gate.weight", dim, hidden);
        LAYERS("blk.%d.ffn_down.weight", hidden, dim);
        LAYERS("blk.%d.ffn_up.weight", dim, hidden);
        TAKE("output_norm.weight", dim, 0);
        b->pos += (size_t)h->seq_len * (size_t)hs * sizeof(float); /* freq_cis_real, freq_cis_imag */
    } else {
        LAYERS("blk.%d.attn_norm.weight", dim, 0);
        LAYERS("blk.%d.ffn_norm.weight", dim, 0);
        TAKE("output_norm.weight", dim, 0);
        TAKE("token_embd.weight", dim, vocab);
        LAYERS("blk.%d.attn_q.weight", dim, q_dim);
        LAYERS("blk.%d.attn_k.weight", dim, kv_dim);
        LAYERS("blk.%d.attn_v.weight", dim, kv_dim);
        LAYERS("blk.%d.attn_output.weight", q_dim, dim);
        LAYERS("blk.%d.ffn_gate.weight", dim, hidden);
        LAYERS("blk.%d.ffn_down.weight", hidden, dim);
        LAYERS("blk.%d.ffn_up.weight", dim, hidden);
    }
    if (!shared) TAKE("output.weight", dim, vocab);
#undef TAKE
#undef LAYERS
    return TL_OK;
}

static tl_status parse(builder *b, size_t size) {
    const uint8_t *p = b->data;
    header h;
    int version = 0;
    bool shared;
    size_t weights_at;
    uint32_t magic = 0;
    if (size >= 4) memcpy(&magic, p, 4);
    if (magic == LLAMA2C_MAGIC) {
        int32_t v = 0;
        if (size < V1_HEADER_BYTES)
            return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: file truncated in the %d-byte header (file is %zu bytes)",
                                b->path, V1_HEADER_BYTES, size);
        memcpy(&v, p + 4, 4);
        if (v != 1 && v != 2)
            return tl_set_error(TL_ERR_UNSUPPORTED, "llama2c: %s: unknown checkpoint version %d (0, 1 and 2 are supported)",
                                b->path, v);
        version = v;
        if (version == 2) {
            memcpy(&b->group_size, p + 37, 4);
            if (b->group_size <= 0 || b->group_size > MAX_DIM)
                return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: version 2 group size %d (must be positive)", b->path,
                                    b->group_size);
        }
        read_header(p + 8, &h);
        if (p[36] > 1)
            return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: shared-classifier flag is %u (must be 0 or 1)", b->path, p[36]);
        shared = p[36] == 1;
        weights_at = V1_HEADER_BYTES;
    } else {
        if (size < sizeof h)
            return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: file truncated in the 28-byte header (file is %zu bytes)",
                                b->path, size);
        read_header(p, &h);
        shared = h.vocab_size > 0;
        weights_at = sizeof h;
    }
    if (!plausible(&h))
        return tl_set_error(TL_ERR_FORMAT,
                            "llama2c: %s: implausible header: dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                            "n_kv_heads %d, vocab_size %d, seq_len %d",
                            b->path, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
    if (version > 0 && h.vocab_size < 0)
        return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: negative vocab_size %d in a version %d header", b->path,
                            h.vocab_size, version);
    uint64_t bytes = weight_bytes(&h, version, shared, version == 2 ? (uint64_t)b->group_size : 1);
    if (!bytes && version == 2)
        return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: a matrix is not a whole number of groups of %d (or the model is "
                            "too large to address)", b->path, b->group_size);
    if (!bytes || bytes > UINT64_MAX - weights_at)
        return tl_set_error(TL_ERR_FORMAT, "llama2c: %s: header describes a model too large to address", b->path);
    uint64_t need = weights_at + bytes;
    if (need != size)
        return tl_set_error(TL_ERR_FORMAT,
                            "llama2c: %s: file is %zu bytes but its header (dim %d, hidden_dim %d, %d layers, vocab %d, "
                            "seq_len %d, %s classifier) implies %llu: %s",
                            b->path, size, h.dim, h.hidden_dim, h.n_layers, h.vocab_size, h.seq_len,
                            shared ? "shared" : "separate", (unsigned long long)need,
                            need > size ? "file truncated" : "trailing bytes");
    b->w->version = (uint32_t)version;
    if (version == 2) {
        /* every matrix in float32, each at a multiple of 64 bytes; the header bounds them by
         * 4x the file's int8 bytes */
        uint64_t vocab = (uint64_t)(h.vocab_size), dim = (uint64_t)h.dim, L = (uint64_t)h.n_layers;
        uint64_t kv_dim = dim / (uint64_t)h.n_heads * (uint64_t)h.n_kv_heads, hidden = (uint64_t)h.hidden_dim;
        uint64_t sizes[] = {vocab * dim, dim * dim, dim * kv_dim, dim * hidden};
        uint64_t counts[] = {shared ? 1 : 2, 2 * L, 2 * L, 3 * L};
        uint64_t total = 0;
        for (int i = 0; i < 4; i++) total += counts[i] * ((sizes[i] * 4 + 63) / 64 * 64);
        if (total > SIZE_MAX) return tl_set_error(TL_ERR_NOMEM, "llama2c: %s: too large to dequantize", b->path);
        char what[600];
        snprintf(what, sizeof what, "%s (dequantized)", b->path);
        tl_status s = tl_mapping_new_anonymous((size_t)total, what, &b->w->computed, &b->dq);
        if (s) return s;
        b->dq_size = (size_t)total;
    }
    return build(b, &h, version, shared, weights_at);
}

static tl_status parse_llama2c(tl_weights *w, const char *path, const uint8_t *data, size_t size) {
    builder b = {w, path, data, 0, 0, NULL, 0, 0};
    return parse(&b, size);
}

tl_status tl_llama2c_open(const char *path, tl_weights **out) {
    return tl_weights_open_mapped(path, TL_FORMAT_LLAMA2C, "llama2c", parse_llama2c, out);
}
