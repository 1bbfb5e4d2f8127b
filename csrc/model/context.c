/* Contexts: the KV cache of up to max_batch_size sequences, the RoPE frequencies,
 * activation buffers and the stream the ops run on (the CPU's thread pool; a GPU stream),
 * all on the model's device. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

tl_context_params tl_context_default_params(void) {
    return (tl_context_params){.max_seq_len = 0, .max_batch_size = 1, .n_threads = 0, .kv_dtype = TL_F16};
}

/* Inverse frequencies of the rotated pairs (RoPE paper: theta^(-2i/d)) for base theta, divided
 * by the per-pair divisors (llama.cpp's rope_freqs / Phi-3 LongRoPE factors) when given, with the
 * model's frequency scaling applied unless `scaled` is false. */
static void rope_frequencies(const tl_model_config *c, double theta, const float *divisors, bool scaled,
                             float *inv_freq) {
    const int half = c->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow(theta, -2.0 * i / c->rope_dim);
        if (divisors) f /= divisors[i];
        switch (scaled ? c->rope_scaling : TL_ROPE_SCALING_NONE) {
        case TL_ROPE_SCALING_LINEAR: f /= c->rope_factor; break;
        case TL_ROPE_SCALING_LLAMA3: {
            /* Meta's llama3 apply_scaling: long wavelengths slowed by the factor, short kept,
             * a smooth blend in between */
            const double low_wl = c->rope_orig_ctx / c->rope_low_freq_factor;
            const double high_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
            const double wl = 2 * M_PI / f;
            if (wl > low_wl) {
                f /= c->rope_factor;
            } else if (wl >= high_wl) {
                double smooth = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
            break;
        }
        default: break;
        }
        inv_freq[i] = (float)f;
    }
}

/* The RoPE tables of a context: every layer's, and the windowed layers' where those differ
 * (gemma3: base 10000, unscaled). Phi-3 LongRoPE picks the long factors when the context is
 * longer than the original one, as llama.cpp's get_rope_factors does. */
static void rope_tables(const tl_model *m, int32_t max_seq_len, float *inv_freq, float *inv_freq_swa) {
    const tl_model_config *c = &m->config;
    const float *divisors = m->rope_freqs;
    if (!divisors && c->rope_longrope) divisors = max_seq_len > c->rope_orig_ctx ? m->rope_long : m->rope_short;
    rope_frequencies(c, c->rope_theta, divisors, true, inv_freq);
    rope_frequencies(c, c->rope_theta_swa, divisors, !c->rope_swa_unscaled, inv_freq_swa);
}

tl_status tl_context_new(const tl_model *m, const tl_context_params *p, tl_context **out) {
    *out = NULL;
    tl_context_params d = tl_context_default_params();
    if (!p) p = &d;
    const tl_model_config *c = &m->config;
    int32_t seq = p->max_seq_len ? p->max_seq_len : (c->max_seq_len < 4096 ? c->max_seq_len : 4096);
    int32_t batch = p->max_batch_size ? p->max_batch_size : 1;
    int32_t threads = p->n_threads ? p->n_threads : tl_physical_cores();
    const tl_dtype kv = p->kv_dtype;
    tl_device *dev = m->device;
    if (seq < 1 || seq > (1 << 20))
        return tl_set_error(TL_ERR_INVALID, "max_seq_len must be between 1 and %d, got %d", 1 << 20, seq);
    if (batch < 1 || batch > 1024)
        return tl_set_error(TL_ERR_INVALID, "max_batch_size must be between 1 and 1024, got %d", batch);
    if (kv != TL_F16 && kv != TL_F32 && kv != TL_Q8_0)
        return tl_set_error(TL_ERR_INVALID, "kv cache dtype must be f16, f32 or q8_0");
    if (kv == TL_Q8_0 && !dev->ops->kv_q8_0)
        return tl_set_error(TL_ERR_UNSUPPORTED, "a q8_0 KV cache is not available on the %s backend (f16 or f32)",
                            dev->ops->name);
    if (kv == TL_Q8_0 && (c->head_dim % 32 || c->head_dim > 8192))
        return tl_set_error(TL_ERR_UNSUPPORTED,
                            "a q8_0 KV cache needs heads of a multiple of 32 up to 8192 values; this model's are %d "
                            "(use f16 or f32)", (int)c->head_dim);
    tl_context *x = calloc(1, sizeof *x);
    if (!x) return tl_set_error(TL_ERR_NOMEM, "context: out of memory");
    x->model = m;
    x->max_seq_len = seq;
    x->max_batch_size = batch;
    x->kv_dtype = kv;
    tl_status s = dev->ops->stream_new(dev, threads, &x->stream);
    if (s) {
        free(x);
        return s;
    }
    size_t cells;
    const size_t row = tl_dtype_row_size(kv, (int64_t)c->n_kv_heads * c->head_dim); /* one position's keys */
    bool overflow = tl_mul_overflows((size_t)c->n_layers * batch, (size_t)seq, &cells) ||
                    tl_mul_overflows(cells, row, &cells);
    /* on the CPU, pages are only touched as positions are filled */
    if (overflow)
        s = tl_set_error(TL_ERR_NOMEM, "context: a KV cache of %d sequences x %d positions does not fit in memory", batch, seq);
    if (!s) s = dev->ops->alloc(dev, cells, &x->k_cache);
    if (!s) s = dev->ops->alloc(dev, cells, &x->v_cache);
    if (s) {
        tl_context_free(x);
        return s;
    }
    x->seq_len = calloc((size_t)batch, sizeof *x->seq_len);
    x->new_len = calloc((size_t)batch, sizeof *x->new_len);
    x->inv_freq = malloc((size_t)(c->rope_dim / 2 + 1) * sizeof(float));
    x->inv_freq_swa = malloc((size_t)(c->rope_dim / 2 + 1) * sizeof(float));
    if (!x->seq_len || !x->new_len || !x->inv_freq || !x->inv_freq_swa) {
        tl_context_free(x);
        return tl_set_error(TL_ERR_NOMEM, "context: out of memory for a KV cache of %d sequences x %d positions",
                            batch, seq);
    }
    rope_tables(m, seq, x->inv_freq, x->inv_freq_swa);
    if (c->n_windowed_layers == 0 || memcmp(x->inv_freq, x->inv_freq_swa, (size_t)(c->rope_dim / 2) * sizeof(float)) == 0) {
        free(x->inv_freq_swa); /* one table serves every layer */
        x->inv_freq_swa = x->inv_freq;
    }
    *out = x;
    return TL_OK;
}

void tl_context_free(tl_context *x) {
    if (!x) return;
    tl_device *dev = x->model->device;
    dev->ops->free(dev, x->k_cache);
    dev->ops->free(dev, x->v_cache);
    tl_context_release_buffers(x);
    if (x->stream) x->stream->ops->stream_free(x->stream);
    free(x->seq_len);
    free(x->new_len);
    if (x->inv_freq_swa != x->inv_freq) free(x->inv_freq_swa);
    free(x->inv_freq);
    free(x);
}

int32_t tl_context_max_seq_len(const tl_context *x) { return x->max_seq_len; }
int32_t tl_context_max_batch_size(const tl_context *x) { return x->max_batch_size; }

void tl_context_clear(tl_context *x, int32_t seq) {
    for (int32_t s = 0; s < x->max_batch_size; s++)
        if (seq < 0 || s == seq) x->seq_len[s] = 0;
}

int32_t tl_context_seq_len(const tl_context *x, int32_t seq) {
    return seq >= 0 && seq < x->max_batch_size ? x->seq_len[seq] : -1;
}

void tl_context_cancel(tl_context *x) { x->cancel = 1; }

void tl_context_set_abort_callback(tl_context *x, bool (*should_abort)(void *user), void *user) {
    x->should_abort = should_abort;
    x->abort_user = user;
}
