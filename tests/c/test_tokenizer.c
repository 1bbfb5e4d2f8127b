/* Tokenizer core under the sanitizers: SentencePiece encode/decode on the fixture
 * vocabularies (GGUF, .model, llama2.c tokenizer.bin), special tokens, the EOG set, and
 * corrupt .model / tokenizer.bin files failing with an error instead of a crash.
 * argv[1]: tests/data, argv[2]: the shared fixtures folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer/tokenizer.h"

static const char *fixtures;

static char *path_of(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", fixtures, rel);
    return buf;
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static tl_tokenizer *open_tok(const char *rel) {
    tl_tokenizer *t = NULL;
    tl_status s = tl_tokenizer_open(path_of(rel), &t);
    CHECK(s == TL_OK, "%s: %s", rel, tl_last_error());
    return t;
}

/* Encodes text and compares with want (n ids). */
static void check_encode(const tl_tokenizer *t, const char *text, bool bos, bool special, const int32_t *want, size_t n) {
    int32_t ids[256];
    size_t got = 0;
    tl_status s = tl_tokenize(t, text, strlen(text), bos, special, ids, 256, &got);
    CHECK(s == TL_OK, "%s", tl_last_error());
    bool same = got == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    CHECK(same, "encode '%s': got %zu ids, want %zu", text, got, n);
    if (!same)
        for (size_t i = 0; i < got && i < 256; i++) printf("  got[%zu] = %d\n", i, ids[i]);
}

static void check_roundtrip(const tl_tokenizer *t, const char *text) {
    int32_t ids[512];
    size_t n = 0;
    char out[2048];
    size_t m = 0;
    CHECK(tl_tokenize(t, text, strlen(text), true, false, ids, 512, &n) == TL_OK && n <= 512);
    CHECK(tl_detokenize(t, ids, n, false, out, sizeof out, &m) == TL_OK);
    CHECK(m == strlen(text) && memcmp(out, text, m) == 0, "round trip of '%s' gave '%.*s'", text, (int)m, out);
}

static void test_llama_spm_gguf_matches_hf_ids(void) {
    tl_tokenizer *t = open_tok("vocab/ggml-vocab-llama-spm.gguf");
    if (!t) return;
    CHECK(tl_tokenizer_get_kind(t) == TL_TOKENIZER_SPM);
    CHECK(tl_tokenizer_n_vocab(t) == 32000);
    CHECK(tl_tokenizer_bos(t) == 1 && tl_tokenizer_eos(t) == 2 && tl_tokenizer_add_bos_default(t));
    check_encode(t, "Hello world", false, false, (int32_t[]){15043, 3186}, 2);
    check_encode(t, " Hello", false, false, (int32_t[]){29871, 15043}, 2);
    check_encode(t, "", false, false, NULL, 0);
    check_encode(t, "", true, false, (int32_t[]){1}, 1);
    /* "<s>" is text unless special; after a special token the dummy prefix comes back */
    check_encode(t, "<s>", false, false, (int32_t[]){529, 29879, 29958}, 3);
    check_encode(t, "<s>Hello", false, true, (int32_t[]){1, 15043}, 2);
    check_encode(t, "a\tb", false, false, (int32_t[]){263, 12, 29890}, 3);
    CHECK(tl_tokenizer_is_eog(t, 2) && !tl_tokenizer_is_eog(t, 1) && !tl_tokenizer_is_eog(t, -1));
    check_roundtrip(t, "Hello world");
    check_roundtrip(t, "  two leading spaces, \xe6\x97\xa5\xe6\x9c\xac tabs\tand\nnewlines ");

    /* pieces: '▁' -> ' ', byte tokens -> the byte, BOS only when special */
    char buf[16];
    size_t n;
    CHECK(tl_token_to_piece(t, 15043, false, buf, sizeof buf, &n) == TL_OK && n == 6 && memcmp(buf, " Hello", 6) == 0);
    CHECK(tl_token_to_piece(t, 13, false, buf, sizeof buf, &n) == TL_OK && n == 1 && buf[0] == '\n');
    CHECK(tl_token_to_piece(t, 1, false, buf, sizeof buf, &n) == TL_OK && n == 0);
    CHECK(tl_token_to_piece(t, 1, true, buf, sizeof buf, &n) == TL_OK && n == 3 && memcmp(buf, "<s>", 3) == 0);
    CHECK(tl_token_to_piece(t, 32000, false, buf, sizeof buf, &n) == TL_ERR_INVALID);
    CHECK(strstr(tl_last_error(), "32000") != NULL, "%s", tl_last_error());
    /* a short buffer reports the size it needs */
    CHECK(tl_token_to_piece(t, 15043, false, buf, 2, &n) == TL_OK && n == 6);
    int32_t bad[2] = {15043, -5};
    CHECK(tl_detokenize(t, bad, 2, false, buf, sizeof buf, &n) == TL_ERR_INVALID);
    tl_tokenizer_free(t);
}

static void test_phi3_eog_and_user_defined(void) {
    tl_tokenizer *t = open_tok("vocab/ggml-vocab-phi-3.gguf");
    if (!t) return;
    CHECK(tl_tokenizer_eos(t) == 32000);
    CHECK(tl_tokenizer_is_eog(t, 32000) && tl_tokenizer_is_eog(t, 32007), "<|endoftext|> and <|end|> end generation");
    CHECK(!tl_tokenizer_is_eog(t, 32010));
    /* <|user|> is a control token: split out only with special */
    int32_t ids[64];
    size_t n;
    CHECK(tl_tokenize(t, "<|user|>", 8, false, true, ids, 64, &n) == TL_OK && n == 1 && ids[0] == 32010);
    CHECK(tl_tokenize(t, "<|user|>", 8, false, false, ids, 64, &n) == TL_OK && n > 1);
    tl_tokenizer_free(t);
}

/* tokenizer.ggml.model "gpt2" goes to byte-level BPE (bpe.c); the loader's part is the dispatch */
static void test_gpt2_gguf_dispatches_to_byte_level_bpe(void) {
    tl_tokenizer *t = open_tok("vocab/ggml-vocab-gpt-2.gguf");
    if (!t) return;
    CHECK(tl_tokenizer_get_kind(t) == TL_TOKENIZER_BPE && !tl_tokenizer_add_bos_default(t));
    check_encode(t, "Hello world", false, false, (int32_t[]){15496, 995}, 2);
    check_encode(t, "<|endoftext|>", false, true, (int32_t[]){50256}, 1);
    CHECK(tl_tokenizer_is_eog(t, 50256));
    check_roundtrip(t, " Hello\n\tworld \xc3\xa9");
    tl_tokenizer_free(t);
}

static void test_model_file_matches_gguf(void) {
    tl_tokenizer *a = open_tok("llama2-tokenizer/tokenizer.model");
    tl_tokenizer *b = open_tok("vocab/ggml-vocab-llama-spm.gguf");
    if (a && b) {
        const char *texts[] = {"Hello world", "  Hello", "I believe the meaning of life is", "3333333 \xc3\xa9t\xc3\xa9",
                               "\xf0\x9f\xa6\x99.cpp\n\n  x"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            int32_t x[128], y[128];
            size_t nx, ny;
            CHECK(tl_tokenize(a, texts[i], strlen(texts[i]), true, false, x, 128, &nx) == TL_OK);
            CHECK(tl_tokenize(b, texts[i], strlen(texts[i]), true, false, y, 128, &ny) == TL_OK);
            CHECK(nx == ny && memcmp(x, y, nx * sizeof *x) == 0, "'%s'", texts[i]);
        }
        check_encode(a, "I believe the meaning of life is", true, false,
                     (int32_t[]){1, 306, 4658, 278, 6593, 310, 2834, 338}, 8);
    }
    tl_tokenizer_free(a);
    tl_tokenizer_free(b);
}

static void test_llama2c_bin_matches_model(void) {
    tl_tokenizer *a = open_tok("stories260K/tok512.bin");
    tl_tokenizer *b = open_tok("stories260K/tok512.model");
    if (a && b) {
        CHECK(tl_tokenizer_n_vocab(a) == 512 && tl_tokenizer_n_vocab(b) == 512);
        const char *texts[] = {"Hello", "Once upon a time, there was a little girl.", "\xe6\x97\xa5\xe6\x9c\xac",
                               "<s>x</s>", "a\tb\n\nc"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            int32_t x[128], y[128];
            size_t nx, ny;
            CHECK(tl_tokenize(a, texts[i], strlen(texts[i]), true, false, x, 128, &nx) == TL_OK);
            CHECK(tl_tokenize(b, texts[i], strlen(texts[i]), true, false, y, 128, &ny) == TL_OK);
            CHECK(nx == ny && memcmp(x, y, nx * sizeof *x) == 0, "'%s'", texts[i]);
            check_roundtrip(a, texts[i]);
        }
        check_encode(b, "Hello", false, false, (int32_t[]){346, 306, 414}, 3);
        size_t len;
        const char *bos = tl_tokenizer_token_text(a, 1, &len);
        CHECK(len == 3 && memcmp(bos, "<s>", 3) == 0, "BOS text restored from \"\\n<s>\\n\"");
    }
    tl_tokenizer_free(a);
    tl_tokenizer_free(b);
}

static void expect_fail(tl_status s, tl_tokenizer *t, const char *what) {
    CHECK(s != TL_OK && t == NULL, "%s should fail", what);
    CHECK(s == TL_OK || tl_last_error()[0] != 0, "%s: no message", what);
}

static void test_corrupt_model_files_fail_cleanly(void) {
    size_t size;
    uint8_t *data = read_all(path_of("stories260K/tok512.model"), &size);
    CHECK(data != NULL);
    if (!data) return;
    tl_tokenizer *t = NULL;
    /* every truncation either fails with a message or (at a field boundary) loads */
    for (size_t cut = 0; cut < size; cut += 1 + cut / 8) {
        tl_status s = tl_spm_model_load(data, cut, "cut", &t);
        CHECK(s == TL_OK || (t == NULL && tl_last_error()[0]), "cut at %zu", cut);
        tl_tokenizer_free(t);
        t = NULL;
    }
    /* random byte flips (fixed seed so a failure replays) */
    unsigned seed = 12345;
    printf("corrupt .model flips: seed %u\n", seed);
    uint8_t *copy = malloc(size);
    for (int trial = 0; trial < 300; trial++) {
        memcpy(copy, data, size);
        for (int k = 0; k < 4; k++) {
            seed = seed * 1103515245u + 12345u;
            copy[(seed >> 8) % size] ^= (uint8_t)(1u << ((seed >> 4) & 7));
        }
        tl_status s = tl_spm_model_load(copy, size, "flip", &t);
        if (s == TL_OK) {
            int32_t ids[64];
            size_t n;
            CHECK(tl_tokenize(t, "Hello world", 11, true, true, ids, 64, &n) == TL_OK || tl_last_error()[0]);
        }
        tl_tokenizer_free(t);
        t = NULL;
    }
    free(copy);
    free(data);

    /* hand-made broken messages */
    static const uint8_t huge_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
    expect_fail(tl_spm_model_load(huge_len, sizeof huge_len, "huge", &t), t, "length past the end");
    static const uint8_t long_varint[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    expect_fail(tl_spm_model_load(long_varint, sizeof long_varint, "varint", &t), t, "11-byte varint");
    static const uint8_t group[] = {0x0b, 0x0c};
    expect_fail(tl_spm_model_load(group, sizeof group, "group", &t), t, "group wire type");
    static const uint8_t empty_piece[] = {0x0a, 0x00, 0x12, 0x02, 0x18, 0x02};
    expect_fail(tl_spm_model_load(empty_piece, sizeof empty_piece, "empty", &t), t, "empty piece");
    /* one piece "a", trainer_spec without model_type: UNIGRAM, unsupported */
    static const uint8_t unigram[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x20, 0x08};
    tl_status s = tl_spm_model_load(unigram, sizeof unigram, "unigram", &t);
    CHECK(s == TL_ERR_UNSUPPORTED && strstr(tl_last_error(), "UNIGRAM"), "%s", tl_last_error());
    static const uint8_t bpe_one[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0x02};
    s = tl_spm_model_load(bpe_one, sizeof bpe_one, "one", &t);
    CHECK(s == TL_OK, "%s", tl_last_error());
    if (t) {
        int32_t ids[8];
        size_t n;
        /* no byte tokens, unk (id 0) is "a" itself here: the unknown '▁' and 'b' map to unk */
        CHECK(tl_tokenize(t, "ab", 2, false, false, ids, 8, &n) == TL_OK);
    }
    tl_tokenizer_free(t);
    t = NULL;
}

static void test_corrupt_llama2c_files_fail_cleanly(void) {
    size_t size;
    uint8_t *data = read_all(path_of("stories260K/tok512.bin"), &size);
    CHECK(data != NULL);
    if (!data) return;
    tl_tokenizer *t = NULL;
    int ok = 0;
    for (size_t cut = 0; cut < size; cut++) {
        tl_status s = tl_llama2c_tokenizer_load(data, cut, "cut", &t);
        CHECK(s == TL_OK || (t == NULL && tl_last_error()[0]), "cut at %zu", cut);
        ok += s == TL_OK;
        tl_tokenizer_free(t);
        t = NULL;
    }
    CHECK(ok < 600, "only record boundaries load (%d did)", ok);
    uint8_t *copy = malloc(size);
    memcpy(copy, data, size);
    copy[8] = 0xff, copy[9] = 0xff, copy[10] = 0xff, copy[11] = 0x7f; /* first token's length */
    expect_fail(tl_llama2c_tokenizer_load(copy, size, "len", &t), t, "token length past the end");
    memcpy(copy, data, size);
    memset(copy, 0, 4);
    expect_fail(tl_llama2c_tokenizer_load(copy, size, "max", &t), t, "max_token_length 0");
    memcpy(copy, data, size);
    memcpy(copy + 4, (uint8_t[]){0x00, 0x00, 0xc0, 0x7f}, 4); /* NaN score */
    expect_fail(tl_llama2c_tokenizer_load(copy, size, "nan", &t), t, "NaN score");
    free(copy);
    free(data);
    /* a file that is neither: tl_tokenizer_open names it */
    tl_status s = tl_tokenizer_open(path_of("README.md"), &t);
    CHECK(s != TL_OK && t == NULL, "README.md is not a tokenizer");
    s = tl_tokenizer_open(path_of("no/such/file.model"), &t);
    CHECK(s == TL_ERR_NOT_FOUND, "%s", tl_last_error());
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TESTS_DATA_DIR FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures = argv[2];
    test_llama_spm_gguf_matches_hf_ids();
    test_phi3_eog_and_user_defined();
    test_gpt2_gguf_dispatches_to_byte_level_bpe();
    test_model_file_matches_gguf();
    test_llama2c_bin_matches_model();
    test_corrupt_model_files_fail_cleanly();
    test_corrupt_llama2c_files_fail_cleanly();
    return check_summary();
}
