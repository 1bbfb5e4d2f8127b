/* Hugging Face folders through tl_weights_open, under AddressSanitizer + LeakSanitizer:
 * a small llama folder (config.json, a hand-written model.safetensors, a byte-level
 * tokenizer.json) opens with GGUF keys and names and builds a tokenizer; then one
 * broken file at a time must fail with a message naming it, leaking nothing.
 *
 * Usage: test_hf DATA_DIR FIXTURES_DIR (unused: the folders are written to a temp dir). */
#define _GNU_SOURCE /* mkdtemp */
#include "torchless.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char dir[256];

static void write_file(const char *name, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_text(const char *name, const char *text) { write_file(name, text, strlen(text)); }

static void remove_file(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

/* One layer, dim 8, 2 heads, ffn 8, vocab 6, all F32 ones. */
static void write_model(void) {
    static const struct {
        const char *name;
        int rows, cols;
    } t[] = {
        {"model.embed_tokens.weight", 6, 8},
        {"model.norm.weight", 0, 8},
        {"lm_head.weight", 6, 8},
        {"model.layers.0.input_layernorm.weight", 0, 8},
        {"model.layers.0.post_attention_layernorm.weight", 0, 8},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8},
        {"model.layers.0.self_attn.k_proj.weight", 8, 8},
        {"model.layers.0.self_attn.v_proj.weight", 8, 8},
        {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.mlp.gate_proj.weight", 8, 8},
        {"model.layers.0.mlp.up_proj.weight", 8, 8},
        {"model.layers.0.mlp.down_proj.weight", 8, 8},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", 0, 2},
    };
    char header[4096];
    size_t n = 0, off = 0;
    n += (size_t)snprintf(header + n, sizeof header - n, "{");
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t count = (size_t)(t[i].rows ? t[i].rows : 1) * (size_t)t[i].cols;
        if (t[i].rows)
            n += (size_t)snprintf(header + n, sizeof header - n, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                  i ? "," : "", t[i].name, t[i].rows, t[i].cols, off, off + 4 * count);
        else
            n += (size_t)snprintf(header + n, sizeof header - n, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                                  i ? "," : "", t[i].name, t[i].cols, off, off + 4 * count);
        off += 4 * count;
    }
    n += (size_t)snprintf(header + n, sizeof header - n, "}");
    while (n % 8) header[n++] = ' ';
    size_t total = 8 + n + off;
    unsigned char *buf = calloc(1, total);
    uint64_t len = n;
    memcpy(buf, &len, 8);
    memcpy(buf + 8, header, n);
    float one = 1.0f;
    for (size_t i = 0; i < off / 4; i++) memcpy(buf + 8 + n + 4 * i, &one, 4);
    write_file("model.safetensors", buf, total);
    free(buf);
}

static const char *config =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
    "\"intermediate_size\":8,\"vocab_size\":6,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"max_position_embeddings\":64,"
    "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":16},\"tie_word_embeddings\":false}";

static const char *tokenizer =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":5,\"content\":\"<|end|>\",\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"\\u0120\":2,\"ab\":3,\"\\u0120ab\":4},"
    "\"merges\":[\"a b\",[\"\\u0120\",\"ab\"]]}}";

static void check_opens(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/", dir); /* a trailing slash is fine */
    tl_weights *w = NULL;
    tl_status s = tl_weights_open(path, &w);
    CHECK(s == TL_OK, "%s", tl_last_error());
    if (s) return;
    CHECK(tl_weights_format(w) == TL_FORMAT_HF);
    const tl_kv *kv = tl_weights_find_kv(w, "llama.block_count");
    CHECK(kv && kv->value.type == TL_VAL_UINT32 && kv->value.u64 == 1);
    kv = tl_weights_find_kv(w, "torchless.rope.neox");
    CHECK(kv && kv->value.type == TL_VAL_BOOL && kv->value.b);
    kv = tl_weights_find_kv(w, "tokenizer.ggml.merges");
    CHECK(kv && kv->value.arr.n == 2 && tl_weights_find_kv(w, "tokenizer.ggml.tokens")->value.arr.n == 6);
    CHECK(tl_weights_find_tensor(w, "blk.0.attn_q.weight") && tl_weights_find_tensor(w, "rope_freqs.weight"));
    CHECK(!tl_weights_find_tensor(w, "model.layers.0.self_attn.rotary_emb.inv_freq"));
    tl_tokenizer *t = NULL;
    s = tl_tokenizer_from_weights(w, &t);
    CHECK(s == TL_OK, "%s", tl_last_error());
    if (!s) {
        int32_t ids[8];
        size_t n = 0;
        s = tl_tokenize(t, "ab ab<|end|>", 12, false, true, ids, 8, &n);
        CHECK(s == TL_OK && n == 3 && ids[0] == 3 && ids[1] == 4 && ids[2] == 5, "n %zu", n);
        CHECK(tl_tokenizer_is_eog(t, 5));
        tl_tokenizer_free(t);
    }
    tl_weights_free(w);
    tl_model *m = NULL;
    s = tl_model_load(dir, &m);
    CHECK(s == TL_OK, "%s", tl_last_error());
    tl_model_free(m);
}

/* The folder must fail to open with a message holding phrase. */
static void check_fails(const char *what, const char *phrase) {
    tl_weights *w = (tl_weights *)1;
    tl_status s = tl_weights_open(dir, &w);
    CHECK(s != TL_OK && w == NULL, "%s: opened", what);
    if (s == TL_OK) {
        tl_weights_free(w);
        return;
    }
    CHECK(strstr(tl_last_error(), phrase) != NULL, "%s: message '%s' lacks '%s'", what, tl_last_error(), phrase);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/tl_test_hf_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    write_model();
    write_text("config.json", config);
    write_text("tokenizer.json", tokenizer);
    write_text("generation_config.json", "{\"eos_token_id\":[5,1]}");
    write_text("tokenizer_config.json", "{\"eos_token\":\"<|end|>\",\"chat_template\":\"{{ x }}\"}");
    check_opens();

    /* one broken file at a time, each restored afterwards */
    static const struct {
        const char *file, *text, *phrase;
    } broken[] = {
        {"config.json", "{\"architectures\":[\"LlamaForCausalLM\"]", "config.json: line 1"},
        {"config.json", "{\"architectures\":[\"GPTNeoXForCausalLM\"]}", "not supported (supported:"},
        {"config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8}", "'num_hidden_layers' is missing"},
        {"tokenizer.json", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "'Unigram' is not supported"},
        {"tokenizer.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}},\"decoder\":{\"type\":\"ByteLevel\"},"
                           "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", "id 0 is given to two vocab entries"},
        {"tokenizer.json", "[1,2", "tokenizer.json: line 1"},
        {"tokenizer_config.json", "{\"chat_template\":7}", "'chat_template' must be a string or a list"},
        {"generation_config.json", "{\"eos_token_id\":[99]}", "outside the vocabulary"},
        {"model.safetensors", "\x10\0\0\0\0\0\0\0{}", "header length"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        write_file(broken[i].file, broken[i].text, strlen(broken[i].text) + (broken[i].text[0] == '\x10' ? 10 : 0));
        check_fails(broken[i].file, broken[i].phrase);
        if (strcmp(broken[i].file, "config.json") == 0) write_text("config.json", config);
        else if (strcmp(broken[i].file, "tokenizer.json") == 0) write_text("tokenizer.json", tokenizer);
        else if (strcmp(broken[i].file, "model.safetensors") == 0) write_model();
        else remove_file(broken[i].file);
    }
    remove_file("model.safetensors");
    check_fails("no weights", "no model.safetensors");
    remove_file("config.json");
    check_fails("no config", "no config.json");
    remove_file("tokenizer.json");
    rmdir(dir);
    return check_summary();
}
