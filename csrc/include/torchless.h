/* torchless public C API.
 *
 * Opaque handles, status codes, no globals visible to the caller. Every fallible
 * function returns tl_status (TL_OK == 0) and, on failure, leaves a message for
 * this thread in tl_last_error(). The library never prints and never exits.
 */
#ifndef TORCHLESS_H
#define TORCHLESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum tl_status {
    TL_OK = 0,
    TL_ERR_INVALID = 1,     /* bad argument from the caller */
    TL_ERR_IO = 2,          /* open/read/write/mmap failed (errno in the message) */
    TL_ERR_FORMAT = 3,      /* file content is corrupt or not what it claims */
    TL_ERR_NOMEM = 4,       /* allocation failed */
    TL_ERR_UNSUPPORTED = 5, /* well-formed but not supported (unknown dtype, version) */
    TL_ERR_NOT_FOUND = 6,   /* no such file, key or tensor */
    TL_ERR_CANCELLED = 7,   /* stopped by tl_context_cancel (Ctrl-C) */
    TL_ERR_DEVICE = 8,      /* a GPU runtime call or kernel failed (the runtime's message) */
} tl_status;

/* The message of the last failure on this thread ("" if none). */
const char *tl_last_error(void);
/* A short name for a status code ("format error", ...). */
const char *tl_status_name(tl_status s);

/* ---------------------------------------------------------------- dtypes */

/* Numbering is GGML's (ggml_type), so a GGUF tensor type is a tl_dtype as it is.
 * Ids 64+ are ours (safetensors-only element types). */
typedef enum tl_dtype {
    TL_F32 = 0,
    TL_F16 = 1,
    TL_Q4_0 = 2,
    TL_Q4_1 = 3,
    TL_Q5_0 = 6,
    TL_Q5_1 = 7,
    TL_Q8_0 = 8,
    TL_Q8_1 = 9,
    TL_Q2_K = 10,
    TL_Q3_K = 11,
    TL_Q4_K = 12,
    TL_Q5_K = 13,
    TL_Q6_K = 14,
    TL_Q8_K = 15,
    TL_I8 = 24,
    TL_I16 = 25,
    TL_I32 = 26,
    TL_I64 = 27,
    TL_F64 = 28,
    TL_BF16 = 30,
    TL_TQ1_0 = 34,
    TL_TQ2_0 = 35,
    TL_U8 = 64,
    TL_BOOL = 65,
    TL_DTYPE_COUNT = 66
} tl_dtype;

/* Properties of a dtype. Unknown or unsupported ids: NULL name / 0 sizes. */
const char *tl_dtype_name(tl_dtype t);                 /* "q4_k", "f32", ... */
bool tl_dtype_from_name(const char *name, tl_dtype *out);
bool tl_dtype_is_valid(int t);
int64_t tl_dtype_block_size(tl_dtype t);               /* elements per block (1 for plain types) */
size_t tl_dtype_type_size(tl_dtype t);                 /* bytes per block */
bool tl_dtype_is_quantized(tl_dtype t);
/* Bytes of one row of n elements; 0 when n is not a whole number of blocks. */
size_t tl_dtype_row_size(tl_dtype t, int64_t n);

/* Convert n elements (a whole number of blocks) between a dtype and float32.
 * TL_ERR_UNSUPPORTED where the dtype has no such conversion. */
tl_status tl_dequantize(tl_dtype t, const void *src, float *dst, int64_t n);
tl_status tl_quantize(tl_dtype t, const float *src, void *dst, int64_t n);

/* The instruction set the CPU kernels were chosen for ("scalar", "avx2", "avx512", "neon");
 * the environment variable TORCHLESS_CPU=scalar|avx2|avx512|neon asks for a level (one the
 * CPU lacks falls back to the best it has below it; scalar forces the portable kernels). */
const char *tl_cpu_isa(void);
/* True when matrix products against weights of this dtype quantize their input to 8 bits
 * and multiply in integers at this dispatch level (llama.cpp's vec_dot_type: Q8_0-style for
 * Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q8_K-style for Q4_K/Q5_K/Q6_K); logits then differ from float
 * activations by that rounding. */
bool tl_dtype_quantizes_activations(tl_dtype t);

/* ---------------------------------------------------------------- mapped files */

typedef struct tl_mapping tl_mapping; /* a read-only mmap of a whole file, reference counted */

tl_status tl_mapping_open(const char *path, tl_mapping **out);
void tl_mapping_retain(tl_mapping *m);
void tl_mapping_release(tl_mapping *m); /* unmaps when the last reference goes */
const uint8_t *tl_mapping_data(const tl_mapping *m);
size_t tl_mapping_size(const tl_mapping *m);
const char *tl_mapping_path(const tl_mapping *m);

/* ---------------------------------------------------------------- tensors */

#define TL_MAX_DIMS 4

/* A view of tensor data that lives elsewhere (a mapping, an arena, a device).
 * ne[] is GGML order: ne[0] is the fastest-moving dimension (columns). */
typedef struct tl_tensor {
    tl_dtype dtype;
    int n_dims;
    int64_t ne[TL_MAX_DIMS];
    size_t nbytes;
    const void *data;
    tl_mapping *owner; /* NULL when not backed by a mapping (not retained by the struct) */
    /* A copy of the rows the CPU backend made at load (tl_matmul_interleave), freed with the
     * weight: the interleaved decode layout, read by tl_matmul in place of data where it has
     * kernels for it; or, equal to data, the float rows themselves copied into huge pages.
     * NULL: none (the usual case). */
    const void *rows16;
} tl_tensor;

int64_t tl_tensor_nelements(const tl_tensor *t);
int64_t tl_tensor_nrows(const tl_tensor *t); /* product of ne[1..] */

/* ---------------------------------------------------------------- metadata values */

/* GGUF metadata value types, numbered as in the GGUF spec. */
typedef enum tl_value_type {
    TL_VAL_UINT8 = 0,
    TL_VAL_INT8 = 1,
    TL_VAL_UINT16 = 2,
    TL_VAL_INT16 = 3,
    TL_VAL_UINT32 = 4,
    TL_VAL_INT32 = 5,
    TL_VAL_FLOAT32 = 6,
    TL_VAL_BOOL = 7,
    TL_VAL_STRING = 8,
    TL_VAL_ARRAY = 9,
    TL_VAL_UINT64 = 10,
    TL_VAL_INT64 = 11,
    TL_VAL_FLOAT64 = 12,
    TL_VAL_TYPE_COUNT = 13
} tl_value_type;

typedef struct tl_string {
    const char *ptr; /* not NUL-terminated; may point into a mapping */
    uint64_t len;
} tl_string;

typedef struct tl_value tl_value;
struct tl_value {
    tl_value_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32 (exactly representable) / FLOAT64 */
        bool b;
        tl_string str;
        struct {
            tl_value_type elem_type;
            uint64_t n;
            /* elem_type numeric or BOOL: n packed little-endian elements of their GGUF
             * size, copied to aligned memory; STRING: n tl_string; ARRAY: n tl_value */
            const void *data;
        } arr;
    };
};

size_t tl_value_type_size(tl_value_type t); /* bytes of a scalar element; 0 for STRING/ARRAY */
const char *tl_value_type_name(tl_value_type t);

typedef struct tl_kv {
    tl_string key;
    tl_value value;
} tl_kv;

/* ---------------------------------------------------------------- weight files */

typedef enum tl_format {
    TL_FORMAT_GGUF = 1,
    TL_FORMAT_SAFETENSORS = 2,
    TL_FORMAT_HF = 3, /* a Hugging Face folder: config.json + safetensors (+ tokenizer.json) */
    TL_FORMAT_LLAMA2C = 4, /* karpathy/llama2.c checkpoint (legacy v0, "ak42" v1 or v2) */
    TL_FORMAT_NATIVE = 5,  /* torchless .tl (docs/format.md) */
} tl_format;

typedef struct tl_named_tensor {
    tl_string name;
    tl_tensor tensor;
} tl_named_tensor;

/* The one table every reader produces: metadata, named tensors and the mappings
 * the tensors point into. Read-only once built; safe to share between threads. */
typedef struct tl_weights tl_weights;

/* Opens a file by content (GGUF magic, .tl magic, llama2.c "ak42" magic or a legacy
 * llama2.c header whose implied size matches the file, else safetensors header), a
 * safetensors index (*.index.json) with all of its shards, or a Hugging Face folder (a
 * directory with config.json). Every table has llama.cpp's GGUF keys and tensor names
 * (docs/architectures.md). */
tl_status tl_weights_open(const char *path, tl_weights **out);
tl_status tl_hf_open(const char *dir, tl_weights **out);
tl_status tl_gguf_open(const char *path, tl_weights **out);
/* A llama2.c checkpoint (legacy v0, "ak42" v1 and v2) as GGUF llama keys and tensor
 * names: F32 views into the file (v2's int8 matrices dequantized once into the table);
 * no vocabulary: load a tokenizer from elsewhere, see tl_model_load_ex. */
tl_status tl_llama2c_open(const char *path, tl_weights **out);
/* The torchless native format (docs/format.md). */
tl_status tl_native_open(const char *path, tl_weights **out);
tl_status tl_safetensors_open(const char *path, tl_weights **out);
tl_status tl_safetensors_open_index(const char *index_path, tl_weights **out);
void tl_weights_free(tl_weights *w);

tl_format tl_weights_format(const tl_weights *w);
uint32_t tl_weights_version(const tl_weights *w);   /* GGUF, .tl or llama2.c version; 0 for safetensors */
uint64_t tl_weights_alignment(const tl_weights *w); /* GGUF general.alignment; 64 for .tl; 0 otherwise */
int64_t tl_weights_n_kv(const tl_weights *w);
const tl_kv *tl_weights_kv(const tl_weights *w, int64_t i);
const tl_kv *tl_weights_find_kv(const tl_weights *w, const char *key); /* NULL if absent */
int64_t tl_weights_n_tensors(const tl_weights *w);
const tl_named_tensor *tl_weights_tensor(const tl_weights *w, int64_t i);
const tl_named_tensor *tl_weights_find_tensor(const tl_weights *w, const char *name);
size_t tl_weights_file_size(const tl_weights *w); /* bytes of all mapped files together */
int tl_weights_n_mappings(const tl_weights *w);   /* one per file (shards of an index) */
tl_mapping *tl_weights_mapping(const tl_weights *w, int i); /* borrowed; retain to keep */

/* ---------------------------------------------------------------- GGUF writer */

typedef struct tl_gguf_tensor_desc {
    const char *name;
    tl_dtype dtype;
    int n_dims;
    int64_t ne[TL_MAX_DIMS]; /* GGML order */
    const void *data;        /* tl_dtype_row_size(dtype, ne[0]) * rows bytes */
} tl_gguf_tensor_desc;

/* Writes a GGUF v3 file in one go. Keys and tensor names must be unique; data is
 * aligned to general.alignment from kvs if present, else 32. Everything is checked
 * before the file is created; on a later failure the file is removed. */
tl_status tl_gguf_write(const char *path, uint32_t version, const tl_kv *kvs, int64_t n_kv,
                        const tl_gguf_tensor_desc *tensors, int64_t n_tensors);

/* A streaming writer's data source: called once per tensor, in order, with its byte
 * count (0 for an empty tensor, where *data may stay NULL); sets *data to that many bytes, which must stay valid until the next
 * call or the writer's return. A failure status (with tl_set_error's message) stops
 * the write and the file is removed. */
typedef tl_status (*tl_tensor_data_fn)(void *user, int64_t index, size_t nbytes, const void **data);

/* The same file as tl_gguf_write, with the descriptors' data ignored: each tensor's
 * bytes come from data(user, i, ...) as the payload is written, so a converter holds
 * one tensor at a time. */
tl_status tl_gguf_write_stream(const char *path, uint32_t version, const tl_kv *kvs, int64_t n_kv,
                               const tl_gguf_tensor_desc *tensors, int64_t n_tensors, tl_tensor_data_fn data,
                               void *user);

/* The torchless native format (.tl, docs/format.md): the same arguments and guarantees
 * as the GGUF writers; any tl_dtype; metadata keys and tensor names must be UTF-8. */
tl_status tl_native_write(const char *path, const tl_kv *kvs, int64_t n_kv, const tl_gguf_tensor_desc *tensors,
                          int64_t n_tensors);
tl_status tl_native_write_stream(const char *path, const tl_kv *kvs, int64_t n_kv, const tl_gguf_tensor_desc *tensors,
                                 int64_t n_tensors, tl_tensor_data_fn data, void *user);


/* ---------------------------------------------------------------- tokenizers */

typedef struct tl_tokenizer tl_tokenizer;

typedef enum tl_tokenizer_kind {
    TL_TOKENIZER_SPM = 1, /* SentencePiece BPE: scores, '▁', byte fallback <0xNN> (GGUF "llama") */
    TL_TOKENIZER_BPE = 2, /* byte-level BPE: GPT-2 byte map, merge ranks, pre-tokenizer (GGUF "gpt2") */
} tl_tokenizer_kind;

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
typedef enum tl_token_type {
    TL_TOKEN_NORMAL = 1,
    TL_TOKEN_UNKNOWN = 2,
    TL_TOKEN_CONTROL = 3,
    TL_TOKEN_USER_DEFINED = 4,
    TL_TOKEN_UNUSED = 5,
    TL_TOKEN_BYTE = 6,
} tl_token_type;

/* From the tokenizer.ggml.* metadata of an opened file. The tokenizer copies what it needs. */
tl_status tl_tokenizer_from_weights(const tl_weights *w, tl_tokenizer **out);
/* By content: GGUF (a whole model or vocab-only), SentencePiece .model, llama2.c tokenizer.bin. */
tl_status tl_tokenizer_open(const char *path, tl_tokenizer **out);
void tl_tokenizer_free(tl_tokenizer *t);

tl_tokenizer_kind tl_tokenizer_get_kind(const tl_tokenizer *t);
int32_t tl_tokenizer_n_vocab(const tl_tokenizer *t);
int32_t tl_tokenizer_bos(const tl_tokenizer *t); /* -1 when the vocabulary has none */
int32_t tl_tokenizer_eos(const tl_tokenizer *t);
bool tl_tokenizer_add_bos_default(const tl_tokenizer *t); /* CONVENTIONS.md: BOS/EOS */
/* True for every id that ends generation: EOS, EOT, end-of-turn tokens (CONVENTIONS.md). */
bool tl_tokenizer_is_eog(const tl_tokenizer *t, int32_t id);
/* The vocabulary entry as stored (e.g. "▁the", "Ġthe", "<0x0A>"); NULL for a bad id. */
const char *tl_tokenizer_token_text(const tl_tokenizer *t, int32_t id, size_t *len);
float tl_tokenizer_token_score(const tl_tokenizer *t, int32_t id);
tl_token_type tl_tokenizer_token_type(const tl_tokenizer *t, int32_t id);

/* Text -> ids. Writes at most cap ids and sets *n_out to the number the text needs
 * (call again with a larger buffer when *n_out > cap). special: control/user-defined
 * token strings in the text become those tokens; otherwise they are plain text. */
tl_status tl_tokenize(const tl_tokenizer *t, const char *text, size_t len, bool add_bos, bool special,
                      int32_t *ids, size_t cap, size_t *n_out);
/* The bytes one token contributes to output ('▁' -> ' ', <0xNN> -> the byte, byte-level
 * BPE decoded). Control tokens give "" unless special. May be part of a UTF-8 character.
 * Writes at most cap bytes, *n_out = bytes needed. */
tl_status tl_token_to_piece(const tl_tokenizer *t, int32_t id, bool special, char *buf, size_t cap, size_t *n_out);
/* ids -> text, as the oracle tokenizers decode (the SPM dummy-prefix space removed).
 * Same buffer convention. */
tl_status tl_detokenize(const tl_tokenizer *t, const int32_t *ids, size_t n, bool special, char *buf, size_t cap,
                        size_t *n_out);

/* ---------------------------------------------------------------- sampling */

typedef struct tl_sampler_params {
    float temperature;      /* <= 0: greedy */
    int32_t top_k;          /* 0: off */
    float top_p;            /* 1: off; (0, 1] */
    float min_p;            /* 0: off; [0, 1) */
    float repeat_penalty;   /* 1: off (llama.cpp's rule: logit / p if > 0 else logit * p) */
    float presence_penalty; /* 0: off */
    float frequency_penalty;/* 0: off */
    int32_t penalty_last_n; /* window of recent tokens the penalties look at; -1: whole context */
    uint64_t seed;
    int32_t n_logit_bias;
    const int32_t *logit_bias_ids; /* logit[id] += bias, before everything else */
    const float *logit_bias;
} tl_sampler_params;

/* The defaults (llama.cpp's): temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1, presence/frequency 0, penalty_last_n 64, seed 0. */
tl_sampler_params tl_sampler_default_params(void);

typedef struct tl_sampler tl_sampler;
/* Checks every parameter (TL_ERR_INVALID naming the field and its range). */
tl_status tl_sampler_new(const tl_sampler_params *p, int32_t n_vocab, tl_sampler **out);
void tl_sampler_free(tl_sampler *s);
void tl_sampler_reset(tl_sampler *s, uint64_t seed); /* forget history, reseed */
/* Tell the sampler about a token (prompt or generated) for the penalties. */
void tl_sampler_accept(tl_sampler *s, int32_t token);

typedef struct tl_token_logprob {
    int32_t token;
    float logprob; /* log softmax of the raw logits (before bias, penalties, temperature) */
} tl_token_logprob;

/* Picks the next token from n_vocab raw logits (not modified). *logprob (may be NULL) is
 * the chosen token's raw log-probability; top (may be NULL) receives the n_top most
 * likely tokens of the raw distribution, best first. Does not call accept. */
tl_status tl_sampler_sample(tl_sampler *s, const float *logits, int32_t *token, float *logprob,
                            tl_token_logprob *top, int32_t n_top);

/* ---------------------------------------------------------------- models and contexts */

typedef enum tl_rope_style {
    TL_ROPE_NORM = 0, /* adjacent pairs (x0, x1), (x2, x3) ... (llama.cpp rope type NORM) */
    TL_ROPE_NEOX = 2, /* halves (x_i, x_{i + d/2}) (rotate-half) */
} tl_rope_style;

typedef enum tl_rope_scaling {
    TL_ROPE_SCALING_NONE = 0,
    TL_ROPE_SCALING_LINEAR = 1, /* positions divided by factor */
    TL_ROPE_SCALING_LLAMA3 = 2, /* LLaMA-3 inverse-frequency scaling */
} tl_rope_scaling;

/* The gate's activation in the gated feed-forward block w_down(act(w_gate x) * w_up x). */
typedef enum tl_activation {
    TL_ACT_SILU = 0,      /* SwiGLU (llama, qwen, phi3) */
    TL_ACT_GELU_TANH = 1, /* GeGLU with the tanh approximation of GELU (gemma) */
} tl_activation;

/* Hyper-parameters (the C twin of ModelArgs) and architecture traits. */
typedef struct tl_model_config {
    char arch[32];          /* "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3" */
    int32_t n_vocab;
    int32_t dim;            /* embedding length */
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;       /* key/value length per head */
    int32_t hidden_dim;     /* feed-forward length */
    int32_t max_seq_len;    /* trained context length */
    float norm_eps;
    float rope_theta;
    tl_rope_style rope_style;
    tl_rope_scaling rope_scaling;
    float rope_factor;            /* linear / llama3 factor */
    float rope_low_freq_factor;   /* llama3 */
    float rope_high_freq_factor;  /* llama3 */
    int32_t rope_orig_ctx;        /* llama3, phi3 LongRoPE: original (pre-extension) context length */
    int32_t rope_dim;             /* dimensions rotated per head (= head_dim unless the file says) */
    bool qkv_bias;                /* qwen2 */
    bool qk_norm;                 /* qwen3: RMSNorm per head on q and k */
    bool tied_embeddings;         /* output head = token embedding */
    /* architecture traits (docs/architectures.md) */
    tl_activation activation;     /* of the feed-forward gate */
    float embed_scale;            /* token embeddings are multiplied by this (gemma: sqrt(dim)), else 1 */
    float attn_scale;             /* factor on q.k (1/sqrt(head_dim) unless the file or the arch says) */
    float attn_softcap;           /* c: scores become c*tanh(s/c) (gemma2); 0 = none */
    float final_softcap;          /* c: logits become c*tanh(z/c) (gemma2); 0 = none */
    bool post_norms;              /* gemma2/3: RMSNorm on the attention and FFN outputs before each residual add */
    bool fused_qkv;               /* attn_qkv.weight holds the q, k, v rows (phi3), viewed as three weights */
    bool fused_gate_up;           /* ffn_up.weight holds the gate rows then the up rows (phi3) */
    int32_t sliding_window;       /* W: a windowed layer's query at p sees keys t with p - W < t <= p; 0 = none */
    int32_t n_windowed_layers;    /* how many layers use the window (which ones: the model's per-layer traits) */
    float rope_theta_swa;         /* RoPE base of the windowed layers (gemma3: 10000) */
    bool rope_swa_unscaled;       /* windowed layers ignore rope scaling (gemma3: scaling is for global layers) */
    float rope_attn_factor;       /* cos and sin are multiplied by this (phi3 LongRoPE magnitude), else 1 */
    bool rope_longrope;           /* rope_factors_long/short.weight present: long when the context exceeds rope_orig_ctx */
} tl_model_config;

typedef struct tl_model tl_model; /* read-only once loaded; shared by any number of contexts */

/* Loads a model (GGUF, .tl, llama2.c checkpoint; weights used where they lie in the
 * mapping) with the tokenizer its file holds, if any. Unknown architectures fail with
 * a message listing the supported ones. */
tl_status tl_model_load(const char *path, tl_model **out);
/* The architectures (general.architecture values) tl_model_load runs: a NULL-terminated list. */
const char *const *tl_supported_architectures(void);

typedef struct tl_model_load_params {
    /* NULL: the model file's own tokenizer (none for a llama2.c checkpoint). Else a file
     * tl_tokenizer_open reads (SentencePiece .model, llama2.c tokenizer.bin, GGUF, .tl),
     * used instead of the model file's. */
    const char *tokenizer_path;
    /* Where weights, activations and KV caches live: "cpu", "cuda[:N]", "hip[:N]",
     * "opencl[:N]", or "auto"/NULL (the first GPU found, else the CPU). Weights go to the
     * device once, at load; a model larger than the device's free memory fails saying how
     * much it needs. */
    const char *device;
    /* Threads for the work at load: the CPU's copies of the weights into the layouts its
     * kernels read best (as many as the contexts' n_threads is what a caller wants); 0: the
     * physical cores. */
    int32_t n_threads;
} tl_model_load_params;

tl_model_load_params tl_model_default_load_params(void);
/* tl_model_load with options; p may be NULL (= the defaults). */
tl_status tl_model_load_ex(const char *path, const tl_model_load_params *p, tl_model **out);
/* Reference counted: every holder (e.g. several language-level objects sharing one mapping,
 * each with its own context) retains it; tl_model_free drops one reference. */
void tl_model_retain(tl_model *m);
void tl_model_free(tl_model *m);
const tl_model_config *tl_model_get_config(const tl_model *m);
const tl_tokenizer *tl_model_get_tokenizer(const tl_model *m); /* NULL: the file has no tokenizer */
const tl_weights *tl_model_get_weights(const tl_model *m);
/* The device the model runs on: its backend ("cpu", "cuda", ...), index and name. */
const char *tl_model_backend(const tl_model *m);
int tl_model_device_index(const tl_model *m);
const char *tl_model_device_name(const tl_model *m);

/* One device of a backend compiled into this build. */
typedef struct tl_device_info {
    char backend[16];  /* "cuda", "hip", "opencl", "cpu" */
    int index;         /* the N of "cuda:N" */
    char name[128];    /* "NVIDIA H100 80GB HBM3", "CPU (avx512)" */
    size_t free_bytes, total_bytes; /* device memory (0 for the CPU) */
    bool auto_ok;      /* device "auto" may pick it (not an OpenCL CPU device such as PoCL's) */
} tl_device_info;
/* The devices found, GPUs first in tl_device_open's "auto" order, the CPU last; writes at
 * most cap and returns how many there are. A backend whose runtime finds no device (no
 * driver, no card) contributes none. */
int tl_devices(tl_device_info *out, int cap);
/* The backends compiled into this build ("cpu" always), NULL-terminated. */
const char *const *tl_backends_built(void);

typedef struct tl_context_params {
    int32_t max_seq_len;    /* 0: the model's, capped at 4096 */
    int32_t max_batch_size; /* sequences with their own KV cache; 0: 1 */
    int32_t n_threads;      /* 0: physical cores */
    tl_dtype kv_dtype;      /* TL_F16 (default), TL_F32, or TL_Q8_0 (the CPU backend; head_dim a
                               multiple of 32: keys and values in blocks of 32 with an fp16 scale,
                               1.06 bytes an element) */
} tl_context_params;

tl_context_params tl_context_default_params(void);

typedef struct tl_context tl_context; /* KV cache, scratch, thread pool; one thread at a time */

tl_status tl_context_new(const tl_model *m, const tl_context_params *p, tl_context **out);
void tl_context_free(tl_context *c);
int32_t tl_context_max_seq_len(const tl_context *c);
int32_t tl_context_max_batch_size(const tl_context *c);
/* Forget the cached positions of sequence seq (-1: all sequences). */
void tl_context_clear(tl_context *c, int32_t seq);
/* Positions of sequence seq already in the cache (the next position to feed). */
int32_t tl_context_seq_len(const tl_context *c, int32_t seq);
/* Safe from any thread or a signal handler: the running forward stops between layers,
 * a generation loop between tokens, with TL_ERR_CANCELLED; the flag is cleared when
 * that error is returned. */
void tl_context_cancel(tl_context *c);

/* One forward step over n tokens, each with its position and sequence. Prefill =
 * many positions of one sequence, decode = one position of many sequences; both mix.
 * Positions of a sequence must continue its cache (pos == seq_len, seq_len+1, ...).
 * logits: where want_logits[i] is nonzero (NULL: only the last token), rows of n_vocab
 * floats are written to out in token order. */
typedef struct tl_batch {
    int32_t n_tokens;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const int8_t *want_logits;
} tl_batch;

tl_status tl_forward(tl_context *c, const tl_batch *b, float *logits_out);

/* Called between layers; returning true cancels the forward (TL_ERR_CANCELLED). */
void tl_context_set_abort_callback(tl_context *c, bool (*should_abort)(void *user), void *user);

/* ---------------------------------------------------------------- generation */

typedef enum tl_finish_reason {
    TL_FINISH_NONE = 0,   /* still generating */
    TL_FINISH_STOP = 1,   /* an end-of-generation token or a stop string */
    TL_FINISH_LENGTH = 2, /* max_new_tokens reached */
} tl_finish_reason;

typedef struct tl_generate_params {
    int32_t max_new_tokens;
    const char *const *stop; /* stop strings, removed from the output (also when split across tokens) */
    int32_t n_stop;
    bool ignore_eog;         /* keep going through end-of-generation tokens */
    bool special;            /* render control tokens in the text */
} tl_generate_params;

/* One generated step: the token and the text it released. Text is held back while it
 * could still be the start of a stop string or is half a UTF-8 character, and
 * released with a later step; the final step releases the rest. */
typedef struct tl_generated {
    int32_t token;   /* -1 for a step that only flushes text */
    float logprob;   /* raw log-probability of token */
    const char *text; /* valid until the next call */
    size_t text_len;
    tl_finish_reason finish;
} tl_generated;

typedef struct tl_generation tl_generation;

/* Prepares generation on sequence seq of the context (its cache is cleared and the
 * prompt becomes positions 0..n_prompt-1). The sampler is borrowed. Fails with
 * TL_ERR_INVALID when n_prompt + max_new_tokens exceeds the context (no silent
 * truncation at this level). */
tl_status tl_generation_new(tl_context *c, int32_t seq, const int32_t *prompt, size_t n_prompt, tl_sampler *sampler,
                            const tl_generate_params *p, tl_generation **out);
/* The next step (the first call runs the prompt). After a step with finish set, returns
 * TL_ERR_INVALID. */
tl_status tl_generation_next(tl_generation *g, tl_generated *out);
void tl_generation_free(tl_generation *g);

/* The whole loop: calls on_step for every step until generation finishes, on_step
 * returns false, or tl_context_cancel is called (polled between tokens and, inside the
 * prompt, between layers: TL_ERR_CANCELLED). */
tl_status tl_generate_stream(tl_generation *g, bool (*on_step)(const tl_generated *step, void *user), void *user);

#ifdef __cplusplus
}
#endif
#endif /* TORCHLESS_H */
