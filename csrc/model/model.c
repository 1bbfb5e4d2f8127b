/* Loading a model: config from metadata, the tokenizer, and a view of every weight
 * with its shape checked against the config. */
#include "model.h"

#include "core/dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct binder {
    tl_model *m;
    const char *path;
} binder;

/* The tensor `name`, which must have dims ne0 (x ne1); NULL + error when absent and required. */
static tl_status get(binder *b, const char *name, int64_t ne0, int64_t ne1, bool required, const tl_tensor **out) {
    *out = NULL;
    const tl_named_tensor *nt = tl_weights_find_tensor(b->m->weights, name);
    if (!nt) {
        if (!required) return TL_OK;
        return tl_set_error(TL_ERR_FORMAT, "model: %s: tensor '%s' is missing", b->path, name);
    }
    const tl_tensor *t = &nt->tensor;
    int want_dims = ne1 > 0 ? 2 : 1;
    int64_t n1 = t->n_dims > 1 ? t->ne[1] : 1;
    bool ok = t->ne[0] == ne0 && (ne1 > 0 ? n1 == ne1 : n1 == 1);
    for (int i = 2; i < t->n_dims; i++) ok &= t->ne[i] == 1;
    if (!ok)
        return tl_set_error(TL_ERR_FORMAT, "model: %s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld] (GGML order)",
                            b->path, name, (long long)t->ne[0], (long long)n1, (long long)ne0,
                            (long long)(want_dims == 2 ? ne1 : 1));
    if (!tl_dtype_traits_of(t->dtype)->to_float)
        return tl_set_error(TL_ERR_UNSUPPORTED, "model: %s: tensor '%s' has dtype %s, which cannot be computed with",
                            b->path, name, tl_dtype_name(t->dtype));
    *out = t;
    return TL_OK;
}

/* A vector tensor converted to float32 in the model's arena. */
static tl_status get_vec(binder *b, const char *name, int64_t n, bool required, const float **out) {
    const tl_tensor *t;
    *out = NULL;
    tl_status s = get(b, name, n, 0, required, &t);
    if (s || !t) return s;
    float *v = tl_arena_alloc_array(&b->m->arena, (size_t)n, sizeof(float), 64);
    if (!v) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    if ((s = tl_dequantize(t->dtype, t->data, v, n))) return s;
    *out = v;
    return TL_OK;
}

/* Rows [r0, r0 + n) of a 2-D weight as a weight of its own: a view into the same mapping
 * (a quantized row is a whole number of blocks, so any row boundary is a block boundary). */
static tl_status row_view(binder *b, const tl_tensor *t, int64_t r0, int64_t n, const tl_tensor **out) {
    tl_tensor *v = tl_arena_alloc_array(&b->m->arena, 1, sizeof *v, 64);
    if (!v) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    const size_t row = tl_dtype_row_size(t->dtype, t->ne[0]);
    *v = *t;
    v->ne[1] = n;
    v->data = (const uint8_t *)t->data + (size_t)r0 * row;
    v->nbytes = (size_t)n * row;
    *out = v;
    return TL_OK;
}

static tl_status bind(binder *b) {
    tl_model *m = b->m;
    tl_model_config *c = &m->config;
    tl_status s;
    const tl_named_tensor *emb = tl_weights_find_tensor(m->weights, "token_embd.weight");
    if (!emb) return tl_set_error(TL_ERR_FORMAT, "model: %s: tensor 'token_embd.weight' is missing", b->path);
    c->n_vocab = (int32_t)(emb->tensor.n_dims > 1 ? emb->tensor.ne[1] : 0);
    if (c->n_vocab <= 0) return tl_set_error(TL_ERR_FORMAT, "model: %s: token_embd.weight has no rows", b->path);
    if ((s = get(b, "token_embd.weight", c->dim, c->n_vocab, true, &m->tok_embd))) return s;
    if ((s = get_vec(b, "output_norm.weight", c->dim, true, &m->output_norm))) return s;
    if ((s = get(b, "output.weight", c->dim, c->n_vocab, false, &m->output))) return s;
    c->tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    if ((s = get_vec(b, "rope_freqs.weight", c->rope_dim / 2, false, &m->rope_freqs))) return s;
    if ((s = get_vec(b, "rope_factors_long.weight", c->rope_dim / 2, c->rope_longrope, &m->rope_long))) return s;
    if ((s = get_vec(b, "rope_factors_short.weight", c->rope_dim / 2, c->rope_longrope, &m->rope_short))) return s;

    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    m->layers = tl_arena_alloc_array(&m->arena, (size_t)c->n_layers, sizeof *m->layers, 64);
    if (!m->layers) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    char name[96];
#define T(field, fmt, ne0, ne1)                                          \
    snprintf(name, sizeof name, "blk.%d." fmt, l);                       \
    if ((s = get(b, name, ne0, ne1, true, &L->field))) return s;
#define V(field, fmt, n, required)                                       \
    snprintf(name, sizeof name, "blk.%d." fmt, l);                       \
    if ((s = get_vec(b, name, n, required, &L->field))) return s;
    for (int l = 0; l < c->n_layers; l++) {
        tl_layer_weights *L = &m->layers[l];
        V(attn_norm, "attn_norm.weight", c->dim, true);
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        if (tl_weights_find_tensor(m->weights, name)) {
            /* fused projection (phi3): rows q, then k, then v */
            const tl_tensor *qkv;
            if ((s = get(b, name, c->dim, q_dim + 2 * kv_dim, true, &qkv))) return s;
            if ((s = row_view(b, qkv, 0, q_dim, &L->wq)) || (s = row_view(b, qkv, q_dim, kv_dim, &L->wk)) ||
                (s = row_view(b, qkv, q_dim + kv_dim, kv_dim, &L->wv)))
                return s;
            c->fused_qkv = true;
        } else {
            T(wq, "attn_q.weight", c->dim, q_dim);
            T(wk, "attn_k.weight", c->dim, kv_dim);
            T(wv, "attn_v.weight", c->dim, kv_dim);
        }
        T(wo, "attn_output.weight", q_dim, c->dim);
        V(bq, "attn_q.bias", q_dim, c->qkv_bias);
        V(bk, "attn_k.bias", kv_dim, c->qkv_bias);
        V(bv, "attn_v.bias", kv_dim, c->qkv_bias);
        V(q_norm, "attn_q_norm.weight", c->head_dim, c->qk_norm);
        V(k_norm, "attn_k_norm.weight", c->head_dim, c->qk_norm);
        V(ffn_norm, "ffn_norm.weight", c->dim, true);
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        if (!tl_weights_find_tensor(m->weights, name)) {
            /* fused gate-up (phi3; HF Phi3MLP chunks gate_up_proj into gate, then up) */
            const tl_tensor *gate_up;
            snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
            if ((s = get(b, name, c->dim, 2 * (int64_t)c->hidden_dim, true, &gate_up))) return s;
            if ((s = row_view(b, gate_up, 0, c->hidden_dim, &L->w_gate)) ||
                (s = row_view(b, gate_up, c->hidden_dim, c->hidden_dim, &L->w_up)))
                return s;
            c->fused_gate_up = true;
        } else {
            T(w_gate, "ffn_gate.weight", c->dim, c->hidden_dim);
            T(w_up, "ffn_up.weight", c->dim, c->hidden_dim);
        }
        T(w_down, "ffn_down.weight", c->hidden_dim, c->dim);
        if (c->post_norms) {
            V(post_attn_norm, "post_attention_norm.weight", c->dim, true);
            V(post_ffw_norm, "post_ffw_norm.weight", c->dim, true);
        }
        L->windowed = tl_model_layer_windowed(m->weights, c, l);
    }
#undef T
#undef V
    return TL_OK;
}

/* ---- the weights on the model's device ---- */

/* src uploaded to the device, remembered for weight_free; key: the host tensor it stands for
 * (NULL: none to share) */
static tl_status upload(tl_model *m, const tl_tensor *src, const tl_tensor *key, const tl_tensor **out) {
    if (m->n_placed == m->cap_placed) {
        int cap = m->cap_placed ? 2 * m->cap_placed : 64;
        tl_tensor **p = realloc(m->placed, (size_t)cap * sizeof *p);
        if (p) m->placed = p;
        const tl_tensor **q = p ? realloc(m->placed_src, (size_t)cap * sizeof *q) : NULL;
        if (!q) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
        m->placed_src = q;
        m->cap_placed = cap;
    }
    tl_tensor *t = calloc(1, sizeof *t);
    if (!t) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    tl_status s = m->device->ops->weight_upload(m->device, src, t);
    if (s) {
        free(t);
        return s;
    }
    m->placed_src[m->n_placed] = key;
    m->placed[m->n_placed++] = t;
    *out = t;
    return TL_OK;
}

/* A weight matrix on the device (on host memory: where it lies, perhaps with a faster layout
 * added by the backend) */
static tl_status place(tl_model *m, const tl_tensor *src, const tl_tensor **out) {
    *out = src;
    if (!src) return TL_OK;
    for (int i = 0; i < m->n_placed; i++) /* tied embeddings: one copy */
        if (m->placed_src[i] == src) {
            *out = m->placed[i];
            return TL_OK;
        }
    return upload(m, src, src, out);
}

/* A float32 vector (norm weights, biases) on the device. */
static tl_status place_vec(tl_model *m, const float *v, int64_t n, const float **out) {
    *out = NULL;
    if (!v || m->device->ops->host_memory) {
        *out = v;
        return TL_OK;
    }
    tl_tensor host = {.dtype = TL_F32, .n_dims = 1, .ne = {n, 1, 1, 1}, .nbytes = (size_t)n * sizeof(float), .data = v};
    const tl_tensor *t = NULL;
    tl_status s = upload(m, &host, NULL, &t);
    if (!s) *out = t->data;
    return s;
}

static size_t weight_bytes(const tl_tensor *t) { return t ? t->nbytes : 0; }

static tl_status place_all(tl_model *m) {
    const tl_model_config *c = &m->config;
    tl_device *d = m->device;
    if (d->ops->host_memory) { /* vectors and the embedding table where they lie; the matrices placed */
        m->d_tok_embd = m->tok_embd;
        m->d_output_norm = m->output_norm;
        m->d_layers = tl_arena_alloc_array(&m->arena, (size_t)c->n_layers, sizeof *m->d_layers, 64);
        if (!m->d_layers) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
        tl_status s = place(m, m->output, &m->d_output);
        if (!s && m->output == m->tok_embd) m->d_tok_embd = m->d_output; /* tied: the head's layout serves both */
        for (int l = 0; l < c->n_layers && !s; l++) {
            const tl_layer_weights *L = &m->layers[l];
            tl_layer_weights *D = &m->d_layers[l];
            *D = *L;
            if ((s = place(m, L->wq, &D->wq)) || (s = place(m, L->wk, &D->wk)) || (s = place(m, L->wv, &D->wv)) ||
                (s = place(m, L->wo, &D->wo)) || (s = place(m, L->w_gate, &D->w_gate)) || (s = place(m, L->w_up, &D->w_up)))
                break;
            s = place(m, L->w_down, &D->w_down);
        }
        return s;
    }
    if (d->ops->memory) { /* fail early, saying how much it needs */
        size_t need = weight_bytes(m->tok_embd) + (m->output != m->tok_embd ? weight_bytes(m->output) : 0);
        for (int l = 0; l < c->n_layers; l++) {
            const tl_layer_weights *L = &m->layers[l];
            need += weight_bytes(L->wq) + weight_bytes(L->wk) + weight_bytes(L->wv) + weight_bytes(L->wo) +
                    weight_bytes(L->w_gate) + weight_bytes(L->w_up) + weight_bytes(L->w_down);
        }
        size_t free_bytes = 0, total = 0;
        tl_status s = d->ops->memory(d, &free_bytes, &total);
        if (s) return s;
        if (need > free_bytes)
            return tl_set_error(TL_ERR_NOMEM, "model: the weights need %.2f GiB on %s but %.2f GiB of %.2f GiB are free",
                                need / 1073741824.0, d->name, free_bytes / 1073741824.0, total / 1073741824.0);
    }
    m->d_layers = tl_arena_alloc_array(&m->arena, (size_t)c->n_layers, sizeof *m->d_layers, 64);
    if (!m->d_layers) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    tl_status s;
    if ((s = place(m, m->tok_embd, &m->d_tok_embd)) || (s = place(m, m->output, &m->d_output)) ||
        (s = place_vec(m, m->output_norm, c->dim, &m->d_output_norm)))
        return s;
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        const tl_layer_weights *L = &m->layers[l];
        tl_layer_weights *D = &m->d_layers[l];
        *D = *L;
        if ((s = place(m, L->wq, &D->wq)) || (s = place(m, L->wk, &D->wk)) || (s = place(m, L->wv, &D->wv)) ||
            (s = place(m, L->wo, &D->wo)) || (s = place(m, L->w_gate, &D->w_gate)) || (s = place(m, L->w_up, &D->w_up)) ||
            (s = place(m, L->w_down, &D->w_down)) || (s = place_vec(m, L->attn_norm, c->dim, &D->attn_norm)) ||
            (s = place_vec(m, L->ffn_norm, c->dim, &D->ffn_norm)) || (s = place_vec(m, L->bq, q_dim, &D->bq)) ||
            (s = place_vec(m, L->bk, kv_dim, &D->bk)) || (s = place_vec(m, L->bv, kv_dim, &D->bv)) ||
            (s = place_vec(m, L->q_norm, c->head_dim, &D->q_norm)) || (s = place_vec(m, L->k_norm, c->head_dim, &D->k_norm)) ||
            (s = place_vec(m, L->post_attn_norm, c->dim, &D->post_attn_norm)) ||
            (s = place_vec(m, L->post_ffw_norm, c->dim, &D->post_ffw_norm)))
            return s;
    }
    return TL_OK;
}

tl_model_load_params tl_model_default_load_params(void) { return (tl_model_load_params){NULL, NULL, 0}; }

tl_status tl_model_load(const char *path, tl_model **out) { return tl_model_load_ex(path, NULL, out); }

tl_status tl_model_load_ex(const char *path, const tl_model_load_params *p, tl_model **out) {
    *out = NULL;
    const char *tokenizer_path = p ? p->tokenizer_path : NULL;
    const char *device = p ? p->device : NULL;
    tl_model *m = calloc(1, sizeof *m);
    if (!m) return tl_set_error(TL_ERR_NOMEM, "model: out of memory");
    atomic_init(&m->refs, 1);
    tl_status s = tl_device_open(device, &m->device);
    if (!s) m->device->n_threads = p && p->n_threads > 0 ? p->n_threads : tl_physical_cores();
    if (!s) s = tl_weights_open(path, &m->weights);
    if (!s && tl_weights_format(m->weights) == TL_FORMAT_SAFETENSORS)
        s = tl_set_error(TL_ERR_UNSUPPORTED, "model: %s: safetensors files cannot be run directly yet; convert to GGUF", path);
    if (!s) s = tl_model_config_from_weights(m->weights, &m->config);
    binder b = {m, path};
    if (!s) s = bind(&b);
    /* a weights-only file (no tokenizer.ggml.*) runs forward passes; generating text needs one */
    if (!s && tokenizer_path) s = tl_tokenizer_open(tokenizer_path, &m->tokenizer);
    else if (!s && tl_weights_find_kv(m->weights, "tokenizer.ggml.model"))
        s = tl_tokenizer_from_weights(m->weights, &m->tokenizer);
    if (!s && m->tokenizer && tl_tokenizer_n_vocab(m->tokenizer) > m->config.n_vocab)
        s = tl_set_error(TL_ERR_FORMAT, "model: %s: the tokenizer%s%s has %d tokens but the embedding only %d rows", path,
                         tokenizer_path ? " " : "", tokenizer_path ? tokenizer_path : "",
                         tl_tokenizer_n_vocab(m->tokenizer), m->config.n_vocab);
    if (!s) s = place_all(m);
    if (s) {
        tl_model_free(m);
        return s;
    }
    *out = m;
    return TL_OK;
}

void tl_model_retain(tl_model *m) {
    if (m) atomic_fetch_add(&m->refs, 1);
}

void tl_model_free(tl_model *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    for (int i = 0; i < m->n_placed; i++) {
        m->device->ops->weight_free(m->device, m->placed[i]);
        free(m->placed[i]);
    }
    free(m->placed);
    free(m->placed_src);
    tl_device_free(m->device);
    tl_tokenizer_free(m->tokenizer);
    tl_weights_free(m->weights);
    tl_arena_free_all(&m->arena);
    free(m);
}

const tl_model_config *tl_model_get_config(const tl_model *m) { return &m->config; }
const tl_tokenizer *tl_model_get_tokenizer(const tl_model *m) { return m->tokenizer; }
const tl_weights *tl_model_get_weights(const tl_model *m) { return m->weights; }
const char *tl_model_backend(const tl_model *m) { return m->device->ops->name; }
int tl_model_device_index(const tl_model *m) { return m->device->index; }
const char *tl_model_device_name(const tl_model *m) { return m->device->name; }
