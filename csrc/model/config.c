/* Model configuration and architecture traits from GGUF metadata
 * (llama.cpp's keys: {arch}.embedding_length, {arch}.block_count, ...). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const supported[] = {"llama", "qwen2", "qwen3"};

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
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        ok |= a.len == strlen(supported[i]) && memcmp(a.ptr, supported[i], a.len) == 0;
    if (!ok || a.len >= sizeof c->arch)
        return tl_set_error(TL_ERR_UNSUPPORTED, "architecture '%.*s' is not supported yet (supported: llama, qwen2, qwen3)",
                            (int)(a.len > 40 ? 40 : a.len), a.ptr);
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
    /* llama.cpp's llama_model_rope_type: llama is NORM (adjacent pairs), qwen2/qwen3 NEOX */
    const tl_kv *neox = tl_weights_find_kv(w, "torchless.rope.neox"); /* HF llama q/k rows: rotate-half order */
    c->rope_style = strcmp(c->arch, "llama") == 0 && !(neox && neox->value.type == TL_VAL_BOOL && neox->value.b) ? TL_ROPE_NORM : TL_ROPE_NEOX;
    c->qkv_bias = strcmp(c->arch, "qwen2") == 0;
    c->qk_norm = strcmp(c->arch, "qwen3") == 0;

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
        } else {
            return tl_set_error(TL_ERR_UNSUPPORTED, "model: rope scaling type '%.*s' is not supported (none, linear, llama3)",
                                (int)(scaling->value.type == TL_VAL_STRING && scaling->value.str.len < 40 ? scaling->value.str.len : 0),
                                scaling->value.type == TL_VAL_STRING ? scaling->value.str.ptr : "");
        }
        c->rope_factor = factor;
        c->rope_orig_ctx = as_int(find(w, c->arch, "rope.scaling.original_context_length"), &v) && v > 0 ? (int32_t)v : 8192;
    }

    /* shapes that the forward relies on */
    if (c->n_heads % c->n_kv_heads != 0)
        return tl_set_error(TL_ERR_FORMAT, "model: %d heads is not a multiple of %d kv heads", c->n_heads, c->n_kv_heads);
    if (c->rope_dim > c->head_dim || c->rope_dim % 2)
        return tl_set_error(TL_ERR_FORMAT, "model: rope dimension %d must be even and at most head_dim %d", c->rope_dim,
                            c->head_dim);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps) || !(c->rope_theta > 0) || !isfinite(c->rope_theta) ||
        (c->rope_scaling && !(c->rope_factor > 0)))
        return tl_set_error(TL_ERR_FORMAT, "model: bad norm epsilon, rope base or rope scaling factor");
    return TL_OK;
}
