/* The decoder forward pass, written once for every architecture and every backend; the
 * config's traits (bias, qk-norm, rope style and scaling, tied head, activation, embedding
 * scale, post-norms, sliding window, soft-capping) and the per-layer traits switch its parts,
 * and every tensor operation is an op of the model's backend (backends/backend.h). One call
 * runs a batch of (token, position, sequence): a prefill, a decode of several sequences, or
 * both mixed. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ---- */

void tl_context_release_buffers(tl_context *x) {
    tl_device *d = x->model->device;
    d->ops->free(d, x->x);
    if (!d->ops->host_memory) {
        d->ops->free(d, x->d_tokens);
        d->ops->free(d, x->d_logits);
    }
    free(x->h_cs);
    x->x = NULL;
    x->d_tokens = NULL;
    x->d_logits = NULL;
    x->h_cs = NULL;
    x->cap_tokens = 0;
}

/* Activations for batches of up to n tokens, on the device; the batch's ids and logits too
 * where device memory is not host memory. */
static tl_status reserve(tl_context *x, int32_t n) {
    if (n <= x->cap_tokens) return TL_OK;
    const tl_model_config *c = &x->model->config;
    tl_device *d = x->model->device;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim;
    if (q_dim > wide) wide = q_dim;
    int64_t max_k = (int64_t)(wide > (size_t)c->hidden_dim ? wide : (size_t)c->hidden_dim);
    tl_context_release_buffers(x);
    size_t per_token = (size_t)c->dim + wide + q_dim + 2 * kv_dim + q_dim + 2 * (size_t)c->hidden_dim + 2 * (size_t)c->rope_dim;
    tl_status s = d->ops->alloc(d, per_token * (size_t)n * sizeof(float), (void **)&x->x);
    if (!s && !d->ops->host_memory) {
        s = d->ops->alloc(d, 4 * (size_t)n * sizeof(int32_t), (void **)&x->d_tokens);
        if (!s) s = d->ops->alloc(d, (size_t)n * c->n_vocab * sizeof(float), (void **)&x->d_logits);
    }
    x->h_cs = malloc(2 * (size_t)n * c->rope_dim * sizeof(float) + 5 * (size_t)n * sizeof(int32_t));
    if (!s && !x->h_cs) s = tl_set_error(TL_ERR_NOMEM, "forward: out of memory for a batch of %d tokens", n);
    if (!s) s = x->stream->ops->reserve(x->stream, n, max_k);
    if (s) {
        tl_context_release_buffers(x);
        return s;
    }
    x->xb = x->x + (size_t)n * c->dim;
    x->q = x->xb + (size_t)n * wide;
    x->k = x->q + (size_t)n * q_dim;
    x->v = x->k + (size_t)n * kv_dim;
    x->att_out = x->v + (size_t)n * kv_dim;
    x->hb = x->att_out + (size_t)n * q_dim;
    x->hb2 = x->hb + (size_t)n * c->hidden_dim;
    x->rope_cs = x->hb2 + (size_t)n * c->hidden_dim;
    x->h_rows = (int32_t *)(x->h_cs + 2 * (size_t)n * c->rope_dim);
    x->h_ids = x->h_rows + n;
    x->cap_tokens = n;
    return TL_OK;
}

/* Element offset of (layer, sequence 0, kv head 0, position 0) in the caches */
static size_t layer_offset(const tl_context *x, int layer) {
    const tl_model_config *c = &x->model->config;
    return (size_t)layer * x->max_batch_size * c->n_kv_heads * x->max_seq_len * c->head_dim;
}

/* ---- the batch: checked before anything changes ---- */

static tl_status check_batch(const tl_context *x, const tl_batch *b, int32_t *new_len) {
    const tl_model_config *c = &x->model->config;
    if (!b || b->n_tokens < 1 || !b->tokens || !b->pos || !b->seq)
        return tl_set_error(TL_ERR_INVALID, "forward: the batch needs at least one token with its position and sequence");
    for (int32_t s = 0; s < x->max_batch_size; s++) new_len[s] = -1;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        const int32_t t = b->tokens[i], p = b->pos[i], s = b->seq[i];
        if (t < 0 || t >= c->n_vocab)
            return tl_set_error(TL_ERR_INVALID, "forward: token id %d at index %d is out of range [0, %d)", t, i, c->n_vocab);
        if (s < 0 || s >= x->max_batch_size)
            return tl_set_error(TL_ERR_INVALID, "forward: sequence %d at index %d is out of range [0, %d) (max_batch_size)",
                                s, i, x->max_batch_size);
        if (p < 0 || p >= x->max_seq_len)
            return tl_set_error(TL_ERR_INVALID, "forward: position %d of sequence %d is beyond the context (max_seq_len %d)",
                                p, s, x->max_seq_len);
        /* a sequence continues its cache (or rewinds to an earlier position), then counts up */
        int32_t expect = new_len[s] < 0 ? x->seq_len[s] : new_len[s];
        if (new_len[s] < 0 ? p > expect : p != expect)
            return tl_set_error(TL_ERR_INVALID, "forward: position %d of sequence %d does not continue it (next position is %d)",
                                p, s, expect);
        new_len[s] = p + 1;
    }
    return TL_OK;
}

/* The RoPE angles of each token's position: pos * inv_freq in double; cos and sin times the
 * LongRoPE magnitude factor (1 elsewhere). Computed on the host, the same on every backend. */
static void rope_angles(const tl_model_config *c, const float *inv_freq, const tl_batch *b, float *cs) {
    for (int32_t i = 0; i < b->n_tokens; i++)
        for (int k = 0; k < c->rope_dim / 2; k++) {
            double a = (double)b->pos[i] * inv_freq[k];
            float co = (float)cos(a), si = (float)sin(a);
            if (c->rope_attn_factor != 1.0f) {
                co *= c->rope_attn_factor;
                si *= c->rope_attn_factor;
            }
            cs[(size_t)i * c->rope_dim + 2 * k] = co;
            cs[(size_t)i * c->rope_dim + 2 * k + 1] = si;
        }
}

/* One batch as the ops see it: device (or host) pointers to its ids and RoPE tables. */
typedef struct fwd {
    const int32_t *tokens, *pos, *seq, *rows;
    const int32_t *host_pos, *host_seq;
    const float *cs, *cs_swa;
    int32_t n, n_rows;
    float *logits;
} fwd;

/* x->x += y; x->xb = rmsnorm(x->x) * w: fused where the backend has it */
static void add_rmsnorm(tl_context *x, const float *y, const float *w, int32_t n) {
    const tl_model_config *c = &x->model->config;
    tl_stream *st = x->stream;
    if (st->ops->add_rmsnorm) {
        st->ops->add_rmsnorm(st, x->x, y, x->xb, w, n, c->dim, c->norm_eps);
    } else {
        st->ops->add(st, x->x, y, (int64_t)n * c->dim);
        st->ops->rmsnorm(st, x->xb, x->x, w, n, c->dim, c->norm_eps);
    }
}

/* Queues the whole forward of a batch on the context's stream. Between layers it stops for a
 * cancel or an abort callback when `checks` (not while recording a graph). */
static tl_status queue_forward(tl_context *x, const fwd *f, bool checks) {
    const tl_model *m = x->model;
    const tl_model_config *c = &m->config;
    tl_stream *st = x->stream;
    const tl_backend_ops *op = st->ops;
    const int32_t n = f->n;
    const int64_t dim = c->dim, hd = c->head_dim, hidden = c->hidden_dim;
    const bool neox = c->rope_style == TL_ROPE_NEOX;

    /* token embeddings (gemma: times sqrt(dim)) */
    op->embed(st, m->d_tok_embd, f->tokens, n, c->embed_scale, x->x);
    op->rmsnorm(st, x->xb, x->x, m->d_layers[0].attn_norm, n, dim, c->norm_eps);
    for (int l = 0; l < c->n_layers; l++) {
        const tl_layer_weights *L = &m->d_layers[l];
        /* attention block: qkv projections of the normalised input (xb, normalised above) */
        if (op->matmul_qkv) {
            op->matmul_qkv(st, L->wq, L->wk, L->wv, x->xb, n, x->q, x->k, x->v, L->bq, L->bk, L->bv);
        } else {
            op->matmul(st, L->wq, x->xb, n, x->q, L->bq);
            op->matmul(st, L->wk, x->xb, n, x->k, L->bk);
            op->matmul(st, L->wv, x->xb, n, x->v, L->bv);
        }
        if (L->q_norm) op->rmsnorm(st, x->q, x->q, L->q_norm, (int64_t)n * c->n_heads, hd, c->norm_eps); /* qwen3, gemma3 */
        if (L->k_norm) op->rmsnorm(st, x->k, x->k, L->k_norm, (int64_t)n * c->n_kv_heads, hd, c->norm_eps);
        /* RoPE, and this position's key and value into the cache, before anyone attends */
        const float *cs = L->windowed && f->cs_swa ? f->cs_swa : f->cs;
        const size_t off = tl_dtype_row_size(x->kv_dtype, (int64_t)layer_offset(x, l)); /* whole rows: Q8_0's blocks too */
        void *kc = (uint8_t *)x->k_cache + off, *vc = (uint8_t *)x->v_cache + off;
        if (op->rope_store) {
            op->rope_store(st, x->q, x->k, x->v, cs, n, c->n_heads, c->n_kv_heads, (int32_t)hd, c->rope_dim, neox, kc, vc,
                           x->kv_dtype, f->pos, f->seq, x->max_seq_len);
        } else {
            op->rope(st, x->q, cs, n, c->n_heads, (int32_t)hd, c->rope_dim, neox);
            op->rope(st, x->k, cs, n, c->n_kv_heads, (int32_t)hd, c->rope_dim, neox);
            op->kv_store(st, kc, vc, x->kv_dtype, x->k, x->v, f->pos, f->seq, n, c->n_kv_heads, (int32_t)hd, x->max_seq_len);
        }
        tl_attn_args a = {
            .q = x->q, .out = x->att_out, .k_cache = kc, .v_cache = vc, .kv_dtype = x->kv_dtype,
            .pos = f->pos, .seq = f->seq, .host_pos = f->host_pos, .host_seq = f->host_seq, .n = n, .n_heads = c->n_heads,
            .n_kv_heads = c->n_kv_heads, .head_dim = (int32_t)hd, .max_seq_len = x->max_seq_len,
            .window = L->windowed ? c->sliding_window : 0, .scale = c->attn_scale, .softcap = c->attn_softcap,
        };
        op->attention(st, &a);
        /* output projection (normalised again in gemma2/3), residual, the feed-forward's norm */
        op->matmul(st, L->wo, x->att_out, n, x->xb, NULL);
        if (L->post_attn_norm) op->rmsnorm(st, x->xb, x->xb, L->post_attn_norm, n, dim, c->norm_eps);
        add_rmsnorm(x, x->xb, L->ffn_norm, n);

        /* feed-forward block: w_down(act(w_gate x) * w_up x), act = SiLU (SwiGLU) or GELU (GeGLU) */
        if (op->matmul_glu) {
            op->matmul_glu(st, L->w_gate, L->w_up, x->xb, n, x->hb, x->hb2, c->activation);
        } else {
            op->matmul(st, L->w_gate, x->xb, n, x->hb, NULL);
            op->matmul(st, L->w_up, x->xb, n, x->hb2, NULL);
            op->glu(st, c->activation, x->hb, x->hb2, n * hidden);
        }
        op->matmul(st, L->w_down, x->hb, n, x->xb, NULL);
        if (L->post_ffw_norm) op->rmsnorm(st, x->xb, x->xb, L->post_ffw_norm, n, dim, c->norm_eps);
        /* residual, and the next layer's attention norm */
        if (l + 1 < c->n_layers) add_rmsnorm(x, x->xb, m->d_layers[l + 1].attn_norm, n);
        else op->add(st, x->x, x->xb, n * dim);

        if (checks && (x->cancel || (x->should_abort && x->should_abort(x->abort_user)))) {
            /* the cache holds this layer's entries but not the later ones': drop the batch */
            x->cancel = 0;
            op->sync(st);
            return tl_set_error(TL_ERR_CANCELLED, "forward: cancelled");
        }
    }
    /* final norm and output head for the rows asked for, packed */
    if (f->n_rows) {
        op->gather(st, x->xb, x->x, f->rows, f->n_rows, dim);
        op->rmsnorm(st, x->xb, x->xb, m->d_output_norm, f->n_rows, dim, c->norm_eps);
        op->matmul(st, m->d_output, x->xb, f->n_rows, f->logits, NULL);
        if (c->final_softcap > 0) op->softcap(st, f->logits, (int64_t)f->n_rows * c->n_vocab, c->final_softcap); /* gemma2 */
    }
    return TL_OK;
}

/* decode batches (this many tokens at most) are recorded once per shape and replayed */
#define GRAPH_MAX_TOKENS 8

/* What shapes a forward's launches: tokens, rows of logits, and the longest context among the
 * batch's sequences rounded up to a power of two (attention sizes its splits by it). */
static uint64_t shape_key(const fwd *f) {
    int32_t longest = 1;
    for (int32_t i = 0; i < f->n; i++) {
        int32_t len = f->host_pos[i] + 1;
        if (len > longest) longest = len;
    }
    uint64_t bucket = 0;
    while ((1 << bucket) < longest) bucket++;
    return (uint64_t)f->n | (uint64_t)f->n_rows << 16 | bucket << 32;
}

/* Whether key was seen before (a shape is recorded the second time it comes, after a plain run
 * has grown every buffer it needs); remembers it. */
static bool seen_before(tl_context *x, uint64_t key) {
    for (int i = 0; i < TL_SEEN_SHAPES; i++)
        if (x->seen_shapes[i] == key + 1) return true;
    x->seen_shapes[x->seen_next++ % TL_SEEN_SHAPES] = key + 1;
    return false;
}

/* The forward of a batch; its logits into logits_out, or (top_k) through the backend's top_k op */
static tl_status forward(tl_context *x, const tl_batch *b, float *logits_out, const tl_top_k_args *top_k) {
    const tl_model *m = x->model;
    const tl_model_config *c = &m->config;
    int32_t *new_len = x->new_len;
    tl_status s = check_batch(x, b, new_len);
    if (!s && !logits_out && !top_k) s = tl_set_error(TL_ERR_INVALID, "forward: no logits buffer");
    if (!s && top_k && !x->stream->ops->top_k)
        s = tl_set_error(TL_ERR_UNSUPPORTED, "forward: the %s backend picks no candidates on its device", x->stream->ops->name);
    if (!s) s = reserve(x, b->n_tokens);
    if (s) return s;
    tl_stream *st = x->stream;
    const tl_backend_ops *op = st->ops;
    const int32_t n = b->n_tokens;

    /* the rows whose logits are asked for */
    int32_t rows = 0;
    for (int32_t i = 0; i < n; i++)
        if (b->want_logits ? b->want_logits[i] != 0 : i == n - 1) x->h_rows[rows++] = i;

    /* the batch on the device: ids, positions, sequences and rows wanted in one copy, the RoPE
     * tables (every layer's, then the windowed layers' where they differ) in another */
    const bool two_tables = x->inv_freq_swa != x->inv_freq;
    const size_t cs_floats = (size_t)n * c->rope_dim;
    rope_angles(c, x->inv_freq, b, x->h_cs);
    if (two_tables) rope_angles(c, x->inv_freq_swa, b, x->h_cs + cs_floats);
    fwd f = {b->tokens, b->pos, b->seq, x->h_rows, b->pos, b->seq, x->rope_cs, NULL, n, rows, logits_out};
    if (!op->host_memory) {
        int32_t *ids = x->h_ids;
        memcpy(ids, b->tokens, (size_t)n * sizeof(int32_t));
        memcpy(ids + n, b->pos, (size_t)n * sizeof(int32_t));
        memcpy(ids + 2 * n, b->seq, (size_t)n * sizeof(int32_t));
        memcpy(ids + 3 * n, x->h_rows, (size_t)rows * sizeof(int32_t));
        if ((s = op->upload(st, x->d_tokens, ids, (size_t)(3 * n + rows) * sizeof(int32_t)))) return s;
        f.tokens = x->d_tokens, f.pos = x->d_tokens + n, f.seq = x->d_tokens + 2 * n, f.rows = x->d_tokens + 3 * n;
        f.logits = x->d_logits;
    }
    if ((s = op->upload(st, x->rope_cs, x->h_cs, (two_tables ? 2 : 1) * cs_floats * sizeof(float)))) return s;
    if (two_tables) f.cs_swa = x->rope_cs + cs_floats;

    /* decode: the recorded forward of this shape, else record it (the second time it comes) */
    const bool graphs = op->graph_replay && n <= GRAPH_MAX_TOKENS && !x->should_abort;
    const uint64_t key = graphs ? shape_key(&f) : 0;
    if (graphs && op->graph_replay(st, key)) {
        s = TL_OK;
    } else if (graphs && seen_before(x, key) && op->capture_begin(st, key)) {
        queue_forward(x, &f, false);
        if (op->capture_end(st)) s = queue_forward(x, &f, true); /* not recorded: run it plainly */
    } else {
        s = queue_forward(x, &f, true);
    }
    if (!s && rows && top_k)
        s = op->top_k(st, f.logits, rows, c->n_vocab, top_k);
    else if (!s && rows)
        s = op->download(st, logits_out, f.logits, (size_t)rows * c->n_vocab * sizeof(float));
    else if (!s)
        s = op->sync(st);
    if (s) return s; /* cancelled, or a device failure: the cache is not advanced */

    /* the positions now in the cache */
    for (int32_t s2 = 0; s2 < x->max_batch_size; s2++)
        if (new_len[s2] >= 0) x->seq_len[s2] = new_len[s2];
    return TL_OK;
}

tl_status tl_forward(tl_context *x, const tl_batch *b, float *logits_out) { return forward(x, b, logits_out, NULL); }

tl_status tl_forward_top_k(tl_context *x, const tl_batch *b, const tl_top_k_args *a) {
    if (!a) return tl_set_error(TL_ERR_INVALID, "forward: no top_k arguments");
    return forward(x, b, NULL, a);
}
