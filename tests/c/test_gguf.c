/* C unit tests of the core and the GGUF reader/writer: a file written with
 * tl_gguf_write reads back identically (every value type, arrays of arrays,
 * tensors of several dtypes, custom alignment), views outlive the table, and the
 * dtype table's geometry is GGML's. Run under ASan/UBSan by `make test`. */
#define _POSIX_C_SOURCE 200809L
#include "torchless.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static tl_string S(const char *s) { return (tl_string){s, strlen(s)}; }

static void test_dtype_table(void) {
    /* GGML's geometry: (type, block size, bytes per block) */
    static const struct { tl_dtype t; int64_t bs; size_t ts; const char *name; } rows[] = {
        {TL_F32, 1, 4, "f32"}, {TL_F16, 1, 2, "f16"}, {TL_BF16, 1, 2, "bf16"}, {TL_Q4_0, 32, 18, "q4_0"},
        {TL_Q4_1, 32, 20, "q4_1"}, {TL_Q5_0, 32, 22, "q5_0"}, {TL_Q5_1, 32, 24, "q5_1"}, {TL_Q8_0, 32, 34, "q8_0"},
        {TL_Q8_1, 32, 36, "q8_1"}, {TL_Q2_K, 256, 84, "q2_k"}, {TL_Q3_K, 256, 110, "q3_k"},
        {TL_Q4_K, 256, 144, "q4_k"}, {TL_Q5_K, 256, 176, "q5_k"}, {TL_Q6_K, 256, 210, "q6_k"},
        {TL_Q8_K, 256, 292, "q8_k"}, {TL_TQ1_0, 256, 54, "tq1_0"}, {TL_TQ2_0, 256, 66, "tq2_0"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        CHECK(tl_dtype_block_size(rows[i].t) == rows[i].bs);
        CHECK(tl_dtype_type_size(rows[i].t) == rows[i].ts);
        CHECK(strcmp(tl_dtype_name(rows[i].t), rows[i].name) == 0);
        tl_dtype back;
        CHECK(tl_dtype_from_name(rows[i].name, &back) && back == rows[i].t);
        CHECK(tl_dtype_row_size(rows[i].t, rows[i].bs * 3) == rows[i].ts * 3);
        if (rows[i].bs > 1) CHECK(tl_dtype_row_size(rows[i].t, rows[i].bs + 1) == 0);
    }
    CHECK(!tl_dtype_is_valid(4) && !tl_dtype_is_valid(16) && !tl_dtype_is_valid(-1) && !tl_dtype_is_valid(999));
    float f[32];
    CHECK(tl_dequantize(TL_Q4_0, "", f, 33) == TL_ERR_INVALID);
    CHECK(strstr(tl_last_error(), "whole number") != NULL);
    CHECK(tl_dequantize((tl_dtype)16, "", f, 32) == TL_ERR_UNSUPPORTED);
}

static void test_round_trip(const char *path) {
    /* metadata of every type */
    uint8_t u8s[3] = {0, 7, 255};
    float f32s[4] = {1.5f, -0.0f, INFINITY, 1e-30f};
    tl_string strs[3] = {S(""), S("▁hello"), S("<0x0A>")};
    int32_t row0[2] = {1, 2}, row1[3] = {3, 4, 5};
    tl_value rows[2] = {{.type = TL_VAL_ARRAY, .arr = {TL_VAL_INT32, 2, row0}},
                        {.type = TL_VAL_ARRAY, .arr = {TL_VAL_INT32, 3, row1}}};
    tl_kv kvs[] = {
        {S("general.architecture"), {.type = TL_VAL_STRING, .str = S("llama")}},
        {S("general.alignment"), {.type = TL_VAL_UINT32, .u64 = 64}},
        {S("t.u8"), {.type = TL_VAL_UINT8, .u64 = 200}},
        {S("t.i8"), {.type = TL_VAL_INT8, .i64 = -100}},
        {S("t.u16"), {.type = TL_VAL_UINT16, .u64 = 65535}},
        {S("t.i16"), {.type = TL_VAL_INT16, .i64 = -32768}},
        {S("t.i32"), {.type = TL_VAL_INT32, .i64 = -5}},
        {S("t.u64"), {.type = TL_VAL_UINT64, .u64 = UINT64_MAX}},
        {S("t.i64"), {.type = TL_VAL_INT64, .i64 = INT64_MIN}},
        {S("t.f32"), {.type = TL_VAL_FLOAT32, .f64 = 0.1f}},
        {S("t.f64"), {.type = TL_VAL_FLOAT64, .f64 = 0.1}},
        {S("t.bool"), {.type = TL_VAL_BOOL, .b = true}},
        {S("t.u8s"), {.type = TL_VAL_ARRAY, .arr = {TL_VAL_UINT8, 3, u8s}}},
        {S("t.f32s"), {.type = TL_VAL_ARRAY, .arr = {TL_VAL_FLOAT32, 4, f32s}}},
        {S("t.strs"), {.type = TL_VAL_ARRAY, .arr = {TL_VAL_STRING, 3, strs}}},
        {S("t.nested"), {.type = TL_VAL_ARRAY, .arr = {TL_VAL_ARRAY, 2, rows}}},
        {S("t.empty"), {.type = TL_VAL_ARRAY, .arr = {TL_VAL_INT32, 0, NULL}}},
    };
    int64_t n_kv = (int64_t)(sizeof kvs / sizeof kvs[0]);

    /* tensors: f32 (3, 5), q8_0 (2, 64) quantized here, f16 vector */
    float a[15], x[128], back[128];
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 128; i++) x[i] = sinf((float)i);
    uint8_t q[4 * 34];
    CHECK(tl_quantize(TL_Q8_0, x, q, 128) == TL_OK);
    uint16_t h[7];
    CHECK(tl_quantize(TL_F16, a, h, 7) == TL_OK);
    tl_gguf_tensor_desc ts[] = {
        {"a", TL_F32, 2, {5, 3, 1, 1}, a},
        {"q", TL_Q8_0, 2, {64, 2, 1, 1}, q},
        {"h", TL_F16, 1, {7, 1, 1, 1}, h},
    };
    CHECK(tl_gguf_write(path, 3, kvs, n_kv, ts, 3) == TL_OK);

    tl_weights *w = NULL;
    CHECK(tl_weights_open(path, &w) == TL_OK);
    if (!w) return;
    CHECK(tl_weights_format(w) == TL_FORMAT_GGUF && tl_weights_version(w) == 3 && tl_weights_alignment(w) == 64);
    CHECK(tl_weights_n_kv(w) == n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        const tl_kv *kv = tl_weights_kv(w, i);
        CHECK(kv->key.len == kvs[i].key.len && memcmp(kv->key.ptr, kvs[i].key.ptr, kv->key.len) == 0);
        CHECK(kv->value.type == kvs[i].value.type);
        CHECK(tl_weights_find_kv(w, kvs[i].key.ptr) == kv);
    }
    CHECK(tl_weights_find_kv(w, "t.u64")->value.u64 == UINT64_MAX);
    CHECK(tl_weights_find_kv(w, "t.i64")->value.i64 == INT64_MIN);
    CHECK(tl_weights_find_kv(w, "t.i16")->value.i64 == -32768);
    CHECK(tl_weights_find_kv(w, "t.f32")->value.f64 == (double)0.1f);
    CHECK(tl_weights_find_kv(w, "t.f64")->value.f64 == 0.1);
    CHECK(tl_weights_find_kv(w, "missing") == NULL);
    const tl_value *fs = &tl_weights_find_kv(w, "t.f32s")->value;
    CHECK(fs->arr.n == 4 && memcmp(fs->arr.data, f32s, sizeof f32s) == 0);
    const tl_value *ss = &tl_weights_find_kv(w, "t.strs")->value;
    CHECK(ss->arr.n == 3 && ((const tl_string *)ss->arr.data)[1].len == strlen("▁hello"));
    const tl_value *nested = &tl_weights_find_kv(w, "t.nested")->value;
    CHECK(nested->arr.elem_type == TL_VAL_ARRAY && nested->arr.n == 2);
    const tl_value *r1 = &((const tl_value *)nested->arr.data)[1];
    CHECK(r1->arr.n == 3 && ((const int32_t *)r1->arr.data)[2] == 5);

    CHECK(tl_weights_n_tensors(w) == 3);
    const tl_named_tensor *ta = tl_weights_find_tensor(w, "a");
    const tl_named_tensor *tq = tl_weights_find_tensor(w, "q");
    CHECK(ta && tq && tl_weights_find_tensor(w, "nope") == NULL);
    if (!ta || !tq) {
        tl_weights_free(w);
        return;
    }
    CHECK(ta->tensor.ne[0] == 5 && ta->tensor.ne[1] == 3 && ta->tensor.nbytes == sizeof a);
    CHECK(memcmp(ta->tensor.data, a, sizeof a) == 0);
    CHECK(((uintptr_t)tq->tensor.data - (uintptr_t)tl_mapping_data(tq->tensor.owner)) % 64 == 0);
    CHECK(tl_dequantize(tq->tensor.dtype, tq->tensor.data, back, 128) == TL_OK);
    double err = 0, norm = 0;
    for (int i = 0; i < 128; i++) err += (back[i] - x[i]) * (back[i] - x[i]), norm += x[i] * x[i];
    CHECK(sqrt(err / norm) < 0.01);

    /* a tensor view outlives the table when its mapping is retained */
    tl_tensor view = ta->tensor;
    tl_mapping_retain(view.owner);
    tl_weights_free(w);
    CHECK(memcmp(view.data, a, sizeof a) == 0);
    tl_mapping_release(view.owner);
}

static void test_writer_rejects(const char *path) {
    tl_kv dup[] = {{S("k"), {.type = TL_VAL_UINT32, .u64 = 1}}, {S("k"), {.type = TL_VAL_UINT32, .u64 = 2}}};
    unlink(path);
    CHECK(tl_gguf_write(path, 3, dup, 2, NULL, 0) == TL_ERR_INVALID);
    CHECK(strstr(tl_last_error(), "duplicate key") != NULL);
    CHECK(access(path, F_OK) != 0); /* nothing written */
    float z[32] = {0};
    tl_gguf_tensor_desc bad[] = {{"t", TL_Q4_0, 1, {33, 1, 1, 1}, z}};
    CHECK(tl_gguf_write(path, 3, NULL, 0, bad, 1) == TL_ERR_INVALID);
    CHECK(tl_gguf_write(path, 1, NULL, 0, NULL, 0) == TL_ERR_INVALID);
    tl_weights *w = NULL;
    CHECK(tl_weights_open("/nonexistent/model.gguf", &w) == TL_ERR_NOT_FOUND && w == NULL);
    CHECK(strstr(tl_last_error(), "/nonexistent/model.gguf") != NULL);
}

static void test_fixture(const char *fixtures) {
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.derived-f32.gguf", fixtures);
    tl_weights *w = NULL;
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "fixture missing: %s\n", path);
        n_fail++;
        return;
    }
    CHECK(tl_weights_open(path, &w) == TL_OK);
    if (!w) return;
    const tl_named_tensor *e = tl_weights_find_tensor(w, "token_embd.weight");
    CHECK(e && e->tensor.ne[0] == 64 && e->tensor.ne[1] == 512 && e->tensor.dtype == TL_F32);
    const tl_kv *arch = tl_weights_find_kv(w, "general.architecture");
    CHECK(arch && arch->value.type == TL_VAL_STRING && arch->value.str.len == 5);
    tl_weights_free(w);
}

int main(int argc, char **argv) {
    const char *fixtures = argc > 2 ? argv[2] : "../shared/fixtures";
    char path[] = "/tmp/torchless-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 2;
    close(fd);
    test_dtype_table();
    test_round_trip(path);
    test_writer_rejects(path);
    test_fixture(fixtures);
    unlink(path);
    return check_summary();
}
