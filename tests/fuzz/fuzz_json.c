/* libFuzzer target: the JSON parser (csrc/formats/json.c) on arbitrary bytes.
 *
 * The bytes are parsed where libFuzzer gives them (not NUL-terminated), so a read
 * past the end is caught by AddressSanitizer. A parsed DOM is walked: every string
 * touched, every object member looked up again by key (it must find itself:
 * duplicate keys are rejected), every array element fetched by index. */
#include "formats/json.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk(const tl_json *v, int depth) {
    if (depth > TL_JSON_MAX_DEPTH + 1) __builtin_trap();
    switch (v->kind) {
    case TL_JSON_NULL: break;
    case TL_JSON_BOOL: sink += v->boolean; break;
    case TL_JSON_NUMBER:
        if (v->number.f64 != v->number.f64 || v->number.raw[v->number.raw_len] != '\0') __builtin_trap();
        if (v->number.is_int) sink += (uint64_t)v->number.i64;
        break;
    case TL_JSON_STRING:
        if (v->string.ptr[v->string.len] != '\0') __builtin_trap();
        sink += v->string.len;
        break;
    case TL_JSON_ARRAY:
        if (tl_json_len(v) != v->array.n) __builtin_trap();
        for (size_t i = 0; i < v->array.n; i++) {
            if (tl_json_index(v, i) != &v->array.items[i]) __builtin_trap();
            walk(&v->array.items[i], depth + 1);
        }
        if (tl_json_index(v, v->array.n) != NULL) __builtin_trap();
        break;
    case TL_JSON_OBJECT:
        for (size_t i = 0; i < v->object.n; i++) {
            const tl_json_member *m = &v->object.members[i];
            if (m->key[m->key_len] != '\0') __builtin_trap();
            if (tl_json_get_n(v, m->key, m->key_len) != &m->value) __builtin_trap();
            walk(&m->value, depth + 1);
        }
        break;
    default: __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tl_arena arena = {0};
    const tl_json *root = NULL;
    tl_status s = tl_json_parse((const char *)data, size, &arena, &root, "fuzz");
    if (s == TL_OK) walk(root, 0);
    tl_arena_free_all(&arena);
    return 0;
}
