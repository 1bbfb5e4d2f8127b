/* The common weights table: readers fill it, everything above reads it. */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

#define SHOW(len) ((int)((len) > 120 ? 120 : (len)))

tl_weights *tl_weights_new(tl_format format) {
    tl_weights *w = calloc(1, sizeof *w);
    if (w) w->format = format;
    return w;
}

tl_status tl_weights_open_mapped(const char *path, tl_format format, const char *what, tl_weights_parse_fn parse,
                                 tl_weights **out) {
    *out = NULL;
    tl_mapping *m;
    tl_status s = tl_mapping_open(path, &m);
    if (s) return s;
    tl_weights *w = tl_weights_new(format);
    if (!w) {
        tl_mapping_release(m);
        return tl_set_error(TL_ERR_NOMEM, "%s: %s: out of memory", what, path);
    }
    if (!(s = tl_weights_add_mapping(w, m)) && !(s = parse(w, path, tl_mapping_data(m), tl_mapping_size(m))) &&
        !(s = tl_weights_finish(w, path))) {
        *out = w;
        return TL_OK;
    }
    tl_weights_free(w);
    return s;
}

tl_status tl_weights_add_mapping(tl_weights *w, tl_mapping *m) {
    tl_mapping **maps = realloc(w->maps, (size_t)(w->n_maps + 1) * sizeof *maps);
    if (!maps) {
        tl_mapping_release(m);
        return tl_set_error(TL_ERR_NOMEM, "out of memory");
    }
    w->maps = maps;
    w->maps[w->n_maps++] = m;
    return TL_OK;
}

void tl_weights_free(tl_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n_maps; i++) tl_mapping_release(w->maps[i]);
    tl_mapping_release(w->computed);
    free(w->maps);
    free(w->kv_order);
    free(w->tensor_order);
    tl_arena_free_all(&w->arena);
    free(w);
}

tl_status tl_weights_strdup(tl_weights *w, const char *s, size_t len, tl_string *out) {
    if (len == SIZE_MAX) return tl_set_error(TL_ERR_NOMEM, "string too long");
    char *p = tl_arena_alloc(&w->arena, len + 1, 1);
    if (!p) return tl_set_error(TL_ERR_NOMEM, "out of memory copying a string of %zu bytes", len);
    memcpy(p, s, len);
    p[len] = '\0';
    out->ptr = p;
    out->len = len;
    return TL_OK;
}

int tl_string_cmp(tl_string a, tl_string b) {
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c) return c;
    return (a.len > b.len) - (a.len < b.len);
}

bool tl_string_eq_cstr(tl_string a, const char *s) {
    size_t n = strlen(s);
    return a.len == n && memcmp(a.ptr, s, n) == 0;
}

/* qsort has no context argument in C11: sort (index, key) pairs instead. */
typedef struct {
    tl_string key;
    int64_t index;
} keyed;

static int keyed_cmp(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    int c = tl_string_cmp(x->key, y->key);
    if (c) return c;
    return (x->index > y->index) - (x->index < y->index);
}

static tl_status sort_names(int64_t n, const void *base, size_t stride, size_t key_offset,
                            int64_t **order_out, const char *kind, const char *what) {
    keyed *k = malloc((size_t)(n ? n : 1) * sizeof *k);
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!k || !order) {
        free(k);
        free(order);
        return tl_set_error(TL_ERR_NOMEM, "%s: out of memory sorting %lld %ss", what, (long long)n, kind);
    }
    for (int64_t i = 0; i < n; i++) {
        memcpy(&k[i].key, (const char *)base + (size_t)i * stride + key_offset, sizeof(tl_string));
        k[i].index = i;
    }
    if (n > 1) qsort(k, (size_t)n, sizeof *k, keyed_cmp);
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && tl_string_cmp(k[i - 1].key, k[i].key) == 0) {
            tl_status s = tl_set_error(TL_ERR_FORMAT, "%s: duplicate %s '%.*s'", what, kind,
                                       (int)(k[i].key.len > 200 ? 200 : k[i].key.len), k[i].key.ptr);
            free(k);
            free(order);
            return s;
        }
        order[i] = k[i].index;
    }
    free(k);
    *order_out = order;
    return TL_OK;
}

tl_status tl_weights_finish(tl_weights *w, const char *what) {
    tl_status s = sort_names(w->n_kv, w->kv, sizeof(tl_kv), offsetof(tl_kv, key), &w->kv_order,
                             "metadata key", what);
    if (s) return s;
    return sort_names(w->n_tensors, w->tensors, sizeof(tl_named_tensor), offsetof(tl_named_tensor, name),
                      &w->tensor_order, "tensor name", what);
}

tl_format tl_weights_format(const tl_weights *w) { return w->format; }
uint32_t tl_weights_version(const tl_weights *w) { return w->version; }
uint64_t tl_weights_alignment(const tl_weights *w) { return w->alignment; }
int64_t tl_weights_n_kv(const tl_weights *w) { return w->n_kv; }
int64_t tl_weights_n_tensors(const tl_weights *w) { return w->n_tensors; }

const tl_kv *tl_weights_kv(const tl_weights *w, int64_t i) {
    return i >= 0 && i < w->n_kv ? &w->kv[i] : NULL;
}

const tl_named_tensor *tl_weights_tensor(const tl_weights *w, int64_t i) {
    return i >= 0 && i < w->n_tensors ? &w->tensors[i] : NULL;
}

/* Binary search over a sorted index. */
static int64_t find(const int64_t *order, int64_t n, const void *base, size_t stride, size_t key_offset,
                    const char *name) {
    if (!order || !name) return -1;
    tl_string key = {name, strlen(name)};
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        tl_string k;
        memcpy(&k, (const char *)base + (size_t)order[mid] * stride + key_offset, sizeof k);
        int c = tl_string_cmp(k, key);
        if (c == 0) return order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

const tl_kv *tl_weights_find_kv(const tl_weights *w, const char *key) {
    int64_t i = find(w->kv_order, w->n_kv, w->kv, sizeof(tl_kv), offsetof(tl_kv, key), key);
    return i < 0 ? NULL : &w->kv[i];
}

const tl_named_tensor *tl_weights_find_tensor(const tl_weights *w, const char *name) {
    int64_t i = find(w->tensor_order, w->n_tensors, w->tensors, sizeof(tl_named_tensor),
                     offsetof(tl_named_tensor, name), name);
    return i < 0 ? NULL : &w->tensors[i];
}

int tl_weights_n_mappings(const tl_weights *w) { return w->n_maps; }

tl_mapping *tl_weights_mapping(const tl_weights *w, int i) {
    return i >= 0 && i < w->n_maps ? w->maps[i] : NULL;
}

size_t tl_weights_file_size(const tl_weights *w) {
    size_t total = 0;
    for (int i = 0; i < w->n_maps; i++) total += tl_mapping_size(w->maps[i]);
    return total;
}

bool tl_value_from_packed(tl_value_type t, const void *p, tl_value *out) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } x = {0};
    memcpy(&x, p, tl_value_type_size(t));
    out->type = t;
    switch (t) {
    case TL_VAL_UINT8: out->u64 = x.u8; break;
    case TL_VAL_INT8: out->i64 = x.i8; break;
    case TL_VAL_UINT16: out->u64 = x.u16; break;
    case TL_VAL_INT16: out->i64 = x.i16; break;
    case TL_VAL_UINT32: out->u64 = x.u32; break;
    case TL_VAL_INT32: out->i64 = x.i32; break;
    case TL_VAL_FLOAT32: out->f64 = x.f32; break;
    case TL_VAL_UINT64: out->u64 = x.u64; break;
    case TL_VAL_INT64: out->i64 = x.i64; break;
    case TL_VAL_FLOAT64: out->f64 = x.f64; break;
    case TL_VAL_BOOL:
        if (x.u8 > 1) return false;
        out->b = x.u8;
        break;
    default: break;
    }
    return true;
}

size_t tl_value_type_size(tl_value_type t) {
    static const size_t sizes[TL_VAL_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < TL_VAL_TYPE_COUNT ? sizes[t] : 0;
}

const char *tl_value_type_name(tl_value_type t) {
    static const char *names[TL_VAL_TYPE_COUNT] = {"uint8", "int8", "uint16", "int16", "uint32",
                                                   "int32", "float32", "bool", "string", "array",
                                                   "uint64", "int64", "float64"};
    return (unsigned)t < TL_VAL_TYPE_COUNT ? names[t] : "unknown";
}

/* ---------------------------------------------------------------- overlap check */

typedef struct {
    uint64_t begin, end;
    int64_t index;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

tl_status tl_weights_check_overlaps(const tl_weights *w, const char *who, const char *path, const uint64_t *offsets) {
    if (w->n_tensors < 2) return TL_OK;
    span *s = malloc((size_t)w->n_tensors * sizeof *s);
    if (!s) return tl_set_error(TL_ERR_NOMEM, "%s: %s: out of memory", who, path);
    for (int64_t i = 0; i < w->n_tensors; i++) s[i] = (span){offsets[i], offsets[i] + w->tensors[i].tensor.nbytes, i};
    qsort(s, (size_t)w->n_tensors, sizeof *s, span_cmp);
    tl_status st = TL_OK;
    int64_t last = 0; /* the span that ends last so far (an empty one between must not hide it) */
    for (int64_t i = 1; i < w->n_tensors; i++) {
        if (s[i].begin < s[last].end && s[i].end > s[i].begin) {
            const tl_string a = w->tensors[s[last].index].name, b = w->tensors[s[i].index].name;
            st = tl_set_error(TL_ERR_FORMAT, "%s: %s: tensors '%.*s' [%llu, %llu) and '%.*s' [%llu, %llu) overlap",
                              who, path, SHOW(a.len), a.ptr, (unsigned long long)s[last].begin,
                              (unsigned long long)s[last].end, SHOW(b.len), b.ptr,
                              (unsigned long long)s[i].begin, (unsigned long long)s[i].end);
            break;
        }
        if (s[i].end > s[last].end) last = i;
    }
    free(s);
    return st;
}

