/* Model internals: the config, the per-layer weight views, the context. */
#ifndef TL_MODEL_H
#define TL_MODEL_H

#include <stdatomic.h>

#include "backends/backend.h"
#include "core/arena.h"
#include "core/pool.h"
#include "core/status.h"
#include "torchless.h"

/* Matrices are used where they lie (any dtype); vectors (norms, biases) are small and
 * converted to float32 once at load. */
typedef struct tl_layer_weights {
    const float *attn_norm;
    const tl_tensor *wq, *wk, *wv, *wo;
    const float *bq, *bk, *bv;        /* qwen2; NULL otherwise */
    const float *q_norm, *k_norm;     /* qwen3 per-head RMSNorm; NULL otherwise */
    const float *ffn_norm;
    const tl_tensor *w_gate, *w_up, *w_down;
    const float *post_attn_norm, *post_ffw_norm; /* gemma2/3: on the block outputs; NULL otherwise */
    bool windowed;                    /* sliding-window attention, with the windowed layers' RoPE table */
} tl_layer_weights;

struct tl_model {
    tl_model_config config;
    tl_weights *weights;
    tl_tokenizer *tokenizer;
    const tl_tensor *tok_embd;
    const float *output_norm;
    const tl_tensor *output;     /* = tok_embd when tied */
    const float *rope_freqs;     /* rope_dim / 2 frequency divisors (llama.cpp's LLaMA-3 scaling), or NULL */
    const float *rope_long, *rope_short; /* phi3 LongRoPE divisors (rope_dim / 2 each), or NULL */
    tl_layer_weights *layers;
    tl_arena arena;              /* layers and the float32 vectors */
    /* The same weights on the model's device (for the CPU: the pointers above). */
    tl_device *device;
    const tl_tensor *d_tok_embd, *d_output;
    const float *d_output_norm;
    tl_layer_weights *d_layers;
    tl_tensor **placed;          /* what weight_upload made, for weight_free */
    const tl_tensor **placed_src; /* and from which host tensor (tied embeddings: one copy) */
    int n_placed, cap_placed;
    atomic_int refs;             /* contexts may outlive the caller's handle: freed at 0 */
};

/* Reads config + traits from GGUF metadata and checks them. */
tl_status tl_model_config_from_weights(const tl_weights *w, tl_model_config *c);
/* Whether layer `layer` uses the sliding window (the config's window and the file's pattern). */
bool tl_model_layer_windowed(const tl_weights *w, const tl_model_config *c, int layer);

struct tl_context {
    const tl_model *model;
    int32_t max_seq_len, max_batch_size;
    tl_dtype kv_dtype;
    tl_stream *stream;       /* where the ops run (the model's device) */
    void *k_cache, *v_cache; /* device memory: [layer][seq][kv head][pos][head_dim] */
    int32_t *seq_len;        /* per sequence */
    int32_t *new_len;        /* per sequence: tl_forward's scratch for the lengths a batch leaves */
    float *inv_freq;         /* rope_dim / 2 inverse frequencies */
    float *inv_freq_swa;     /* those of the windowed layers (= inv_freq when they are the same) */
    volatile int cancel;     /* set by tl_context_cancel */
    bool (*should_abort)(void *user);
    void *abort_user;
    /* activations on the device, grown to the largest batch seen */
    int32_t cap_tokens;
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *rope_cs; /* rope_cs: room for two tables */
    int32_t *d_tokens;       /* GPU: the batch's ids, positions, sequences and rows wanted */
    float *d_logits;         /* GPU: logits before download */
    /* host staging of what is uploaded per batch */
    float *h_cs;             /* the RoPE tables */
    int32_t *h_rows, *h_ids; /* the rows wanted; the ids packed for one upload */
    /* decode shapes seen (key + 1), to record a shape's graph the second time it comes */
#define TL_SEEN_SHAPES 32
    uint64_t seen_shapes[TL_SEEN_SHAPES];
    int seen_next;
};

/* Frees the activation buffers (forward.c grows them to the largest batch seen). */
void tl_context_release_buffers(tl_context *x);

/* tl_forward with the logits left on the device: the backend's top_k op (NULL on some: an
 * error) makes each row asked for into the candidates, stats and logits of a. */
tl_status tl_forward_top_k(tl_context *x, const tl_batch *b, const tl_top_k_args *a);

#endif
