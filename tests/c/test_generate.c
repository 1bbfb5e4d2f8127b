/* The engine end to end in C, under ASan/UBSan/LSan: the stories260K fixture (real
 * trained weights) loads, greedy generation from BOS through tl_generate_stream prints the
 * known text, a stop string ends it early, cancelling stops it, and bad input is refused
 * with the context still usable afterwards. */
#include "torchless.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

typedef struct {
    char text[8192];
    size_t n;
    int steps, cancel_after;
    tl_context *ctx;
} sink;

static bool collect(const tl_generated *step, void *user) {
    sink *s = user;
    if (s->n + step->text_len < sizeof s->text) {
        memcpy(s->text + s->n, step->text, step->text_len);
        s->n += step->text_len;
        s->text[s->n] = '\0';
    }
    if (++s->steps == s->cancel_after) tl_context_cancel(s->ctx);
    return true;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static tl_status run(tl_context *ctx, int32_t bos, int max_new, const char *stop, sink *out) {
    tl_sampler_params sp = tl_sampler_default_params();
    sp.temperature = 0;
    tl_sampler *sampler = NULL;
    tl_generation *g = NULL;
    const char *stops[1] = {stop};
    tl_generate_params gp = {.max_new_tokens = max_new, .stop = stop ? stops : NULL, .n_stop = stop ? 1 : 0};
    tl_status s = tl_sampler_new(&sp, 512, &sampler);
    if (!s) s = tl_generation_new(ctx, 0, &bos, 1, sampler, &gp, &g);
    if (!s) s = tl_generate_stream(g, collect, out);
    tl_generation_free(g);
    tl_sampler_free(sampler);
    return s;
}

int main(int argc, char **argv) {
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    const char *fixtures = argc > 2 ? argv[2] : "../shared/fixtures";
    char path[4096], expected_path[4096];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.derived-f32.gguf", fixtures);
    snprintf(expected_path, sizeof expected_path, "%s/stories260K/stories260K.expected_stdout.txt", fixtures);
    const char *expected = read_file(expected_path);
    CHECK(expected != NULL, "missing %s", expected_path);
    tl_model *m = NULL;
    CHECK(tl_model_load(path, &m) == TL_OK, "%s", tl_last_error());
    if (!m || !expected) return check_summary();
    tl_context_params p = tl_context_default_params();
    p.max_seq_len = 256;
    p.n_threads = 2;
    tl_context *ctx = NULL;
    CHECK(tl_context_new(m, &p, &ctx) == TL_OK);
    const int32_t bos = tl_tokenizer_bos(tl_model_get_tokenizer(m));
    CHECK(bos == 1);

    /* greedy from BOS: the known story (its first 200 tokens need 201 positions) */
    sink s = {.ctx = ctx};
    CHECK(run(ctx, bos, 200, NULL, &s) == TL_OK, "%s", tl_last_error());
    CHECK(s.steps == 200 && strcmp(s.text, expected) == 0, "got %d steps: %.80s", s.steps, s.text);

    /* a stop string ends the text just before it */
    sink t = {.ctx = ctx};
    CHECK(run(ctx, bos, 200, "park", &t) == TL_OK);
    const char *cut = strstr(expected, "park");
    CHECK(cut && t.n == (size_t)(cut - expected) && strncmp(t.text, expected, t.n) == 0, "%s", t.text);

    /* cancelling between tokens */
    sink c = {.ctx = ctx, .cancel_after = 5};
    CHECK(run(ctx, bos, 200, NULL, &c) == TL_ERR_CANCELLED);
    CHECK(c.steps == 5);

    /* bad input is refused and the context still works */
    sink d = {.ctx = ctx};
    CHECK(run(ctx, bos, 300, NULL, &d) == TL_ERR_INVALID); /* 1 + 300 > 256 positions */
    CHECK(strstr(tl_last_error(), "exceeds the context") != NULL, "%s", tl_last_error());
    int32_t bad = 512, pos = 0, seq = 0;
    float logits[512];
    tl_batch b = {1, &bad, &pos, &seq, NULL};
    CHECK(tl_forward(ctx, &b, logits) == TL_ERR_INVALID);
    sink e = {.ctx = ctx};
    CHECK(run(ctx, bos, 50, NULL, &e) == TL_OK && strncmp(e.text, expected, e.n) == 0);

    tl_model *none = NULL;
    CHECK(tl_model_load("/nonexistent.gguf", &none) == TL_ERR_NOT_FOUND && none == NULL);
    tl_context_free(ctx);
    tl_model_free(m);
    return check_summary();
}
