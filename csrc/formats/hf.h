/* Hugging Face model folders (config.json + safetensors + tokenizer.json), read into
 * the one tl_weights table with llama.cpp's GGUF keys and tensor names
 * (docs/architectures.md). hf.c reads the config and renames the tensors;
 * hf_tokenizer.c turns tokenizer.json (and its companions) into tokenizer.ggml.* keys. */
#ifndef TL_HF_H
#define TL_HF_H

#include "formats/json.h"
#include "formats/weights.h"

/* The table being built: metadata collected here, copied into w when done. */
typedef struct hf_table {
    tl_weights *w;
    tl_kv *kv; /* malloc'd while building */
    size_t n_kv, cap_kv;
    const char *dir;
    const tl_json *config; /* config.json (the text_config of a multimodal model) */
    char config_path[1100];
    tl_arena scratch; /* parsed JSON documents */
} hf_table;

/* Adds one key; the key text is copied into the table's arena. Values that point to
 * memory (strings, arrays) must already live in w->arena. */
tl_status hf_put(hf_table *h, const char *key, tl_value v);
tl_status hf_put_u32(hf_table *h, const char *key, uint32_t v);
tl_status hf_put_f32(hf_table *h, const char *key, double v);
tl_status hf_put_bool(hf_table *h, const char *key, bool v);
tl_status hf_put_str(hf_table *h, const char *key, const char *s, size_t len);
bool hf_has(const hf_table *h, const char *key);

/* "<dir>/<name>" into buf; false when it does not fit. */
bool hf_path(const hf_table *h, const char *name, char *buf, size_t cap);
bool hf_file_exists(const char *path);

/* The tokenizer.ggml.* keys from tokenizer.json / tokenizer.model / tokenizer_config.json /
 * chat_template.jinja / generation_config.json. n_vocab: rows of the embedding (the
 * vocabulary is padded to it, as llama.cpp's converter pads to config vocab_size). A
 * folder with no tokenizer files gets no tokenizer keys. */
tl_status tl_hf_tokenizer_keys(hf_table *h, int64_t n_vocab);

tl_status tl_hf_open(const char *dir, tl_weights **out);

#endif
