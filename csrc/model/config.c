/* Model configuration and architecture traits from GGUF metadata
 * (llama.cpp's keys: {arch}.embedding_length, {arch}.block_count, ...). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The one list of architectures the loader accepts (docs/architectures.md). */
static const char *const supported[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", NULL};
#define N_SUPPORTED (sizeof supported / sizeof supported[0] - 1)

const char *const *tl_supported_architectures(void) { return supported; }

static const tl_kv *find(const tl_weights *w, const char *arch, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return tl_weights_find_kv(w, key);
}

static bool as_int(const tl_kv *kv, int64_t *out) {
    if (!kv) return false;
    switch (kv->value.type) {
    case TL_VAL_UINT8: case TL_VAL_UINT16: case TL_VAL_UINT32: case TL_VAL_UINT64:
        if (kv->value.u64 > INT32_MAX) return false;
        *out = (int64_t)kv->value.u64;
        return true;
    case TL_VAL_INT8: case TL_VAL_INT16: case TL_VAL_INT32: case TL_VAL_INT64:
        *out = kv->value.i64;
        return true;
    case TL_VAL_ARRAY: /* per-layer arrays (e.g. head_count_kv): all equal is fine */
        if (kv->value.arr.n == 0 || (kv->value.arr.elem_type != TL_VAL_INT32 && kv->value.arr.elem_type != TL_VAL_UINT32))
            return false;
        {
            const int32_t *v = kv->value.arr.data;
            for (uint64_t i = 1; i < kv->value.arr.n; i++)
                if (v[i] != v[0]) return false;
            *out = v[0];
        }
        return true;
    default: return false;
    }
}

static bool as_float(const tl_kv *kv, float *out) {
    if (!kv) return false;
    if (kv->value.type == TL_VAL_FLOAT32 || kv->value.type == TL_VAL_FLOAT64) {
        *out = (float)kv->value.f64;
        return true;
    }
    int64_t i;
    if (as_int(kv, &i)) {
        *out = (float)i;
        return true;
    }
    return false;
}

static bool as_string(const tl_kv *kv, const char *want) {
    return kv && kv->value.type == TL_VAL_STRING && kv->value.str.len == strlen(want) &&
           memcmp(kv->value.str.ptr, want, kv->value.str.len) == 0;
}

static bool as_bool(const tl_kv *kv, bool *out) {
    if (!kv) return false;
    if (kv->value.type == TL_VAL_BOOL) {
        *out = kv->value.b;
        return true;
    }
    int64_t i;
    if (as_int(kv, &i)) {
        *out = i != 0;
        return true;
    }
    return false;
}

static bool is_arch(const tl_model_config *c, const char *name) { return strcmp(c->arch, name) == 0; }

/* Layer l is windowed per `{arch}.attention.sliding_window_pattern`: a u32 n means l % n < n - 1
 * (llama.cpp's set_swa_pattern: n - 1 local layers, then one global; n = 0: all local), an array
 * gives one flag per layer (nonzero = windowed). Without the key: gemma2 2, gemma3 6, others all
 * windowed. No window: no layer is. */
bool tl_model_layer_windowed(const tl_weights *w, const tl_model_config *c, int layer) {
    if (c->sliding_window <= 0) return false;
    const tl_kv *kv = find(w, c->arch, "attention.sliding_window_pattern");
    int64_t n = is_arch(c, "gemma2") ? 2 : is_arch(c, "gemma3") ? 6 : 0;
    if (kv && kv->value.type == TL_VAL_ARRAY) {
        const tl_value_type t = kv->value.arr.elem_type;
        const size_t es = tl_value_type_size(t);
        if ((uint64_t)layer >= kv->value.arr.n || es == 0 || t == TL_VAL_FLOAT32 || t == TL_VAL_FLOAT64) return false;
        const uint8_t *p = (const uint8_t *)kv->value.arr.data + (size_t)layer * es;
        for (size_t i = 0; i < es; i++)
            if (p[i]) return true;
        return false;
    }
    if (kv) as_int(kv, &n);
    return n <= 0 || layer % n < n - 1;
}

#define REQUIRE_INT(field, suffix)                                                                        \
    do {                                                                                                  \
        int64_t v_;                                                                                       \
        if (!as_int(find(w, c->arch, suffix), &v_) || v_ <= 0 || v_ > (1 << 24))                          \
            return tl_set_error(TL_ERR_FORMAT, "model: %s.%s is missing or not a positive integer", c->arch, \
                                suffix);                                                                  \
        c->field = (int32_t)v_;                                                                           \
    } while (0)

tl_status tl_model_config_from_weights(const tl_weights *w, tl_model_config *c) {
    memset(c, 0, sizeof *c);
    const tl_kv *arch = tl_weights_find_kv(w, "general.architecture");
    if (!arch || arch->value.type != TL_VAL_STRING)
        return tl_set_error(TL_ERR_FORMAT, "model: general.architecture is missing");
    tl_string a = arch->value.str;
    bool ok = false;
    for (size_t i = 0; i < N_SUPPORTED; i++)
        ok |= a.len == strlen(supported[i]) && memcmp(a.ptr, supported[i], a.len) == 0;
    if (!ok || a.len >= sizeof c->arch) {
        char list[128] = "";
        for (size_t i = 0; i < N_SUPPORTED; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", supported[i]);
        return tl_set_error(TL_ERR_UNSUPPORTED, "architecture '%.*s' is not supported yet (supported: %s)",
                            (int)(a.len > 40 ? 40 : a.len), a.ptr, list);
    }
    memcpy(c->arch, a.ptr, a.len);

    REQUIRE_INT(dim, "embedding_length");
    REQUIRE_INT(n_layers, "block_count");
    REQUIRE_INT(n_heads, "attention.head_count");
    REQUIRE_INT(hidden_dim, "feed_forward_length");
    int64_t v;
    c->n_kv_heads = as_int(find(w, c->arch, "attention.head_count_kv"), &v) && v > 0 ? (int32_t)v : c->n_heads;
    c->head_dim = as_int(find(w, c->arch, "attention.key_length"), &v) && v > 0 ? (int32_t)v : c->dim / c->n_heads;
    int64_t vlen;
    if (as_int(find(w, c->arch, "attention.value_length"), &vlen) && vlen != c->head_dim)
        return tl_set_error(TL_ERR_UNSUPPORTED, "model: value_length %lld differs from key_length %d",
                            (long long)vlen, c->head_dim);
    c->max_seq_len = as_int(find(w, c->arch, "context_length"), &v) && v > 0 ? (int32_t)v : 2048;
    if (!as_float(find(w, c->arch, "attention.layer_norm_rms_epsilon"), &c->norm_eps)) c->norm_eps = 1e-5f;
    if (!as_float(find(w, c->arch, "rope.freq_base"), &c->rope_theta)) c->rope_theta = 10000.0f;
    c->rope_dim = as_int(find(w, c->arch, "rope.dimension_count"), &v) && v > 0 ? (int32_t)v : c->head_dim;
    /* llama.cpp's llama_model_rope_type: llama is NORM (adjacent pairs), the others here NEOX;
     * torchless.rope.neox says the q/k rows are in rotate-half order whatever the arch */
    bool neox = false;
    as_bool(tl_weights_find_kv(w, "torchless.rope.neox"), &neox);
    c->rope_style = is_arch(c, "llama") && !neox ? TL_ROPE_NORM : TL_ROPE_NEOX;
    c->qkv_bias = is_arch(c, "qwen2");
    c->qk_norm = is_arch(c, "qwen3") || is_arch(c, "gemma3");
    const bool gemma = is_arch(c, "gemma") || is_arch(c, "gemma2") || is_arch(c, "gemma3");
    /* Gemma (llama.cpp src/models/gemma*.cpp, HF modeling_gemma*.py): GeGLU with tanh GELU,
     * embeddings times sqrt(n_embd); gemma2/3 add post-attention and post-FFN norms */
    c->activation = gemma ? TL_ACT_GELU_TANH : TL_ACT_SILU;
    c->embed_scale = gemma ? sqrtf((float)c->dim) : 1.0f;
    c->post_norms = is_arch(c, "gemma2") || is_arch(c, "gemma3");

    /* attention scale: the file's, else llama.cpp's f_attention_scale for gemma2/3 (the 27B
     * models, 46 and 62 layers, use 1/sqrt(n_embd / n_head)), else 1/sqrt(head_dim) */
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    if ((is_arch(c, "gemma2") && c->n_layers == 46) || (is_arch(c, "gemma3") && c->n_layers == 62))
        c->attn_scale = 1.0f / sqrtf((float)(c->dim / c->n_heads));
    as_float(find(w, c->arch, "attention.scale"), &c->attn_scale);

    /* soft-capping: gemma2 defaults to llama.cpp's 50 (attention) and 30 (logits) */
    if (is_arch(c, "gemma2")) {
        c->attn_softcap = 50.0f;
        c->final_softcap = 30.0f;
    }
    as_float(find(w, c->arch, "attn_logit_softcapping"), &c->attn_softcap);
    as_float(find(w, c->arch, "final_logit_softcapping"), &c->final_softcap);

    /* sliding window: gemma2 defaults to 4096 (llama.cpp); phi3's key is ignored, as llama.cpp
     * does (its Phi SWA is disabled) */
    if (is_arch(c, "gemma2")) c->sliding_window = 4096;
    if (!is_arch(c, "phi3") && as_int(find(w, c->arch, "attention.sliding_window"), &v)) c->sliding_window = (int32_t)v;
    if (c->sliding_window < 0) c->sliding_window = 0;
    const tl_kv *pattern = find(w, c->arch, "attention.sliding_window_pattern");
    if (pattern && pattern->value.type == TL_VAL_ARRAY &&
        (pattern->value.arr.n != (uint64_t)c->n_layers || tl_value_type_size(pattern->value.arr.elem_type) == 0))
        return tl_set_error(TL_ERR_FORMAT, "model: %s.attention.sliding_window_pattern must have one flag per layer (%d)",
                            c->arch, c->n_layers);
    for (int l = 0; l < c->n_layers; l++) c->n_windowed_layers += tl_model_layer_windowed(w, c, l);

    const tl_kv *scaling = find(w, c->arch, "rope.scaling.type");
    float factor = 1.0f;
    as_float(find(w, c->arch, "rope.scaling.factor"), &factor);
    if (scaling && !as_string(scaling, "none")) {
        if (as_string(scaling, "linear")) {
            c->rope_scaling = TL_ROPE_SCALING_LINEAR;
        } else if (as_string(scaling, "llama3")) {
            c->rope_scaling = TL_ROPE_SCALING_LLAMA3;
            c->rope_low_freq_factor = 1.0f;
            c->rope_high_freq_factor = 4.0f;
            as_float(find(w, c->arch, "rope.scaling.low_freq_factor"), &c->rope_low_freq_factor);
            as_float(find(w, c->arch, "rope.scaling.high_freq_factor"), &c->rope_high_freq_factor);
        } else if (as_string(scaling, "longrope") && (tl_weights_find_tensor(w, "rope_factors_long.weight") ||
                                                      tl_weights_find_tensor(w, "rope_factors_short.weight"))) {
            /* Phi-3 LongRoPE: the factor tensors carry it (below) */
        } else {
            return tl_set_error(TL_ERR_UNSUPPORTED, "model: rope scaling type '%.*s' is not supported (none, linear, llama3)",
                                (int)(scaling->value.type == TL_VAL_STRING && scaling->value.str.len < 40 ? scaling->value.str.len : 0),
                                scaling->value.type == TL_VAL_STRING ? scaling->value.str.ptr : "");
        }
        if (c->rope_scaling) c->rope_factor = factor;
        c->rope_orig_ctx = as_int(find(w, c->arch, "rope.scaling.original_context_length"), &v) && v > 0 ? (int32_t)v : 8192;
    }

    /* windowed layers: their own base (gemma3: 10000) and, for gemma3, no scaling (llama.cpp:
     * rope_freq_base_train_swa = 10000, rope_freq_scale_train_swa = 1) */
    c->rope_theta_swa = is_arch(c, "gemma3") ? 10000.0f : c->rope_theta;
    as_float(find(w, c->arch, "rope.freq_base_swa"), &c->rope_theta_swa);
    c->rope_swa_unscaled = is_arch(c, "gemma3");

    /* Phi-3 LongRoPE (llama.cpp: rope_factors_long/short per-pair divisors, long when the
     * context exceeds the original length; rope.scaling.attn_factor multiplies cos and sin) */
    c->rope_attn_factor = 1.0f;
    c->rope_longrope = tl_weights_find_tensor(w, "rope_factors_long.weight") != NULL ||
                       tl_weights_find_tensor(w, "rope_factors_short.weight") != NULL;
    if (c->rope_longrope && !scaling)
        c->rope_orig_ctx = as_int(find(w, c->arch, "rope.scaling.original_context_length"), &v) && v > 0 ? (int32_t)v
                                                                                                      : c->max_seq_len;
    if (!as_float(find(w, c->arch, "rope.scaling.attn_factor"), &c->rope_attn_factor) && c->rope_longrope &&
        c->max_seq_len > c->rope_orig_ctx) {
        /* not stored: llama.cpp's converter's value, sqrt(1 + ln(scale) / ln(original context)) */
        double scale = (double)c->max_seq_len / c->rope_orig_ctx;
        c->rope_attn_factor = (float)sqrt(1.0 + log(scale) / log((double)c->rope_orig_ctx));
    }

    /* shapes that the forward relies on */
    if (c->n_heads % c->n_kv_heads != 0)
        return tl_set_error(TL_ERR_FORMAT, "model: %d heads is not a multiple of %d kv heads", c->n_heads, c->n_kv_heads);
    if (c->rope_dim > c->head_dim || c->rope_dim % 2)
        return tl_set_error(TL_ERR_FORMAT, "model: rope dimension %d must be even and at most head_dim %d", c->rope_dim,
                            c->head_dim);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps) || !(c->rope_theta > 0) || !isfinite(c->rope_theta) ||
        (c->rope_scaling && !(c->rope_factor > 0)) || !(c->rope_theta_swa > 0) || !isfinite(c->rope_theta_swa) ||
        !(c->rope_attn_factor > 0) || !isfinite(c->rope_attn_factor))
        return tl_set_error(TL_ERR_FORMAT, "model: bad norm epsilon, rope base or rope scaling factor");
    if (!isfinite(c->attn_scale) || !(c->attn_scale > 0) || !(c->attn_softcap >= 0) || !isfinite(c->attn_softcap) ||
        !(c->final_softcap >= 0) || !isfinite(c->final_softcap))
        return tl_set_error(TL_ERR_FORMAT, "model: bad attention scale or soft-capping value");
    return TL_OK;
}
