/* libFuzzer target: the Hugging Face folder reader (csrc/formats/hf.c, hf_tokenizer.c).
 *
 * A folder with a fixed one-layer llama model.safetensors is made once; each input
 * is split at its first NUL into config.json and tokenizer.json (no NUL: config.json
 * only), both written into the folder, which is then opened, walked, and turned into
 * a tokenizer that encodes a short text. The files live in /dev/shm when it exists. */
#define _GNU_SOURCE /* memfd_create, mkdtemp */
#include "fuzz_walk.h"

#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[128];

static void put(const char *name, const void *p, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static void remove_folder(void) {
    static const char *files[] = {"model.safetensors", "config.json", "tokenizer.json"};
    char path[256];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void make_folder(void) {
    (void)fuzz_open_and_walk; /* fuzz_walk.h's file-at-a-time helper: this target opens a folder */
    struct stat st;
    snprintf(dir, sizeof dir, "%s/tl_fuzz_hf_XXXXXX", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) abort();
    /* dim 4, 1 layer, ffn 4, vocab 4: every tensor F32 ones */
    static const char *names[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                                  "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                                  "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                  "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                                  "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
                                  "model.layers.0.mlp.down_proj.weight"};
    char header[4096];
    size_t n = 1, off = 0;
    header[0] = '{';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bool vec = strstr(names[i], "norm") != NULL;
        size_t bytes = vec ? 16 : 64;
        n += (size_t)snprintf(header + n, sizeof header - n, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                              i ? "," : "", names[i], vec ? "[4]" : "[4,4]", off, off + bytes);
        off += bytes;
    }
    header[n++] = '}';
    uint8_t *file = calloc(1, 8 + n + off);
    uint64_t len = n;
    memcpy(file, &len, 8);
    memcpy(file + 8, header, n);
    for (size_t i = 0; i < off / 4; i++) memcpy(file + 8 + n + 4 * i, &(float){1.0f}, 4);
    put("model.safetensors", file, 8 + n + off);
    free(file);
    atexit(remove_folder);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) make_folder();
    const uint8_t *nul = memchr(data, 0, size);
    size_t n_config = nul ? (size_t)(nul - data) : size;
    put("config.json", data, n_config);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (nul) put("tokenizer.json", nul + 1, size - n_config - 1);
    else unlink(path);
    tl_weights *w = NULL;
    tl_status s = tl_weights_open(dir, &w);
    if (s != TL_OK) {
        if (w != NULL || tl_last_error()[0] == '\0') __builtin_trap();
        return 0;
    }
    fuzz_walk_weights(w);
    tl_tokenizer *t = NULL;
    if (tl_weights_find_kv(w, "tokenizer.ggml.model") && tl_tokenizer_from_weights(w, &t) == TL_OK) {
        int32_t ids[64];
        size_t n = 0;
        tl_tokenize(t, "Hello world <s> \xe2\x96\x81x", 18, true, true, ids, 64, &n);
        tl_tokenizer_free(t);
    }
    tl_weights_free(w);
    return 0;
}
