/* The decoder forward pass, written once for every architecture; the config's
 * traits (bias, qk-norm, rope style and scaling, tied head, activation, embedding scale,
 * post-norms, sliding window, soft-capping) and the per-layer traits switch its parts.
 * One call runs a batch of (token, position, sequence): a prefill, a decode of
 * several sequences, or both mixed. */
#include "model.h"

#include "core/dot.h"
#include "core/fp16.h"
#include "core/matmul.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small kernels ---- */

/* out = x / sqrt(mean(x^2) + eps) * w  (RMSNorm, Zhang & Sennrich 2019) */
static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Rotate the first rope_dim dims of one head by the angles in cs (cos, sin pairs).
 * NORM: pairs (x[2i], x[2i+1]); NEOX: pairs (x[i], x[i + d/2]). */
static void rope(float *h, const float *cs, int rope_dim, tl_rope_style style) {
    const int half = rope_dim / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const int a = style == TL_ROPE_NEOX ? i : 2 * i, b = style == TL_ROPE_NEOX ? i + half : 2 * i + 1;
        const float x0 = h[a], x1 = h[b];
        h[a] = x0 * c - x1 * s;
        h[b] = x0 * s + x1 * c;
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* GELU, tanh approximation (Hendrycks & Gimpel 2016; PyTorch gelu(approximate="tanh")):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static inline float gelu_tanh(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535588f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + 0.044715f * x * x)));
}

/* c tanh(z / c): soft-capping of attention scores or logits (Gemma 2) */
static inline float softcap(float z, float c) { return c * tanhf(z / c); }

/* ---- buffers ---- */

static tl_status reserve(tl_context *x, int32_t n) {
    if (n <= x->cap_tokens) return TL_OK;
    const tl_model_config *c = &x->model->config;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim;
    if (q_dim > wide) wide = q_dim;
    size_t max_k = wide > (size_t)c->hidden_dim ? wide : (size_t)c->hidden_dim;
    const int nth = tl_pool_size(x->pool);
    x->scratch_floats = tl_matmul_scratch_floats((int64_t)max_k, nth);
    size_t per_token = (size_t)c->dim + wide + q_dim + 2 * kv_dim + q_dim + 2 * (size_t)c->hidden_dim + 2 * (size_t)c->rope_dim;
    size_t total = per_token * (size_t)n + x->scratch_floats;
    float *buf = aligned_alloc(64, ((total * sizeof(float)) + 63) & ~(size_t)63);
    if (!buf) return tl_set_error(TL_ERR_NOMEM, "forward: out of memory for a batch of %d tokens", n);
    free(x->x);
    x->x = buf;
    x->xb = x->x + (size_t)n * c->dim;
    x->q = x->xb + (size_t)n * wide;
    x->k = x->q + (size_t)n * q_dim;
    x->v = x->k + (size_t)n * kv_dim;
    x->att_out = x->v + (size_t)n * kv_dim;
    x->hb = x->att_out + (size_t)n * q_dim;
    x->hb2 = x->hb + (size_t)n * c->hidden_dim;
    x->rope_cs = x->hb2 + (size_t)n * c->hidden_dim;
    x->rope_cs_swa = x->rope_cs + (size_t)n * c->rope_dim;
    x->scratch = x->rope_cs_swa + (size_t)n * c->rope_dim;
    x->cap_tokens = n;
    return TL_OK;
}

/* ---- KV cache ---- */

/* Element index of (layer, sequence, kv head, position): each head's positions are contiguous
 * rows of head_dim, so attention streams one head's keys and values without gaps. */
static size_t cache_index(const tl_context *x, int layer, int32_t seq, int kvh, int32_t pos) {
    const tl_model_config *c = &x->model->config;
    return ((((size_t)layer * x->max_batch_size + (size_t)seq) * c->n_kv_heads + (size_t)kvh) * x->max_seq_len +
            (size_t)pos) * c->head_dim;
}

static void cache_store(tl_context *x, void *cache, size_t at, const float *src, size_t n) {
    if (x->kv_dtype == TL_F32) {
        memcpy((float *)cache + at, src, n * sizeof(float));
    } else {
        uint16_t *d = (uint16_t *)cache + at;
        for (size_t i = 0; i < n; i++) d[i] = tl_f32_to_f16(src[i]);
    }
}

/* ---- attention: every (token, head) pair over its sequence's cached positions ---- */

typedef struct {
    tl_context *x;
    const tl_batch *b;
    int layer;
    int32_t window; /* W > 0: keys t with pos - W < t <= pos only */
} attn_job;

/* One cached key or value row: F32 or F16 (portable paths for when no SIMD kernel is chosen). */
static float kv_dot_portable(const float *q, const void *row, int hd, tl_dtype dt) {
    if (dt == TL_F32) return tl_dot_f32(q, row, hd);
    const uint16_t *k = row;
    const float *f16 = tl_f16_table();
    float acc[8] = {0};
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int l = 0; l < 8; l++) acc[l] += q[d + l] * f16[k[d + l]];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; d < hd; d++) s += q[d] * f16[k[d]];
    return s;
}

static void kv_axpy_portable(float *y, float a, const void *row, int hd, tl_dtype dt) {
    if (dt == TL_F32) {
        const float *v = row;
        for (int d = 0; d < hd; d++) y[d] += a * v[d];
    } else {
        const uint16_t *v = row;
        const float *f16 = tl_f16_table();
        for (int d = 0; d < hd; d++) y[d] += a * f16[v[d]];
    }
}

/* keys per step of the online softmax: their scores live on the stack, never the whole row */
#define ATTN_BLOCK 64

/* Every (token, head) pair over its sequence's cached positions, flash-decoding style: keys
 * are taken in blocks; each block's scores raise the running maximum m when they exceed it
 * (rescaling the sum l and the output accumulated so far by exp(m_old - m)), and add their
 * exp(s - m) and exp(s - m) v_t. No score matrix is materialised, at any context length. */
static void attention_worker(void *p, int ith, int nth) {
    const attn_job *j = p;
    tl_context *x = j->x;
    const tl_model_config *c = &x->model->config;
    const int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    const size_t q_dim = (size_t)c->n_heads * hd;
    const float scale = c->attn_scale, cap = c->attn_softcap;
    const tl_dtype dt = x->kv_dtype;
    const size_t elem = dt == TL_F32 ? sizeof(float) : sizeof(uint16_t);
    const tl_dot_fn dot = tl_dot_kernel(dt);
    tl_attn_scores_fn block_scores;
    tl_attn_values_fn block_values;
    tl_attn_kernels(dt, hd, &block_scores, &block_values);
    const tl_exp_sum_fn exp_sum = tl_exp_sum_kernel();
    float s[ATTN_BLOCK];
    int64_t w0, w1;
    tl_split((int64_t)j->b->n_tokens * c->n_heads, ith, nth, &w0, &w1);
    for (int64_t w = w0; w < w1; w++) {
        const int i = (int)(w / c->n_heads), h = (int)(w % c->n_heads), kvh = h / group;
        const int32_t pos = j->b->pos[i], seq = j->b->seq[i];
        const float *q = x->q + (size_t)i * q_dim + (size_t)h * hd;
        float *out = x->att_out + (size_t)i * q_dim + (size_t)h * hd;
        const size_t base = cache_index(x, j->layer, seq, kvh, 0);
        const size_t stride = (size_t)hd;
        const uint8_t *kc = (const uint8_t *)x->k_cache + base * elem, *vc = (const uint8_t *)x->v_cache + base * elem;
        /* keys t0..pos (causal; a windowed layer starts at pos - W + 1) */
        const int32_t t0 = j->window > 0 && pos >= j->window ? pos - j->window + 1 : 0;
        float m = -INFINITY, l = 0;
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int32_t tb = t0; tb <= pos; tb += ATTN_BLOCK) {
            const int nk = pos - tb + 1 < ATTN_BLOCK ? pos - tb + 1 : ATTN_BLOCK;
            /* scores = q . k_t * scale, soft-capped where the model says */
            float bm = -INFINITY;
            if (block_scores) block_scores(q, kc + (size_t)tb * stride * elem, stride, nk, hd, s);
            for (int t = 0; t < nk; t++) {
                const void *k = kc + (size_t)(tb + t) * stride * elem;
                float z = (block_scores ? s[t] : dot ? dot(k, q, hd) : kv_dot_portable(q, k, hd, dt)) * scale;
                if (cap > 0) z = softcap(z, cap);
                s[t] = z;
                if (z > bm) bm = z;
            }
            if (bm > m) { /* a new maximum: what was summed so far shrinks by exp(m - bm) */
                const float r = expf(m - bm);
                if (l > 0)
                    for (int d = 0; d < hd; d++) out[d] *= r;
                l *= r;
                m = bm;
            }
            if (exp_sum) {
                l += exp_sum(s, nk, m);
            } else {
                for (int t = 0; t < nk; t++) {
                    s[t] = expf(s[t] - m);
                    l += s[t];
                }
            }
            if (block_values) {
                block_values(out, s, vc + (size_t)tb * stride * elem, stride, nk, hd);
            } else {
                for (int t = 0; t < nk; t++) kv_axpy_portable(out, s[t], vc + (size_t)(tb + t) * stride * elem, hd, dt);
            }
        }
        const float inv = 1.0f / l;
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
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

static void add_bias(float *y, const float *bias, int64_t n, int64_t m) {
    if (!bias) return;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) y[i * m + j] += bias[j];
}

tl_status tl_forward(tl_context *x, const tl_batch *b, float *logits_out) {
    const tl_model *m = x->model;
    const tl_model_config *c = &m->config;
    int32_t *new_len = x->new_len;
    tl_status s = check_batch(x, b, new_len);
    if (!s && !logits_out) s = tl_set_error(TL_ERR_INVALID, "forward: no logits buffer");
    if (!s) s = reserve(x, b->n_tokens);
    if (s) return s;
    const int32_t n = b->n_tokens;
    const int64_t dim = c->dim, hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    const int64_t hidden = c->hidden_dim;

    /* token embeddings */
    const size_t emb_row = tl_dtype_row_size(m->tok_embd->dtype, dim);
    for (int32_t i = 0; i < n; i++)
        tl_dequantize(m->tok_embd->dtype, (const uint8_t *)m->tok_embd->data + (size_t)b->tokens[i] * emb_row,
                      x->x + (size_t)i * dim, dim);
    if (c->embed_scale != 1.0f) /* gemma: embeddings times sqrt(dim) */
        for (int64_t i = 0; i < n * dim; i++) x->x[i] *= c->embed_scale;

    /* RoPE angles for each token's position: pos * inv_freq, in double; cos and sin times the
     * LongRoPE magnitude factor (1 elsewhere). The windowed layers' table where it differs. */
    const bool two_tables = x->inv_freq_swa != x->inv_freq;
    for (int tab = 0; tab < (two_tables ? 2 : 1); tab++) {
        const float *inv_freq = tab ? x->inv_freq_swa : x->inv_freq;
        float *cs = tab ? x->rope_cs_swa : x->rope_cs;
        for (int32_t i = 0; i < n; i++)
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

    for (int l = 0; l < c->n_layers; l++) {
        const tl_layer_weights *L = &m->layers[l];
        /* attention block: qkv projections of the normalised input */
        for (int32_t i = 0; i < n; i++) rmsnorm(x->xb + i * dim, x->x + i * dim, L->attn_norm, dim, c->norm_eps);
        tl_matmul(x->pool, L->wq, x->xb, n, x->q, x->scratch);
        tl_matmul(x->pool, L->wk, x->xb, n, x->k, x->scratch);
        tl_matmul(x->pool, L->wv, x->xb, n, x->v, x->scratch);
        add_bias(x->q, L->bq, n, q_dim);
        add_bias(x->k, L->bk, n, kv_dim);
        add_bias(x->v, L->bv, n, kv_dim);
        const float *layer_cs = L->windowed && two_tables ? x->rope_cs_swa : x->rope_cs;
        for (int32_t i = 0; i < n; i++) {
            const float *cs = layer_cs + (size_t)i * c->rope_dim;
            for (int h = 0; h < c->n_heads; h++) {
                float *qh = x->q + i * q_dim + h * hd;
                if (L->q_norm) rmsnorm(qh, qh, L->q_norm, hd, c->norm_eps); /* qwen3: per-head norm before RoPE */
                rope(qh, cs, c->rope_dim, c->rope_style);
            }
            for (int h = 0; h < c->n_kv_heads; h++) {
                float *kh = x->k + i * kv_dim + h * hd;
                if (L->k_norm) rmsnorm(kh, kh, L->k_norm, hd, c->norm_eps);
                rope(kh, cs, c->rope_dim, c->rope_style);
            }
            /* this position's key and value into the cache, before anyone attends */
            for (int h = 0; h < c->n_kv_heads; h++) {
                size_t at = cache_index(x, l, b->seq[i], h, b->pos[i]);
                cache_store(x, x->k_cache, at, x->k + i * kv_dim + (size_t)h * hd, (size_t)hd);
                cache_store(x, x->v_cache, at, x->v + i * kv_dim + (size_t)h * hd, (size_t)hd);
            }
        }
        attn_job aj = {x, b, l, L->windowed ? c->sliding_window : 0};
        tl_pool_run(x->pool, attention_worker, &aj);
        /* output projection (normalised again in gemma2/3), residual */
        tl_matmul(x->pool, L->wo, x->att_out, n, x->xb, x->scratch);
        if (L->post_attn_norm)
            for (int32_t i = 0; i < n; i++) rmsnorm(x->xb + i * dim, x->xb + i * dim, L->post_attn_norm, dim, c->norm_eps);
        for (int64_t i = 0; i < n * dim; i++) x->x[i] += x->xb[i];

        /* feed-forward block: w_down(act(w_gate x) * w_up x), act = SiLU (SwiGLU) or GELU (GeGLU) */
        for (int32_t i = 0; i < n; i++) rmsnorm(x->xb + i * dim, x->x + i * dim, L->ffn_norm, dim, c->norm_eps);
        tl_matmul(x->pool, L->w_gate, x->xb, n, x->hb, x->scratch);
        tl_matmul(x->pool, L->w_up, x->xb, n, x->hb2, x->scratch);
        if (c->activation == TL_ACT_GELU_TANH)
            for (int64_t i = 0; i < n * hidden; i++) x->hb[i] = gelu_tanh(x->hb[i]) * x->hb2[i];
        else
            for (int64_t i = 0; i < n * hidden; i++) x->hb[i] = silu(x->hb[i]) * x->hb2[i];
        tl_matmul(x->pool, L->w_down, x->hb, n, x->xb, x->scratch);
        if (L->post_ffw_norm)
            for (int32_t i = 0; i < n; i++) rmsnorm(x->xb + i * dim, x->xb + i * dim, L->post_ffw_norm, dim, c->norm_eps);
        for (int64_t i = 0; i < n * dim; i++) x->x[i] += x->xb[i];

        if (x->cancel || (x->should_abort && x->should_abort(x->abort_user))) {
            /* the cache holds this layer's entries but not the later ones': drop the batch */
            x->cancel = 0;
            return tl_set_error(TL_ERR_CANCELLED, "forward: cancelled");
        }
    }

    /* the positions now in the cache */
    for (int32_t s2 = 0; s2 < x->max_batch_size; s2++)
        if (new_len[s2] >= 0) x->seq_len[s2] = new_len[s2];

    /* final norm and output head for the rows asked for, packed */
    int32_t rows = 0;
    for (int32_t i = 0; i < n; i++) {
        bool want = b->want_logits ? b->want_logits[i] != 0 : i == n - 1;
        if (want) rmsnorm(x->xb + (size_t)rows++ * dim, x->x + (size_t)i * dim, m->output_norm, dim, c->norm_eps);
    }
    if (rows) tl_matmul(x->pool, m->output, x->xb, rows, logits_out, x->scratch);
    if (rows && c->final_softcap > 0) /* gemma2: logits soft-capped */
        for (int64_t i = 0; i < (int64_t)rows * c->n_vocab; i++) logits_out[i] = softcap(logits_out[i], c->final_softcap);
    return TL_OK;
}
