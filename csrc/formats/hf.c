/* Hugging Face model folders: config.json -> llama.cpp's GGUF metadata keys, the
 * safetensors tensors renamed to GGUF names, norm vectors converted once.
 *
 * What a key means and when llama.cpp writes it follows convert_hf_to_gguf.py
 * (TextModel.set_gguf_parameters and the per-architecture classes); field names
 * and defaults follow transformers' configuration_*.py, in both schemas:
 *   transformers 4: rope_theta, rope_scaling, rope_local_base_freq, sliding_window_pattern
 *   transformers 5: rope_parameters (maybe per layer type: full_attention /
 *                   sliding_attention), layer_types
 * Big matrices are used where they are mapped. Norm vectors become F32 in the
 * table's arena, with the Gemma family's +1 (HF computes x*(1+w); GGUF stores 1+w).
 * HF LLaMA/Mistral q/k rows are in rotate-half order: torchless.rope.neox says so. */
#include "formats/hf.h"

#include "core/dtype.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- the key table */

tl_status hf_put(hf_table *h, const char *key, tl_value v) {
    if (h->n_kv == h->cap_kv) {
        size_t cap = h->cap_kv ? h->cap_kv * 2 : 64;
        tl_kv *kv = realloc(h->kv, cap * sizeof *kv);
        if (!kv) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
        h->kv = kv;
        h->cap_kv = cap;
    }
    tl_kv *kv = &h->kv[h->n_kv];
    tl_status s = tl_weights_strdup(h->w, key, strlen(key), &kv->key);
    if (s) return s;
    kv->value = v;
    h->n_kv++;
    return TL_OK;
}

tl_status hf_put_u32(hf_table *h, const char *key, uint32_t v) {
    return hf_put(h, key, (tl_value){.type = TL_VAL_UINT32, .u64 = v});
}

tl_status hf_put_f32(hf_table *h, const char *key, double v) {
    return hf_put(h, key, (tl_value){.type = TL_VAL_FLOAT32, .f64 = (float)v});
}

tl_status hf_put_bool(hf_table *h, const char *key, bool v) {
    return hf_put(h, key, (tl_value){.type = TL_VAL_BOOL, .b = v});
}

tl_status hf_put_str(hf_table *h, const char *key, const char *str, size_t len) {
    tl_value v = {.type = TL_VAL_STRING};
    tl_status s = tl_weights_strdup(h->w, str, len, &v.str);
    return s ? s : hf_put(h, key, v);
}

bool hf_has(const hf_table *h, const char *key) {
    for (size_t i = 0; i < h->n_kv; i++)
        if (tl_string_eq_cstr(h->kv[i].key, key)) return true;
    return false;
}

bool hf_path(const hf_table *h, const char *name, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s/%s", h->dir, name);
    return n >= 0 && (size_t)n < cap;
}

bool hf_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---------------------------------------------------------------- config.json fields */

static const tl_json *field(const tl_json *obj, const char *key) {
    const tl_json *v = tl_json_get(obj, key);
    return v && v->kind != TL_JSON_NULL ? v : NULL; /* null means "not set" in HF configs */
}

static tl_status bad_field(const hf_table *h, const char *key, const char *problem) {
    return tl_set_error(TL_ERR_FORMAT, "hf: %s: '%s' %s", h->config_path, key, problem);
}

/* An optional integer field; *present says whether it was set. */
static tl_status opt_int(const hf_table *h, const tl_json *obj, const char *key, int64_t *out, bool *present) {
    const tl_json *v = field(obj, key);
    *present = v != NULL;
    if (!v) return TL_OK;
    if (v->kind == TL_JSON_NUMBER && !v->number.is_int && v->number.f64 == floor(v->number.f64) &&
        fabs(v->number.f64) < 9e15) {
        *out = (int64_t)v->number.f64; /* 4096.0 */
        return TL_OK;
    }
    if (v->kind != TL_JSON_NUMBER || !v->number.is_int) return bad_field(h, key, "must be an integer");
    *out = v->number.i64;
    return TL_OK;
}

static tl_status opt_num(const hf_table *h, const tl_json *obj, const char *key, double *out, bool *present) {
    const tl_json *v = field(obj, key);
    *present = v != NULL;
    if (!v) return TL_OK;
    if (v->kind != TL_JSON_NUMBER) return bad_field(h, key, "must be a number");
    *out = v->number.f64;
    return TL_OK;
}

/* A positive integer: required (error naming it when absent) unless def > 0. */
static tl_status pos_int(const hf_table *h, const tl_json *obj, const char *key, int64_t def, int64_t *out) {
    bool present;
    tl_status s = opt_int(h, obj, key, out, &present);
    if (s) return s;
    if (!present) {
        if (def > 0) {
            *out = def;
            return TL_OK;
        }
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: '%s' is missing", h->config_path, key);
    }
    if (*out <= 0 || *out > (1 << 30)) return bad_field(h, key, "must be a positive integer");
    return TL_OK;
}

/* ---------------------------------------------------------------- architectures */

typedef enum family { FAM_LLAMA, FAM_QWEN2, FAM_QWEN3, FAM_GEMMA, FAM_GEMMA2, FAM_GEMMA3, FAM_PHI3 } family;

static const struct {
    const char *hf;
    const char *arch;
    family fam;
    int64_t ctx;      /* transformers' default max_position_embeddings */
    double eps;       /* default rms_norm_eps */
    double theta;     /* default rope_theta */
} archs[] = {
    {"LlamaForCausalLM", "llama", FAM_LLAMA, 2048, 1e-6, 10000.0},
    {"MistralForCausalLM", "llama", FAM_LLAMA, 4096 * 32, 1e-6, 10000.0},
    {"Qwen2ForCausalLM", "qwen2", FAM_QWEN2, 32768, 1e-6, 10000.0},
    {"Qwen3ForCausalLM", "qwen3", FAM_QWEN3, 32768, 1e-6, 10000.0},
    {"GemmaForCausalLM", "gemma", FAM_GEMMA, 8192, 1e-6, 10000.0},
    {"Gemma2ForCausalLM", "gemma2", FAM_GEMMA2, 8192, 1e-6, 10000.0},
    {"Gemma3ForCausalLM", "gemma3", FAM_GEMMA3, 131072, 1e-6, 1000000.0},
    {"Gemma3ForConditionalGeneration", "gemma3", FAM_GEMMA3, 131072, 1e-6, 1000000.0},
    {"Phi3ForCausalLM", "phi3", FAM_PHI3, 4096, 1e-5, 10000.0},
};
#define N_ARCHS (sizeof archs / sizeof archs[0])

static bool is_gemma(family f) { return f == FAM_GEMMA || f == FAM_GEMMA2 || f == FAM_GEMMA3; }

typedef struct model_info {
    int idx; /* into archs */
    const char *arch;
    family fam;
    int64_t dim, n_layers, n_heads, n_kv_heads, ffn, head_dim, vocab;
    bool tied;
} model_info;

static tl_status key_of(const model_info *m, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", m->arch, suffix);
    return TL_OK;
}

#define PUT(kind, suffix, ...)                                                        \
    do {                                                                              \
        char k_[128];                                                                 \
        key_of(m, suffix, k_, sizeof k_);                                             \
        if ((s = hf_put_##kind(h, k_, __VA_ARGS__))) return s;                        \
    } while (0)

/* Which architecture: architectures[0], else an error listing the supported ones. */
static tl_status find_arch(hf_table *h, const tl_json *root, model_info *m) {
    const tl_json *list = field(root, "architectures");
    const tl_json *first = list && list->kind == TL_JSON_ARRAY ? tl_json_index(list, 0) : NULL;
    char supported[512] = "";
    for (size_t i = 0; i < N_ARCHS; i++) {
        size_t n = strlen(supported);
        snprintf(supported + n, sizeof supported - n, "%s%s", i ? ", " : "", archs[i].hf);
    }
    if (!first || first->kind != TL_JSON_STRING)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'architectures' is missing or not a list of names (supported: %s)",
                            h->config_path, supported);
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (strcmp(first->string.ptr, archs[i].hf) == 0) {
            m->idx = (int)i;
            m->arch = archs[i].arch;
            m->fam = archs[i].fam;
            return TL_OK;
        }
    }
    return tl_set_error(TL_ERR_UNSUPPORTED,
                        "hf: %s: architecture '%.80s' is not supported (supported: %s); open the .safetensors file "
                        "itself to read its tensors as they are",
                        h->config_path, first->string.ptr, supported);
}

/* RoPE settings of one kind of layer, from either schema. */
typedef struct rope_params {
    const tl_json *obj; /* the rope_parameters / rope_scaling object, or NULL */
    double theta;
    bool has_theta;
    const char *type; /* "default" when not scaled */
} rope_params;

static tl_status rope_type_of(const hf_table *h, const tl_json *obj, const char *what, const char **out) {
    *out = "default";
    if (!obj) return TL_OK;
    if (obj->kind != TL_JSON_OBJECT) return bad_field(h, what, "must be an object");
    const tl_json *t = field(obj, "rope_type");
    if (!t) t = field(obj, "type");
    if (!t) return TL_OK;
    if (t->kind != TL_JSON_STRING) return bad_field(h, what, "has a 'rope_type' that is not a string");
    *out = t->string.ptr;
    return TL_OK;
}

/* full: the global layers' RoPE; swa: the sliding layers' (theta only). */
static tl_status read_rope(hf_table *h, const tl_json *cfg, const model_info *m, rope_params *full, rope_params *swa) {
    tl_status s;
    memset(full, 0, sizeof *full);
    memset(swa, 0, sizeof *swa);
    const tl_json *params = field(cfg, "rope_parameters"); /* transformers 5 */
    const tl_json *scaling = field(cfg, "rope_scaling");   /* transformers 4 */
    double theta4 = archs[m->idx].theta;
    bool has_theta4 = false;
    if ((s = opt_num(h, cfg, "rope_theta", &theta4, &has_theta4))) return s;
    if (params) {
        if (params->kind != TL_JSON_OBJECT) return bad_field(h, "rope_parameters", "must be an object");
        const tl_json *pf = field(params, "full_attention"), *ps = field(params, "sliding_attention");
        full->obj = pf ? pf : params;
        if (full->obj->kind != TL_JSON_OBJECT) return bad_field(h, "rope_parameters", "must hold objects");
        if ((s = opt_num(h, full->obj, "rope_theta", &full->theta, &full->has_theta))) return s;
        if (ps) {
            swa->obj = ps;
            if (ps->kind != TL_JSON_OBJECT) return bad_field(h, "rope_parameters", "must hold objects");
            if ((s = opt_num(h, ps, "rope_theta", &swa->theta, &swa->has_theta))) return s;
        }
        if (full->has_theta && has_theta4 && full->theta != theta4)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'rope_theta' (%g) and 'rope_parameters' rope_theta (%g) disagree",
                                h->config_path, theta4, full->theta);
        if (scaling) { /* both schemas at once must say the same */
            const char *t4, *t5;
            if ((s = rope_type_of(h, scaling, "rope_scaling", &t4)) ||
                (s = rope_type_of(h, full->obj, "rope_parameters", &t5)))
                return s;
            if (strcmp(t4, t5) != 0)
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'rope_scaling' type '%s' and 'rope_parameters' type '%s' disagree",
                                    h->config_path, t4, t5);
        }
    } else {
        full->obj = scaling;
    }
    if (!full->has_theta) {
        full->theta = theta4;
        full->has_theta = true;
    }
    if (!swa->has_theta) {
        bool has = false;
        double local = 0;
        if ((s = opt_num(h, cfg, "rope_local_base_freq", &local, &has))) return s;
        if (has) {
            swa->theta = local;
            swa->has_theta = true;
        } else if (m->fam == FAM_GEMMA3) {
            swa->theta = 10000.0; /* Gemma3TextConfig's default */
            swa->has_theta = true;
        }
    }
    if (!(full->theta > 0) || (swa->has_theta && !(swa->theta > 0))) return bad_field(h, "rope_theta", "must be positive");
    return rope_type_of(h, full->obj, params ? "rope_parameters" : "rope_scaling", &full->type);
}

/* A number from the rope object, else from the top level of config.json, else def. */
static tl_status rope_num(const hf_table *h, const tl_json *cfg, const tl_json *rope, const char *key, double def,
                          double *out) {
    bool present = false;
    tl_status s = rope ? opt_num(h, rope, key, out, &present) : TL_OK;
    if (!s && !present) s = opt_num(h, cfg, key, out, &present);
    if (!s && !present) {
        if (def != def) return tl_set_error(TL_ERR_FORMAT, "hf: %s: rope scaling needs '%s'", h->config_path, key);
        *out = def;
    }
    return s;
}

/* A float32 vector made in the arena, as a tensor of the table. */
static tl_status add_f32_tensor(tl_weights *w, tl_named_tensor *t, const char *name, const float *v, int64_t n) {
    float *data = tl_arena_alloc_array(&w->arena, (size_t)n, sizeof *data, 64);
    if (!data) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    memcpy(data, v, (size_t)n * sizeof *data);
    tl_status s = tl_weights_strdup(w, name, strlen(name), &t->name);
    if (s) return s;
    t->tensor = (tl_tensor){.dtype = TL_F32, .n_dims = 1, .ne = {n, 1, 1, 1}, .nbytes = (size_t)n * sizeof(float),
                            .data = data};
    return TL_OK;
}

/* Extra tensors the converter computes from the config (rope_freqs, rope factors). */
typedef struct extra_tensors {
    tl_named_tensor t[2];
    int n;
} extra_tensors;

static tl_status rope_scaling_keys(hf_table *h, const tl_json *cfg, const model_info *m, const rope_params *rp,
                                   int64_t rope_dim, int64_t ctx, extra_tensors *extra) {
    tl_status s;
    const char *type = rp->type;
    const double nan_ = NAN;
    if (strcmp(type, "default") == 0) return TL_OK;
    if (strcmp(type, "linear") == 0) {
        double factor;
        if ((s = rope_num(h, cfg, rp->obj, "factor", nan_, &factor))) return s;
        if (!(factor > 0)) return bad_field(h, "factor", "(rope scaling) must be positive");
        PUT(str, "rope.scaling.type", "linear", 6);
        PUT(f32, "rope.scaling.factor", factor);
        return TL_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        /* llama.cpp writes the per-frequency divisors as rope_freqs.weight (LlamaModel.generate_extra_tensors) */
        double factor, lo, hi, orig;
        if ((s = rope_num(h, cfg, rp->obj, "factor", 8.0, &factor)) ||
            (s = rope_num(h, cfg, rp->obj, "low_freq_factor", 1.0, &lo)) ||
            (s = rope_num(h, cfg, rp->obj, "high_freq_factor", 4.0, &hi)) ||
            (s = rope_num(h, cfg, rp->obj, "original_max_position_embeddings", 8192, &orig)))
            return s;
        if (!(factor > 0) || !(hi > lo) || !(lo > 0) || !(orig > 0))
            return bad_field(h, "rope_scaling", "has llama3 factors that are not positive with high_freq_factor > low_freq_factor");
        int64_t n = rope_dim / 2;
        float *f = malloc((size_t)n * sizeof *f);
        if (!f) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
        const double lo_wavelen = orig / lo, hi_wavelen = orig / hi;
        for (int64_t i = 0; i < n; i++) {
            float freq = (float)(1.0 / pow(rp->theta, (double)(2 * i) / (double)rope_dim));
            double wavelen = 2 * M_PI / freq;
            if (wavelen < hi_wavelen) f[i] = 1.0f;
            else if (wavelen > lo_wavelen) f[i] = (float)factor;
            else {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
            }
        }
        s = add_f32_tensor(h->w, &extra->t[extra->n++], "rope_freqs.weight", f, n);
        free(f);
        return s;
    }
    if ((strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0) && m->fam == FAM_PHI3) {
        /* Phi3MiniModel: attn_factor = sqrt(1 + ln(scale) / ln(orig)) when scale > 1, factors as tensors */
        double orig;
        if ((s = rope_num(h, cfg, rp->obj, "original_max_position_embeddings", nan_, &orig))) return s;
        if (!(orig > 1)) return bad_field(h, "original_max_position_embeddings", "must be an integer > 1");
        double scale = (double)ctx / orig;
        double attn = scale > 1.0 ? sqrt(1 + log(scale) / log(orig)) : 1.0;
        PUT(f32, "rope.scaling.attn_factor", attn);
        PUT(u32, "rope.scaling.original_context_length", (uint32_t)orig);
        static const char *const keys[2] = {"long_factor", "short_factor"};
        static const char *const names[2] = {"rope_factors_long.weight", "rope_factors_short.weight"};
        for (int k = 0; k < 2; k++) {
            const tl_json *a = rp->obj ? field(rp->obj, keys[k]) : NULL;
            if (!a || a->kind != TL_JSON_ARRAY)
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: longrope scaling needs '%s' (a list of numbers)",
                                    h->config_path, keys[k]);
            if ((int64_t)a->array.n != rope_dim / 2)
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: '%s' has %zu numbers, expected rope dimension / 2 = %lld",
                                    h->config_path, keys[k], a->array.n, (long long)(rope_dim / 2));
            float *f = malloc((a->array.n ? a->array.n : 1) * sizeof *f);
            if (!f) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
            for (size_t i = 0; i < a->array.n; i++) {
                const tl_json *x = &a->array.items[i];
                if (x->kind != TL_JSON_NUMBER) {
                    free(f);
                    return tl_set_error(TL_ERR_FORMAT, "hf: %s: '%s' element %zu is not a number", h->config_path,
                                        keys[k], i);
                }
                f[i] = (float)x->number.f64;
            }
            s = add_f32_tensor(h->w, &extra->t[extra->n++], names[k], f, (int64_t)a->array.n);
            free(f);
            if (s) return s;
        }
        return TL_OK;
    }
    return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: rope scaling type '%.40s' is not supported for %s (default, linear, llama3%s)",
                        h->config_path, type, archs[m->idx].hf, m->fam == FAM_PHI3 ? ", longrope" : "");
}

/* Per-layer sliding flags (NULL = no sliding window), from layer_types, the pattern,
 * or the architecture's fixed layout. */
static tl_status sliding_layers(hf_table *h, const tl_json *cfg, const model_info *m, int64_t *window, bool **flags,
                                int64_t *pattern) {
    tl_status s;
    bool has_window = false, present = false;
    *flags = NULL;
    *pattern = 0;
    if ((s = opt_int(h, cfg, "sliding_window", window, &has_window))) return s;
    const tl_json *types = field(cfg, "layer_types");
    int64_t pat = 0;
    bool has_pat = false;
    if ((s = opt_int(h, cfg, "sliding_window_pattern", &pat, &has_pat))) return s;
    if (has_pat && pat <= 0) return bad_field(h, "sliding_window_pattern", "must be a positive integer");
    bool use = true;
    const tl_json *u = field(cfg, "use_sliding_window");
    if (u && u->kind == TL_JSON_BOOL) use = u->boolean;
    int64_t max_window_layers = 0;
    if ((s = opt_int(h, cfg, "max_window_layers", &max_window_layers, &present))) return s;

    bool *f = calloc((size_t)m->n_layers, sizeof *f);
    if (!f) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    bool any = false;
    if (types) {
        if (types->kind != TL_JSON_ARRAY || (int64_t)types->array.n != m->n_layers) {
            free(f);
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'layer_types' must list one type per layer (%lld)",
                                h->config_path, (long long)m->n_layers);
        }
        for (int64_t l = 0; l < m->n_layers; l++) {
            const tl_json *t = &types->array.items[l];
            bool sliding = t->kind == TL_JSON_STRING && strcmp(t->string.ptr, "sliding_attention") == 0;
            bool full = t->kind == TL_JSON_STRING && strcmp(t->string.ptr, "full_attention") == 0;
            if (!sliding && !full) {
                free(f);
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: 'layer_types' entry %lld is not 'full_attention' or 'sliding_attention'",
                                    h->config_path, (long long)l);
            }
            f[l] = sliding;
            if (has_pat && sliding != ((l + 1) % pat != 0)) {
                free(f);
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'layer_types' and 'sliding_window_pattern' (%lld) disagree at layer %lld",
                                    h->config_path, (long long)pat, (long long)l);
            }
        }
    } else if (m->fam == FAM_GEMMA2) {
        for (int64_t l = 0; l < m->n_layers; l++) f[l] = l % 2 == 0; /* even layers local */
    } else if (m->fam == FAM_GEMMA3) {
        if (!has_pat) pat = 6;
        for (int64_t l = 0; l < m->n_layers; l++) f[l] = (l + 1) % pat != 0;
        if (has_pat) *pattern = pat;
    } else if (m->fam == FAM_QWEN2 || m->fam == FAM_QWEN3) {
        for (int64_t l = 0; l < m->n_layers; l++) f[l] = use && l >= max_window_layers;
    } else {
        for (int64_t l = 0; l < m->n_layers; l++) f[l] = true;
    }
    for (int64_t l = 0; l < m->n_layers; l++) any |= f[l];
    if (!has_window || !any || (m->fam == FAM_QWEN2 || m->fam == FAM_QWEN3 ? !use : false)) {
        if (any && !has_window && (types || has_pat)) {
            free(f);
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: sliding layers are listed but 'sliding_window' is missing",
                                h->config_path);
        }
        free(f);
        return TL_OK;
    }
    if (*window <= 0) {
        free(f);
        return bad_field(h, "sliding_window", "must be a positive integer");
    }
    *flags = f;
    return TL_OK;
}

static tl_status config_keys(hf_table *h, const tl_json *cfg, model_info *m, extra_tensors *extra) {
    tl_status s;
    bool present;
    PUT(u32, "embedding_length", (uint32_t)m->dim);
    PUT(u32, "block_count", (uint32_t)m->n_layers);
    PUT(u32, "feed_forward_length", (uint32_t)m->ffn);
    PUT(u32, "attention.head_count", (uint32_t)m->n_heads);
    PUT(u32, "attention.head_count_kv", (uint32_t)m->n_kv_heads);
    int64_t hd = 0;
    if ((s = opt_int(h, cfg, "head_dim", &hd, &present))) return s;
    if (present || is_gemma(m->fam)) {
        PUT(u32, "attention.key_length", (uint32_t)m->head_dim);
        PUT(u32, "attention.value_length", (uint32_t)m->head_dim);
    }
    int64_t ctx = 0;
    if ((s = pos_int(h, cfg, "max_position_embeddings", archs[m->idx].ctx, &ctx))) return s;
    PUT(u32, "context_length", (uint32_t)ctx);
    double eps = archs[m->idx].eps;
    if ((s = opt_num(h, cfg, "rms_norm_eps", &eps, &present))) return s;
    if (!(eps > 0)) return bad_field(h, "rms_norm_eps", "must be positive");
    PUT(f32, "attention.layer_norm_rms_epsilon", eps);

    rope_params full, swa;
    if ((s = read_rope(h, cfg, m, &full, &swa))) return s;
    PUT(f32, "rope.freq_base", full.theta);
    double partial = 1.0;
    if ((s = rope_num(h, cfg, full.obj, "partial_rotary_factor", 1.0, &partial))) return s;
    if (!(partial > 0 && partial <= 1)) return bad_field(h, "partial_rotary_factor", "must be in (0, 1]");
    int64_t rope_dim = (int64_t)(m->head_dim * partial);
    if (m->fam == FAM_PHI3) rope_dim = (int64_t)(partial * (double)m->dim) / m->n_heads; /* Phi3MiniModel */
    if (rope_dim <= 0 || rope_dim % 2) return bad_field(h, "partial_rotary_factor", "gives an odd or empty rotary dimension");
    PUT(u32, "rope.dimension_count", (uint32_t)rope_dim);
    if ((s = rope_scaling_keys(h, cfg, m, &full, rope_dim, ctx, extra))) return s;

    int64_t window = 0, pattern = 0;
    bool *flags = NULL;
    if ((s = sliding_layers(h, cfg, m, &window, &flags, &pattern))) return s;
    if (flags) {
        char k[128];
        key_of(m, "attention.sliding_window", k, sizeof k);
        s = hf_put_u32(h, k, (uint32_t)window);
        if (!s && (pattern > 0 || field(cfg, "layer_types"))) {
            key_of(m, "attention.sliding_window_pattern", k, sizeof k);
            if (pattern > 0) {
                s = hf_put_u32(h, k, (uint32_t)pattern);
            } else {
                bool *arr = tl_arena_alloc_array(&h->w->arena, (size_t)m->n_layers, 1, 8);
                if (!arr) s = tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
                else {
                    memcpy(arr, flags, (size_t)m->n_layers);
                    s = hf_put(h, k, (tl_value){.type = TL_VAL_ARRAY,
                                                .arr = {.elem_type = TL_VAL_BOOL, .n = (uint64_t)m->n_layers, .data = arr}});
                }
            }
        }
        free(flags);
        if (s) return s;
    }
    if (swa.has_theta && (m->fam == FAM_GEMMA3 || swa.theta != full.theta)) PUT(f32, "rope.freq_base_swa", swa.theta);

    if (m->fam == FAM_GEMMA2 || m->fam == FAM_GEMMA3) {
        double q = 0;
        if ((s = opt_num(h, cfg, "query_pre_attn_scalar", &q, &present))) return s;
        if (present) {
            if (!(q > 0)) return bad_field(h, "query_pre_attn_scalar", "must be positive");
            PUT(f32, "attention.scale", 1.0 / sqrt(q));
        }
    }
    static const char *const caps[2][2] = {{"attn_logit_softcapping", "attn_logit_softcapping"},
                                           {"final_logit_softcapping", "final_logit_softcapping"}};
    for (int i = 0; i < 2; i++) {
        double c = 0;
        if ((s = opt_num(h, cfg, caps[i][0], &c, &present))) return s;
        if (!present) continue;
        if (!(c > 0)) return bad_field(h, caps[i][0], "must be positive or null");
        PUT(f32, caps[i][1], c);
    }
    return TL_OK;
}

static tl_status read_config(hf_table *h, model_info *m, extra_tensors *extra) {
    tl_status s;
    const tl_json *root;
    if (!hf_path(h, "config.json", h->config_path, sizeof h->config_path))
        return tl_set_error(TL_ERR_INVALID, "hf: %s: path too long", h->dir);
    if ((s = tl_json_parse_file(h->config_path, &h->scratch, &root))) return s;
    if (root->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: expected a JSON object, got %s", h->config_path,
                            tl_json_kind_name(root->kind));
    if ((s = find_arch(h, root, m))) return s;
    const tl_json *cfg = root;
    if (strcmp(archs[m->idx].hf, "Gemma3ForConditionalGeneration") == 0) {
        cfg = field(root, "text_config");
        if (!cfg || cfg->kind != TL_JSON_OBJECT)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'text_config' is missing (Gemma3ForConditionalGeneration)",
                                h->config_path);
    }
    h->config = cfg;
    bool text_cfg = cfg != root;
    if ((s = pos_int(h, cfg, "hidden_size", 0, &m->dim)) || (s = pos_int(h, cfg, "num_hidden_layers", 0, &m->n_layers)) ||
        (s = pos_int(h, cfg, "intermediate_size", 0, &m->ffn)) ||
        (s = pos_int(h, cfg, "num_attention_heads", text_cfg ? 8 : 0, &m->n_heads)) ||
        (s = pos_int(h, cfg, "num_key_value_heads", text_cfg ? 4 : m->n_heads, &m->n_kv_heads)))
        return s;
    bool present;
    if ((s = opt_int(h, cfg, "head_dim", &m->head_dim, &present))) return s;
    if (!present && text_cfg) {
        m->head_dim = 256;
        present = true;
    }
    if (present && m->head_dim <= 0) return bad_field(h, "head_dim", "must be a positive integer");
    if (!present) {
        if (m->dim % m->n_heads)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'num_attention_heads' (%lld) does not divide 'hidden_size' (%lld) and there is no 'head_dim'",
                                h->config_path, (long long)m->n_heads, (long long)m->dim);
        m->head_dim = m->dim / m->n_heads;
    }
    if (m->n_heads % m->n_kv_heads)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'num_key_value_heads' (%lld) does not divide 'num_attention_heads' (%lld)",
                            h->config_path, (long long)m->n_kv_heads, (long long)m->n_heads);
    if ((s = opt_int(h, cfg, "vocab_size", &m->vocab, &present))) return s;
    if (!present) m->vocab = 0;
    const tl_json *tie = field(cfg, "tie_word_embeddings");
    if (!tie && text_cfg) tie = field(root, "tie_word_embeddings");
    m->tied = tie && tie->kind == TL_JSON_BOOL ? tie->boolean : is_gemma(m->fam);

    if ((s = hf_put_str(h, "general.architecture", m->arch, strlen(m->arch)))) return s;
    if ((s = config_keys(h, cfg, m, extra))) return s;
    if (m->fam == FAM_LLAMA && (s = hf_put_bool(h, "torchless.rope.neox", true))) return s;
    return hf_put_str(h, "torchless.source", "hf", 2);
}

/* ---------------------------------------------------------------- tensor names */

enum { PLAIN, NORM };

static const struct {
    const char *hf, *gguf;
    int kind;
} layer_names[] = {
    {"self_attn.q_proj.weight", "attn_q.weight", PLAIN},
    {"self_attn.q_proj.bias", "attn_q.bias", PLAIN},
    {"self_attn.k_proj.weight", "attn_k.weight", PLAIN},
    {"self_attn.k_proj.bias", "attn_k.bias", PLAIN},
    {"self_attn.v_proj.weight", "attn_v.weight", PLAIN},
    {"self_attn.v_proj.bias", "attn_v.bias", PLAIN},
    {"self_attn.o_proj.weight", "attn_output.weight", PLAIN},
    {"self_attn.o_proj.bias", "attn_output.bias", PLAIN},
    {"self_attn.qkv_proj.weight", "attn_qkv.weight", PLAIN},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", NORM},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", NORM},
    {"mlp.gate_proj.weight", "ffn_gate.weight", PLAIN},
    {"mlp.up_proj.weight", "ffn_up.weight", PLAIN},
    {"mlp.down_proj.weight", "ffn_down.weight", PLAIN},
    {"mlp.gate_up_proj.weight", "ffn_up.weight", PLAIN}, /* phi3: gate rows then up rows */
    {"input_layernorm.weight", "attn_norm.weight", NORM},
    {"post_attention_layernorm.weight", NULL, NORM}, /* ffn_norm, or post_attention_norm in gemma2/3 */
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight", NORM},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight", NORM},
};

/* The GGUF name of one HF tensor into buf; false when the tensor is not used. */
static tl_status gguf_name(const hf_table *h, const model_info *m, const char *name, char *buf, size_t cap, int *kind,
                           bool *used) {
    *used = false;
    *kind = PLAIN;
    /* Gemma 3 multimodal checkpoints keep the text model under language_model */
    static const char *const prefixes[][2] = {{"model.language_model.", "model."},
                                              {"language_model.model.", "model."},
                                              {"language_model.lm_head.", "lm_head."}};
    char tmp[512];
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(prefixes[i][0]);
        if (strncmp(name, prefixes[i][0], n) == 0) {
            snprintf(tmp, sizeof tmp, "%s%s", prefixes[i][1], name + n);
            name = tmp;
            break;
        }
    }
    if (strcmp(name, "model.embed_tokens.weight") == 0) {
        snprintf(buf, cap, "token_embd.weight");
    } else if (strcmp(name, "model.norm.weight") == 0) {
        snprintf(buf, cap, "output_norm.weight");
        *kind = NORM;
    } else if (strcmp(name, "lm_head.weight") == 0) {
        if (is_gemma(m->fam)) return TL_OK; /* llama.cpp drops it: Gemma ties the embeddings */
        snprintf(buf, cap, "output.weight");
    } else if (strncmp(name, "model.layers.", 13) == 0) {
        const char *p = name + 13;
        char *end;
        errno = 0;
        long l = strtol(p, &end, 10);
        if (end == p || *end != '.' || errno || l < 0 || (p[0] == '0' && end - p > 1)) return TL_OK;
        if (l >= m->n_layers)
            return tl_set_error(TL_ERR_FORMAT, "hf: %s: tensor '%s' is for layer %ld, but config.json has %lld layers",
                                h->dir, name, l, (long long)m->n_layers);
        const char *rest = end + 1;
        for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
            if (strcmp(rest, layer_names[i].hf) != 0) continue;
            const char *g = layer_names[i].gguf;
            if (!g) g = m->fam == FAM_GEMMA2 || m->fam == FAM_GEMMA3 ? "post_attention_norm.weight" : "ffn_norm.weight";
            snprintf(buf, cap, "blk.%ld.%s", l, g);
            *kind = layer_names[i].kind;
            *used = true;
            return TL_OK;
        }
        return TL_OK;
    } else {
        return TL_OK;
    }
    *used = true;
    return TL_OK;
}

/* Tensors the architecture cannot run without. */
static tl_status check_required(const hf_table *h, const model_info *m, const tl_weights *w) {
    static const char *const common[] = {"attn_norm.weight", "attn_output.weight", "ffn_down.weight", "ffn_up.weight",
                                         "ffn_norm.weight"};
    char name[96];
    if (!tl_weights_find_tensor(w, "token_embd.weight"))
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: tensor 'model.embed_tokens.weight' is missing", h->dir);
    if (!tl_weights_find_tensor(w, "output_norm.weight"))
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: tensor 'model.norm.weight' is missing", h->dir);
    if (!m->tied && !is_gemma(m->fam) && !tl_weights_find_tensor(w, "output.weight"))
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: tensor 'lm_head.weight' is missing (tie_word_embeddings is false)",
                            h->dir);
    for (int64_t l = 0; l < m->n_layers; l++) {
        const char *need[12];
        int n = 0;
        for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) need[n++] = common[i];
        if (m->fam == FAM_PHI3) {
            need[n++] = "attn_qkv.weight";
        } else {
            need[n++] = "attn_q.weight";
            need[n++] = "attn_k.weight";
            need[n++] = "attn_v.weight";
            need[n++] = "ffn_gate.weight";
        }
        if (m->fam == FAM_QWEN2) need[n++] = "attn_q.bias";
        if (m->fam == FAM_QWEN3 || m->fam == FAM_GEMMA3) need[n++] = "attn_q_norm.weight";
        if (m->fam == FAM_GEMMA2 || m->fam == FAM_GEMMA3) {
            need[n++] = "post_attention_norm.weight";
            need[n++] = "post_ffw_norm.weight";
        }
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, need[i]);
            if (!tl_weights_find_tensor(w, name))
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: layer %lld has no tensor for '%s'", h->dir, (long long)l,
                                    name);
        }
    }
    return TL_OK;
}

static tl_status rename_tensors(hf_table *h, const model_info *m, const tl_weights *st, const extra_tensors *extra) {
    tl_weights *w = h->w;
    tl_status s;
    for (int i = 0; i < st->n_maps; i++) {
        tl_mapping_retain(st->maps[i]);
        if ((s = tl_weights_add_mapping(w, st->maps[i]))) return s;
    }
    w->tensors = tl_arena_alloc_array(&w->arena, (size_t)st->n_tensors + 2, sizeof *w->tensors, _Alignof(tl_named_tensor));
    if (!w->tensors) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    const bool plus_one = is_gemma(m->fam);
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const tl_named_tensor *src = &st->tensors[i];
        char name[160];
        int kind;
        bool used;
        if ((s = gguf_name(h, m, src->name.ptr, name, sizeof name, &kind, &used))) return s;
        if (!used) continue;
        tl_named_tensor *t = &w->tensors[w->n_tensors];
        if ((s = tl_weights_strdup(w, name, strlen(name), &t->name))) return s;
        t->tensor = src->tensor;
        if (kind == NORM) {
            const tl_tensor *x = &src->tensor;
            int64_t n = tl_tensor_nelements(x);
            if (x->n_dims != 1 || n <= 0)
                return tl_set_error(TL_ERR_FORMAT, "hf: %s: norm tensor '%s' is not a vector", h->dir, src->name.ptr);
            if (x->dtype != TL_F32 && x->dtype != TL_F16 && x->dtype != TL_BF16)
                return tl_set_error(TL_ERR_UNSUPPORTED, "hf: %s: norm tensor '%s' has dtype %s (F32, F16 or BF16 expected)",
                                    h->dir, src->name.ptr, tl_dtype_name(x->dtype));
            float *v = tl_arena_alloc_array(&w->arena, (size_t)n, sizeof *v, 64);
            if (!v) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
            if ((s = tl_dequantize(x->dtype, x->data, v, n))) return s;
            if (plus_one)
                for (int64_t k = 0; k < n; k++) v[k] += 1.0f;
            t->tensor = (tl_tensor){.dtype = TL_F32, .n_dims = 1, .ne = {n, 1, 1, 1}, .nbytes = (size_t)n * sizeof(float),
                                    .data = v};
        }
        w->n_tensors++;
    }
    for (int i = 0; i < extra->n; i++) w->tensors[w->n_tensors++] = extra->t[i];
    return TL_OK;
}

/* ---------------------------------------------------------------- opening */

static tl_status open_safetensors(hf_table *h, tl_weights **st) {
    char path[1200];
    if (!hf_path(h, "model.safetensors.index.json", path, sizeof path))
        return tl_set_error(TL_ERR_INVALID, "hf: %s: path too long", h->dir);
    if (hf_file_exists(path)) return tl_safetensors_open_index(path, st);
    hf_path(h, "model.safetensors", path, sizeof path);
    if (hf_file_exists(path)) return tl_safetensors_open(path, st);
    return tl_set_error(TL_ERR_NOT_FOUND, "hf: %s: no model.safetensors or model.safetensors.index.json in the folder",
                        h->dir);
}

static tl_status build(hf_table *h, tl_weights **st) {
    model_info m = {0};
    extra_tensors extra = {0};
    tl_status s = read_config(h, &m, &extra);
    if (!s) s = open_safetensors(h, st);
    if (!s) s = rename_tensors(h, &m, *st, &extra);
    if (s) return s;
    /* the vocabulary is padded to the embedding's rows, as the converter pads to vocab_size */
    const tl_named_tensor *emb = NULL;
    for (int64_t i = 0; i < h->w->n_tensors && !emb; i++)
        if (tl_string_eq_cstr(h->w->tensors[i].name, "token_embd.weight")) emb = &h->w->tensors[i];
    int64_t rows = emb && emb->tensor.n_dims == 2 ? emb->tensor.ne[1] : m.vocab;
    if (emb && m.vocab > 0 && emb->tensor.n_dims == 2 && m.vocab != rows)
        return tl_set_error(TL_ERR_FORMAT, "hf: %s: 'vocab_size' is %lld but model.embed_tokens.weight has %lld rows",
                            h->config_path, (long long)m.vocab, (long long)rows);
    /* LlamaModel.set_gguf_parameters also writes the vocabulary size */
    if (m.fam == FAM_LLAMA && rows > 0 && (s = hf_put_u32(h, "llama.vocab_size", (uint32_t)rows))) return s;
    if ((s = tl_hf_tokenizer_keys(h, rows))) return s;

    tl_weights *w = h->w;
    w->kv = tl_arena_alloc_array(&w->arena, h->n_kv ? h->n_kv : 1, sizeof *w->kv, _Alignof(tl_kv));
    if (!w->kv) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    if (h->n_kv) memcpy(w->kv, h->kv, h->n_kv * sizeof *w->kv);
    w->n_kv = (int64_t)h->n_kv;
    if ((s = tl_weights_finish(w, h->dir))) return s;
    return check_required(h, &m, w);
}

tl_status tl_hf_open(const char *dir, tl_weights **out) {
    if (!out) return tl_set_error(TL_ERR_INVALID, "hf: out is NULL");
    *out = NULL;
    if (!dir) return tl_set_error(TL_ERR_INVALID, "hf: path is NULL");
    hf_table h = {.dir = dir};
    /* drop one trailing slash so messages read "dir/config.json" */
    char clean[1024];
    size_t len = strlen(dir);
    if (len >= sizeof clean) return tl_set_error(TL_ERR_INVALID, "hf: path too long");
    memcpy(clean, dir, len + 1);
    while (len > 1 && clean[len - 1] == '/') clean[--len] = '\0';
    h.dir = clean;
    char cfg[1200];
    hf_path(&h, "config.json", cfg, sizeof cfg);
    if (!hf_file_exists(cfg))
        return tl_set_error(TL_ERR_NOT_FOUND, "hf: %s: no config.json (not a Hugging Face model folder)", dir);
    h.w = tl_weights_new(TL_FORMAT_HF);
    if (!h.w) return tl_set_error(TL_ERR_NOMEM, "hf: out of memory");
    tl_weights *st = NULL;
    tl_status s = build(&h, &st);
    tl_weights_free(st);
    free(h.kv);
    tl_arena_free_all(&h.scratch);
    if (s) {
        tl_weights_free(h.w);
        return s;
    }
    *out = h.w;
    return TL_OK;
}
