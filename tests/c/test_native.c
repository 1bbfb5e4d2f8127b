/* The llama2.c and .tl readers and the streaming writers in C, under ASan/UBSan/LSan:
 * stories260K.bin with an outside tokenizer (tl_model_load_ex) and a .tl written from the
 * GGUF twin both print the known story; the streamed GGUF and .tl files are the one-shot
 * files byte for byte; a failing data source leaves no file. */
#define _POSIX_C_SOURCE 200809L
#include "torchless.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

typedef struct {
    char text[8192];
    size_t n;
} sink;

static bool collect(const tl_generated *step, void *user) {
    sink *s = user;
    if (s->n + step->text_len < sizeof s->text) {
        memcpy(s->text + s->n, step->text, step->text_len);
        s->n += step->text_len;
        s->text[s->n] = '\0';
    }
    return true;
}

static char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    if (size) *size = (size_t)n;
    return buf;
}

/* Greedy from BOS for 200 tokens: the text. */
static void story(tl_model *m, sink *out) {
    tl_context_params p = tl_context_default_params();
    p.max_seq_len = 256;
    p.n_threads = 2;
    tl_sampler_params sp = tl_sampler_default_params();
    sp.temperature = 0;
    tl_context *ctx = NULL;
    tl_sampler *sampler = NULL;
    tl_generation *g = NULL;
    int32_t bos = 1;
    tl_generate_params gp = {.max_new_tokens = 200};
    tl_status s = tl_context_new(m, &p, &ctx);
    if (!s) s = tl_sampler_new(&sp, 512, &sampler);
    if (!s) s = tl_generation_new(ctx, 0, &bos, 1, sampler, &gp, &g);
    if (!s) s = tl_generate_stream(g, collect, out);
    CHECK(s == TL_OK, "%s", tl_last_error());
    tl_generation_free(g);
    tl_sampler_free(sampler);
    tl_context_free(ctx);
}

typedef struct {
    const tl_weights *w;
    int64_t fail_at;
} source;

static tl_status from_table(void *user, int64_t i, size_t nbytes, const void **data) {
    const source *src = user;
    if (i == src->fail_at) return TL_ERR_IO; /* the caller's own failure */
    const tl_named_tensor *nt = tl_weights_tensor(src->w, i);
    if (nt->tensor.nbytes != nbytes) return TL_ERR_INVALID;
    *data = nt->tensor.data;
    return TL_OK;
}

int main(int argc, char **argv) {
    const char *fixtures = argc > 2 ? argv[2] : "../shared/fixtures";
    char bin[4096], twin[4096], tok[4096], expected_path[4096], tl_path[256], gguf_path[256], one[256];
    snprintf(bin, sizeof bin, "%s/stories260K/stories260K.bin", fixtures);
    snprintf(twin, sizeof twin, "%s/stories260K/stories260K.derived-f32.gguf", fixtures);
    snprintf(expected_path, sizeof expected_path, "%s/stories260K/stories260K.expected_stdout.txt", fixtures);
    char *expected = read_all(expected_path, NULL);
    CHECK(expected != NULL, "missing %s", expected_path);
    if (!expected) return check_summary();

    /* llama2.c checkpoint + either tokenizer */
    const char *toks[] = {"tok512.bin", "tok512.model"};
    for (int i = 0; i < 2; i++) {
        snprintf(tok, sizeof tok, "%s/stories260K/%s", fixtures, toks[i]);
        tl_model_load_params lp = tl_model_default_load_params();
        lp.tokenizer_path = tok;
        tl_model *m = NULL;
        CHECK(tl_model_load_ex(bin, &lp, &m) == TL_OK, "%s", tl_last_error());
        if (!m) continue;
        CHECK(tl_weights_format(tl_model_get_weights(m)) == TL_FORMAT_LLAMA2C);
        CHECK(tl_model_get_tokenizer(m) && tl_tokenizer_n_vocab(tl_model_get_tokenizer(m)) == 512);
        sink s = {0};
        story(m, &s);
        CHECK(strcmp(s.text, expected) == 0, "%s: %.80s", toks[i], s.text);
        tl_model_free(m);
    }
    tl_model *plain = NULL;
    CHECK(tl_model_load(bin, &plain) == TL_OK && tl_model_get_tokenizer(plain) == NULL);
    tl_model_free(plain);

    /* the GGUF twin written as .tl (streamed) runs the same story */
    tl_weights *w = NULL;
    CHECK(tl_weights_open(twin, &w) == TL_OK, "%s", tl_last_error());
    if (!w) return check_summary();
    int64_t n_kv = tl_weights_n_kv(w), n_t = tl_weights_n_tensors(w);
    tl_kv *kvs = malloc((size_t)n_kv * sizeof *kvs);
    tl_gguf_tensor_desc *ts = malloc((size_t)n_t * sizeof *ts);
    for (int64_t i = 0; i < n_kv; i++) kvs[i] = *tl_weights_kv(w, i);
    for (int64_t i = 0; i < n_t; i++) {
        const tl_named_tensor *nt = tl_weights_tensor(w, i);
        ts[i] = (tl_gguf_tensor_desc){nt->name.ptr, nt->tensor.dtype, nt->tensor.n_dims, {0}, nt->tensor.data};
        memcpy(ts[i].ne, nt->tensor.ne, sizeof ts[i].ne);
    }
    snprintf(tl_path, sizeof tl_path, "/tmp/torchless-test-native-%d.tl", (int)getpid());
    snprintf(one, sizeof one, "/tmp/torchless-test-native-%d-one.tl", (int)getpid());
    snprintf(gguf_path, sizeof gguf_path, "/tmp/torchless-test-native-%d.gguf", (int)getpid());
    source src = {w, -1};
    CHECK(tl_native_write_stream(tl_path, kvs, n_kv, ts, n_t, from_table, &src) == TL_OK, "%s", tl_last_error());
    CHECK(tl_native_write(one, kvs, n_kv, ts, n_t) == TL_OK, "%s", tl_last_error());
    size_t a_size = 0, b_size = 0;
    char *a = read_all(tl_path, &a_size), *b = read_all(one, &b_size);
    CHECK(a && b && a_size == b_size && memcmp(a, b, a_size) == 0, "streamed and one-shot .tl differ");
    free(a);
    free(b);
    tl_model *m = NULL;
    CHECK(tl_model_load(tl_path, &m) == TL_OK, "%s", tl_last_error());
    if (m) {
        CHECK(tl_weights_format(tl_model_get_weights(m)) == TL_FORMAT_NATIVE);
        sink s = {0};
        story(m, &s);
        CHECK(strcmp(s.text, expected) == 0, ".tl: %.80s", s.text);
        tl_model_free(m);
    }

    /* .tl -> GGUF (streamed) is the twin byte for byte */
    tl_weights *t = NULL;
    CHECK(tl_native_open(tl_path, &t) == TL_OK, "%s", tl_last_error());
    if (t) {
        source back = {t, -1};
        for (int64_t i = 0; i < n_kv; i++) kvs[i] = *tl_weights_kv(t, i);
        CHECK(tl_gguf_write_stream(gguf_path, tl_weights_version(w), kvs, n_kv, ts, n_t, from_table, &back) == TL_OK,
              "%s", tl_last_error());
        char *x = read_all(gguf_path, &a_size), *y = read_all(twin, &b_size);
        CHECK(x && y && a_size == b_size && memcmp(x, y, a_size) == 0, "GGUF -> .tl -> GGUF differs");
        free(x);
        free(y);
        for (int64_t i = 0; i < n_kv; i++) kvs[i] = *tl_weights_kv(w, i); /* t's values go with it */
        tl_weights_free(t);
    }

    /* a failing source stops the write and removes the file; bad descriptors create none */
    unlink(gguf_path);
    source failing = {w, 3};
    CHECK(tl_gguf_write_stream(gguf_path, 3, kvs, n_kv, ts, n_t, from_table, &failing) == TL_ERR_IO);
    CHECK(access(gguf_path, F_OK) != 0);
    CHECK(tl_native_write_stream(tl_path, kvs, n_kv, ts, n_t, from_table, &failing) == TL_ERR_IO);
    CHECK(access(tl_path, F_OK) != 0);
    ts[0].ne[0] = -1;
    CHECK(tl_native_write(tl_path, kvs, n_kv, ts, n_t) == TL_ERR_INVALID);
    CHECK(access(tl_path, F_OK) != 0);

    unlink(one);
    free(kvs);
    free(ts);
    tl_weights_free(w);
    free(expected);
    return check_summary();
}
