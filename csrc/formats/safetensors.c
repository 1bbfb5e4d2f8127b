/* safetensors reader: one file, or a sharded model through its index.
 *
 * File layout (huggingface/safetensors, "Format"): an unsigned little-endian
 * 64-bit header length N, N bytes of UTF-8 JSON, then the data buffer. The
 * header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} with offsets relative to the start of the data buffer, plus an optional
 * "__metadata__" object of string values.
 *
 * Decisions:
 *   - Everything in the header is validated before a tensor is handed out; a
 *     corrupt file is TL_ERR_FORMAT, a well-formed one using an element type or
 *     rank we do not support is TL_ERR_UNSUPPORTED.
 *   - Tensors may not overlap. Holes between tensors (which the format
 *     forbids) are tolerated, as are bytes after the last tensor.
 *   - A 0-dim (scalar) tensor becomes n_dims = 1, ne[0] = 1: tl_tensor has no
 *     0-dim form, and one element is what the data holds.
 *   - Tensor data is used in place; its alignment is whatever the file gives.
 *   - Index: shard names must be plain file names in the index's folder. Every
 *     tensor named in weight_map must be in its shard; tensors a shard holds
 *     beyond weight_map are loaded too; a name in two shards is an error. The
 *     index's "metadata" numbers and strings become kv, then each shard's
 *     __metadata__ entries whose keys are not taken yet (first shard wins). */
#include "formats/json.h"
#include "formats/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER_BYTES (100u * 1000 * 1000) /* the reference implementation's limit */

/* safetensors element types we read, by their header name. */
static const struct {
    const char *name;
    tl_dtype dtype;
} dtypes[] = {
    {"F64", TL_F64}, {"F32", TL_F32}, {"F16", TL_F16}, {"BF16", TL_BF16}, {"I64", TL_I64},
    {"I32", TL_I32}, {"I16", TL_I16}, {"I8", TL_I8},   {"U8", TL_U8},     {"BOOL", TL_BOOL},
};

/* Known to the format, not to us. */
static const char *const unsupported_dtypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                                 "F6_E2M3", "F6_E3M2", "F4", "C64", "C128"};

/* Enough of a string for a message: at most 200 bytes. */
#define SHOW(len) ((int)((len) > 200 ? 200 : (len)))

/* One tensor's header entry, checked. */
typedef struct entry {
    const char *name;
    size_t name_len;
    const char *dtype_name;
    tl_dtype dtype;
    int n_dims;
    int64_t shape[TL_MAX_DIMS]; /* safetensors (NumPy) order */
    uint64_t begin, end;
} entry;

static void format_shape(const entry *e, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < e->n_dims && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)e->shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* A non-negative integer JSON value. */
static bool read_count(const tl_json *v, uint64_t *out) {
    if (!v || v->kind != TL_JSON_NUMBER || !v->number.is_int || v->number.i64 < 0) return false;
    *out = (uint64_t)v->number.i64;
    return true;
}

static tl_status parse_dtype(const char *path, const entry *e, const tl_json *v, tl_dtype *out,
                             const char **name_out) {
    if (v->kind != TL_JSON_STRING)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' dtype is %s, expected a string", path,
                            SHOW(e->name_len), e->name, tl_json_kind_name(v->kind));
    const char *name = v->string.ptr;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strlen(dtypes[i].name) == v->string.len && strcmp(name, dtypes[i].name) == 0) {
            *out = dtypes[i].dtype;
            *name_out = dtypes[i].name;
            return TL_OK;
        }
    }
    for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof unsupported_dtypes[0]; i++)
        if (strlen(unsupported_dtypes[i]) == v->string.len && strcmp(name, unsupported_dtypes[i]) == 0)
            return tl_set_error(TL_ERR_UNSUPPORTED,
                                "safetensors: %s: tensor '%.*s' has dtype %s, which torchless does not support", path,
                                SHOW(e->name_len), e->name, name);
    return tl_set_error(TL_ERR_UNSUPPORTED, "safetensors: %s: tensor '%.*s' has unknown dtype '%.*s'", path,
                        SHOW(e->name_len), e->name, SHOW(v->string.len), name);
}

/* Checks one header entry against the data buffer of data_size bytes. */
static tl_status parse_entry(const char *path, const tl_json_member *m, uint64_t data_size, entry *e) {
    memset(e, 0, sizeof *e);
    e->name = m->key;
    e->name_len = m->key_len;
    const int nl = SHOW(m->key_len);
    if (memchr(m->key, '\0', m->key_len))
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor name '%.*s' contains a NUL character", path, nl,
                            m->key);
    const tl_json *info = &m->value;
    if (info->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT,
                            "safetensors: %s: tensor '%.*s' entry is %s, expected an object with dtype, shape "
                            "and data_offsets",
                            path, nl, m->key, tl_json_kind_name(info->kind));
    for (size_t i = 0; i < info->object.n; i++) {
        const char *k = info->object.members[i].key;
        size_t kl = info->object.members[i].key_len;
        if (!(kl == 5 && !memcmp(k, "dtype", 5)) && !(kl == 5 && !memcmp(k, "shape", 5)) &&
            !(kl == 12 && !memcmp(k, "data_offsets", 12)))
            return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' has an unexpected key '%.*s'", path,
                                nl, m->key, SHOW(kl), k);
    }
    const tl_json *dtype = tl_json_get(info, "dtype"), *shape = tl_json_get(info, "shape"),
                  *offsets = tl_json_get(info, "data_offsets");
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
    if (missing)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' has no '%s'", path, nl, m->key, missing);

    tl_status s = parse_dtype(path, e, dtype, &e->dtype, &e->dtype_name);
    if (s) return s;

    /* shape: up to TL_MAX_DIMS non-negative integers, element count without overflow */
    if (shape->kind != TL_JSON_ARRAY)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' shape is %s, expected an array", path, nl,
                            m->key, tl_json_kind_name(shape->kind));
    if (shape->array.n > TL_MAX_DIMS)
        return tl_set_error(TL_ERR_UNSUPPORTED,
                            "safetensors: %s: tensor '%.*s' has %zu dimensions; torchless supports at most %d", path,
                            nl, m->key, shape->array.n, TL_MAX_DIMS);
    e->n_dims = (int)shape->array.n;
    /* the product of the nonzero dimensions must fit too: a zero does not excuse an
     * overflow, since code that walks rows multiplies the other dimensions */
    uint64_t nelements = 1, nonzero = 1;
    for (int i = 0; i < e->n_dims; i++) {
        uint64_t d;
        const tl_json *dv = &shape->array.items[i];
        if (!read_count(dv, &d))
            return tl_set_error(TL_ERR_FORMAT,
                                "safetensors: %s: tensor '%.*s' shape dimension %d is %s, expected a non-negative "
                                "integer",
                                path, nl, m->key, i, dv->kind == TL_JSON_NUMBER ? dv->number.raw : tl_json_kind_name(dv->kind));
        e->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(nelements, d, &nelements) || nelements > INT64_MAX ||
            (d && (__builtin_mul_overflow(nonzero, d, &nonzero) || nonzero > INT64_MAX)))
            return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' shape has too many elements", path, nl,
                                m->key);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(nelements, (uint64_t)tl_dtype_type_size(e->dtype), &nbytes) || nbytes > SIZE_MAX)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' shape is too large in bytes", path, nl,
                            m->key);

    /* data_offsets: [begin, end] inside the data buffer, end - begin = nbytes */
    if (offsets->kind != TL_JSON_ARRAY || offsets->array.n != 2 || !read_count(&offsets->array.items[0], &e->begin) ||
        !read_count(&offsets->array.items[1], &e->end))
        return tl_set_error(TL_ERR_FORMAT,
                            "safetensors: %s: tensor '%.*s' data_offsets must be an array of two non-negative "
                            "integers",
                            path, nl, m->key);
    if (e->begin > e->end)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' data_offsets [%llu, %llu] end before they begin",
                            path, nl, m->key, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return tl_set_error(TL_ERR_FORMAT,
                            "safetensors: %s: tensor '%.*s' data_offsets [%llu, %llu] extend past the end of the "
                            "data (%llu bytes; is the file truncated?)",
                            path, nl, m->key, (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)data_size);
    if (e->end - e->begin != nbytes) {
        char dims[128];
        format_shape(e, dims, sizeof dims);
        return tl_set_error(TL_ERR_FORMAT,
                            "safetensors: %s: tensor '%.*s' data_offsets [%llu, %llu] do not match shape %s of %s "
                            "(%llu bytes)",
                            path, nl, m->key, (unsigned long long)e->begin, (unsigned long long)e->end, dims,
                            e->dtype_name, (unsigned long long)nbytes);
    }
    return TL_OK;
}

static int entry_by_begin(const void *x, const void *y) {
    const entry *a = *(const entry *const *)x, *b = *(const entry *const *)y;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    return (a->end > b->end) - (a->end < b->end);
}

/* Tensors with bytes may not share any; empty ones take no space. */
static tl_status check_overlap(const char *path, entry *entries, size_t n) {
    if (n < 2) return TL_OK;
    entry **sorted = malloc(n * sizeof *sorted);
    if (!sorted) return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", path);
    for (size_t i = 0; i < n; i++) sorted[i] = &entries[i];
    qsort(sorted, n, sizeof *sorted, entry_by_begin);
    const entry *prev = NULL; /* the non-empty tensor that ends last so far */
    tl_status s = TL_OK;
    for (size_t i = 0; i < n && !s; i++) {
        const entry *e = sorted[i];
        if (e->begin == e->end) continue;
        if (prev && e->begin < prev->end)
            s = tl_set_error(TL_ERR_FORMAT,
                             "safetensors: %s: tensors '%.*s' data_offsets [%llu, %llu] and '%.*s' [%llu, %llu] overlap",
                             path, SHOW(prev->name_len), prev->name, (unsigned long long)prev->begin,
                             (unsigned long long)prev->end, SHOW(e->name_len), e->name,
                             (unsigned long long)e->begin, (unsigned long long)e->end);
        if (!prev || e->end > prev->end) prev = e;
    }
    free(sorted);
    return s;
}

static tl_status add_metadata(tl_weights *w, const char *path, const tl_json *meta) {
    if (meta->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: __metadata__ is %s, expected an object of strings",
                            path, tl_json_kind_name(meta->kind));
    for (size_t i = 0; i < meta->object.n; i++) {
        const tl_json_member *m = &meta->object.members[i];
        if (m->value.kind != TL_JSON_STRING)
            return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: __metadata__ value of '%.*s' is %s, expected a string",
                                path, SHOW(m->key_len), m->key, tl_json_kind_name(m->value.kind));
        tl_kv *kv = &w->kv[w->n_kv];
        kv->value.type = TL_VAL_STRING;
        tl_status s;
        if ((s = tl_weights_strdup(w, m->key, m->key_len, &kv->key)) ||
            (s = tl_weights_strdup(w, m->value.string.ptr, m->value.string.len, &kv->value.str)))
            return s;
        w->n_kv++;
    }
    return TL_OK;
}

/* Builds the table of one mapped file; w already owns the mapping. */
static tl_status read_file(tl_weights *w, tl_mapping *map, const char *path, tl_arena *scratch) {
    const uint8_t *bytes = tl_mapping_data(map);
    const size_t size = tl_mapping_size(map);
    if (size < 8)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: file is %zu bytes, too short for a safetensors header",
                            path, size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i];
    if (header_len > size - 8)
        return tl_set_error(TL_ERR_FORMAT,
                            "safetensors: %s: header length %llu extends past the end of the file (%zu bytes)", path,
                            (unsigned long long)header_len, size);
    if (header_len > MAX_HEADER_BYTES)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: header length %llu is over the %u-byte limit", path,
                            (unsigned long long)header_len, MAX_HEADER_BYTES);
    const uint8_t *data = bytes + 8 + header_len;
    const uint64_t data_size = size - 8 - header_len;

    char what[1200];
    snprintf(what, sizeof what, "safetensors: %s: header", path);
    const tl_json *root;
    tl_status s = tl_json_parse((const char *)bytes + 8, (size_t)header_len, scratch, &root, what);
    if (s) return s;
    if (root->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: header is %s, expected a JSON object", path,
                            tl_json_kind_name(root->kind));

    const tl_json *meta = tl_json_get(root, "__metadata__");
    const size_t n = root->object.n - (meta != NULL);
    entry *entries = tl_arena_alloc_array(scratch, n, sizeof *entries, _Alignof(entry));
    w->tensors = tl_arena_alloc_array(&w->arena, n, sizeof *w->tensors, _Alignof(tl_named_tensor));
    w->kv = meta && meta->kind == TL_JSON_OBJECT
                ? tl_arena_alloc_array(&w->arena, meta->object.n, sizeof *w->kv, _Alignof(tl_kv))
                : NULL;
    if (!entries || !w->tensors || (meta && meta->kind == TL_JSON_OBJECT && !w->kv))
        return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory for %zu tensors", path, n);
    if (meta && (s = add_metadata(w, path, meta))) return s;

    size_t k = 0;
    for (size_t i = 0; i < root->object.n; i++) {
        const tl_json_member *m = &root->object.members[i];
        if (&m->value == meta) continue;
        if ((s = parse_entry(path, m, data_size, &entries[k]))) return s;
        k++;
    }
    if ((s = check_overlap(path, entries, n))) return s;

    for (size_t i = 0; i < n; i++) {
        const entry *e = &entries[i];
        tl_named_tensor *t = &w->tensors[i];
        if ((s = tl_weights_strdup(w, e->name, e->name_len, &t->name))) return s;
        t->tensor.dtype = e->dtype;
        /* GGML order: ne[0] is the last (fastest) safetensors dimension */
        t->tensor.n_dims = e->n_dims ? e->n_dims : 1;
        for (int d = 0; d < TL_MAX_DIMS; d++) t->tensor.ne[d] = 1;
        for (int d = 0; d < e->n_dims; d++) t->tensor.ne[d] = e->shape[e->n_dims - 1 - d];
        t->tensor.nbytes = (size_t)(e->end - e->begin);
        t->tensor.data = data + e->begin;
        t->tensor.owner = map;
        w->n_tensors++;
    }
    return tl_weights_finish(w, path);
}

tl_status tl_safetensors_open(const char *path, tl_weights **out) {
    if (!out) return tl_set_error(TL_ERR_INVALID, "safetensors: out is NULL");
    *out = NULL;
    if (!path) return tl_set_error(TL_ERR_INVALID, "safetensors: path is NULL");
    tl_mapping *map;
    tl_status s = tl_mapping_open(path, &map);
    if (s) return s;
    tl_weights *w = tl_weights_new(TL_FORMAT_SAFETENSORS);
    if (!w) {
        tl_mapping_release(map);
        return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", path);
    }
    if ((s = tl_weights_add_mapping(w, map))) {
        tl_weights_free(w);
        return s;
    }
    tl_arena scratch = {0};
    s = read_file(w, map, path, &scratch);
    tl_arena_free_all(&scratch);
    if (s) {
        tl_weights_free(w);
        return s;
    }
    *out = w;
    return TL_OK;
}

/* ---------------------------------------------------------------- sharded models */

/* A shard file name must name a file in the index's own folder. */
static bool plain_file_name(const char *s, size_t len) {
    if (len == 0 || memchr(s, '\0', len) || memchr(s, '/', len) || memchr(s, '\\', len)) return false;
    return !(len == 1 && s[0] == '.') && !(len == 2 && s[0] == '.' && s[1] == '.');
}

typedef struct shard {
    const char *file; /* as written in weight_map (NUL-terminated, no NUL inside) */
    size_t file_len;
    tl_weights *w;
} shard;

static int shard_cmp(const void *x, const void *y) {
    const shard *a = x, *b = y;
    int c = memcmp(a->file, b->file, a->file_len < b->file_len ? a->file_len : b->file_len);
    return c ? c : (a->file_len > b->file_len) - (a->file_len < b->file_len);
}

static const shard *find_shard(const shard *shards, size_t n, const char *file, size_t len) {
    shard key = {.file = file, .file_len = len};
    return bsearch(&key, shards, n, sizeof *shards, shard_cmp);
}

/* Index "metadata": numbers and strings become kv; other kinds are skipped. */
static tl_status add_index_metadata(tl_weights *w, const tl_json *meta) {
    for (size_t i = 0; i < meta->object.n; i++) {
        const tl_json_member *m = &meta->object.members[i];
        const tl_json *v = &m->value;
        tl_kv *kv = &w->kv[w->n_kv];
        if (v->kind == TL_JSON_NUMBER && v->number.is_int && v->number.i64 >= 0) {
            kv->value.type = TL_VAL_UINT64;
            kv->value.u64 = (uint64_t)v->number.i64;
        } else if (v->kind == TL_JSON_NUMBER && v->number.is_int) {
            kv->value.type = TL_VAL_INT64;
            kv->value.i64 = v->number.i64;
        } else if (v->kind == TL_JSON_NUMBER) {
            kv->value.type = TL_VAL_FLOAT64;
            kv->value.f64 = v->number.f64;
        } else if (v->kind == TL_JSON_STRING) {
            kv->value.type = TL_VAL_STRING;
            tl_status s = tl_weights_strdup(w, v->string.ptr, v->string.len, &kv->value.str);
            if (s) return s;
        } else {
            continue;
        }
        tl_status s = tl_weights_strdup(w, m->key, m->key_len, &kv->key);
        if (s) return s;
        w->n_kv++;
    }
    return TL_OK;
}

static bool has_kv(const tl_weights *w, tl_string key) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (tl_string_cmp(w->kv[i].key, key) == 0) return true;
    return false;
}

/* Opens every shard of a checked weight_map and merges them into w. */
static tl_status read_index(tl_weights *w, const char *index_path, const tl_json *root, shard **shards_out,
                            size_t *n_shards_out) {
    if (root->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: index is %s, expected a JSON object", index_path,
                            tl_json_kind_name(root->kind));
    const tl_json *map = tl_json_get(root, "weight_map"), *meta = tl_json_get(root, "metadata");
    if (!map) return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: index has no 'weight_map'", index_path);
    if (map->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: 'weight_map' is %s, expected an object", index_path,
                            tl_json_kind_name(map->kind));
    if (meta && meta->kind == TL_JSON_NULL) meta = NULL;
    if (meta && meta->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: 'metadata' is %s, expected an object", index_path,
                            tl_json_kind_name(meta->kind));

    /* the distinct shard files, sorted */
    const size_t n_map = map->object.n;
    shard *shards = calloc(n_map ? n_map : 1, sizeof *shards);
    if (!shards) return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", index_path);
    *shards_out = shards;
    for (size_t i = 0; i < n_map; i++) {
        const tl_json_member *m = &map->object.members[i];
        if (m->value.kind != TL_JSON_STRING)
            return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: weight_map entry '%.*s' is %s, expected a file name",
                                index_path, SHOW(m->key_len), m->key, tl_json_kind_name(m->value.kind));
        if (!plain_file_name(m->value.string.ptr, m->value.string.len))
            return tl_set_error(TL_ERR_FORMAT,
                                "safetensors: %s: weight_map entry '%.*s' names shard '%.*s', which is not a plain "
                                "file name in the index's folder",
                                index_path, SHOW(m->key_len), m->key, SHOW(m->value.string.len), m->value.string.ptr);
        shards[i].file = m->value.string.ptr;
        shards[i].file_len = m->value.string.len;
    }
    if (n_map) qsort(shards, n_map, sizeof *shards, shard_cmp);
    size_t n_shards = 0;
    for (size_t i = 0; i < n_map; i++)
        if (n_shards == 0 || shard_cmp(&shards[n_shards - 1], &shards[i]) != 0) shards[n_shards++] = shards[i];
    *n_shards_out = n_shards;

    /* open each shard beside the index */
    const char *slash = strrchr(index_path, '/');
    const size_t dir_len = slash ? (size_t)(slash - index_path) + 1 : 0;
    for (size_t i = 0; i < n_shards; i++) {
        size_t path_len = dir_len + shards[i].file_len;
        char *path = malloc(path_len + 1);
        if (!path) return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", index_path);
        memcpy(path, index_path, dir_len);
        memcpy(path + dir_len, shards[i].file, shards[i].file_len + 1);
        tl_status s = tl_safetensors_open(path, &shards[i].w);
        free(path);
        if (s) {
            char cause[1024];
            snprintf(cause, sizeof cause, "%s", tl_last_error());
            return tl_set_error(s, "safetensors: %s: shard '%s': %s", index_path, shards[i].file, cause);
        }
    }

    /* every tensor the index names is in its shard */
    for (size_t i = 0; i < n_map; i++) {
        const tl_json_member *m = &map->object.members[i];
        const shard *sh = find_shard(shards, n_shards, m->value.string.ptr, m->value.string.len);
        if (memchr(m->key, '\0', m->key_len) || !tl_weights_find_tensor(sh->w, m->key))
            return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%.*s' is not in its shard '%s'", index_path,
                                SHOW(m->key_len), m->key, sh->file);
    }

    /* no tensor in two shards */
    for (size_t i = 1; i < n_shards; i++) {
        const tl_weights *sw = shards[i].w;
        for (int64_t j = 0; j < sw->n_tensors; j++)
            for (size_t k = 0; k < i; k++)
                if (tl_weights_find_tensor(shards[k].w, sw->tensors[j].name.ptr))
                    return tl_set_error(TL_ERR_FORMAT, "safetensors: %s: tensor '%s' is in two shards, '%s' and '%s'",
                                        index_path, sw->tensors[j].name.ptr, shards[k].file, shards[i].file);
    }

    /* merge: the mappings move over (one reference each), names and kv are copied */
    int64_t n_tensors = 0, n_kv = meta ? (int64_t)meta->object.n : 0;
    for (size_t i = 0; i < n_shards; i++) {
        n_tensors += shards[i].w->n_tensors;
        n_kv += shards[i].w->n_kv;
    }
    w->tensors = tl_arena_alloc_array(&w->arena, (size_t)n_tensors, sizeof *w->tensors, _Alignof(tl_named_tensor));
    w->kv = tl_arena_alloc_array(&w->arena, (size_t)n_kv, sizeof *w->kv, _Alignof(tl_kv));
    if (!w->tensors || !w->kv) return tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", index_path);
    tl_status s;
    if (meta && (s = add_index_metadata(w, meta))) return s;
    for (size_t i = 0; i < n_shards; i++) {
        tl_weights *sw = shards[i].w;
        for (int j = 0; j < sw->n_maps; j++) {
            tl_mapping_retain(sw->maps[j]);
            if ((s = tl_weights_add_mapping(w, sw->maps[j]))) return s;
        }
        for (int64_t j = 0; j < sw->n_tensors; j++) {
            tl_named_tensor *t = &w->tensors[w->n_tensors];
            t->tensor = sw->tensors[j].tensor;
            if ((s = tl_weights_strdup(w, sw->tensors[j].name.ptr, sw->tensors[j].name.len, &t->name))) return s;
            w->n_tensors++;
        }
        for (int64_t j = 0; j < sw->n_kv; j++) {
            if (has_kv(w, sw->kv[j].key)) continue;
            tl_kv *kv = &w->kv[w->n_kv];
            kv->value.type = TL_VAL_STRING;
            if ((s = tl_weights_strdup(w, sw->kv[j].key.ptr, sw->kv[j].key.len, &kv->key)) ||
                (s = tl_weights_strdup(w, sw->kv[j].value.str.ptr, sw->kv[j].value.str.len, &kv->value.str)))
                return s;
            w->n_kv++;
        }
    }
    char what[1200];
    snprintf(what, sizeof what, "safetensors: %s", index_path);
    return tl_weights_finish(w, what);
}

tl_status tl_safetensors_open_index(const char *index_path, tl_weights **out) {
    if (!out) return tl_set_error(TL_ERR_INVALID, "safetensors: out is NULL");
    *out = NULL;
    if (!index_path) return tl_set_error(TL_ERR_INVALID, "safetensors: index path is NULL");
    tl_arena scratch = {0};
    const tl_json *root;
    tl_status s = tl_json_parse_file(index_path, &scratch, &root);
    if (s) {
        tl_arena_free_all(&scratch);
        return s;
    }
    tl_weights *w = tl_weights_new(TL_FORMAT_SAFETENSORS);
    shard *shards = NULL;
    size_t n_shards = 0;
    s = w ? read_index(w, index_path, root, &shards, &n_shards)
          : tl_set_error(TL_ERR_NOMEM, "safetensors: %s: out of memory", index_path);
    for (size_t i = 0; i < n_shards; i++) tl_weights_free(shards[i].w);
    free(shards);
    tl_arena_free_all(&scratch);
    if (s) {
        tl_weights_free(w);
        return s;
    }
    *out = w;
    return TL_OK;
}
