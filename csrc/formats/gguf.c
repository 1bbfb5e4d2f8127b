/* GGUF v2/v3 reader and writer.
 *
 * Layout (GGUF spec, little-endian): magic "GGUF", u32 version, u64 tensor count,
 * u64 metadata count; metadata as (string key, u32 type, value); tensor infos as
 * (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset); padding to
 * general.alignment (default 32); tensor data, each offset a multiple of the
 * alignment, relative to the start of the data section. A string is u64 length +
 * bytes; an array is u32 element type + u64 count + elements.
 *
 * Every count, length and offset read from the file is checked against the bytes
 * that remain before it is used.
 */
#include "weights.h"

#include "core/dtype.h"
#include "formats/writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8

/* ---------------------------------------------------------------- reading */

typedef struct reader {
    const uint8_t *base;
    size_t size, pos;
    const char *path;
    tl_weights *w;
    int depth;
} reader;

static tl_status truncated(reader *r, const char *what) {
    return tl_set_error(TL_ERR_FORMAT, "gguf: %s: file truncated reading %s at offset %zu (file is %zu bytes)",
                        r->path, what, r->pos, r->size);
}

static size_t remaining(const reader *r) { return r->size - r->pos; }

static tl_status read_bytes(reader *r, void *dst, size_t n, const char *what) {
    if (n > remaining(r)) return truncated(r, what);
    memcpy(dst, r->base + r->pos, n);
    r->pos += n;
    return TL_OK;
}

static tl_status read_u32(reader *r, uint32_t *v, const char *what) { return read_bytes(r, v, 4, what); }
static tl_status read_u64(reader *r, uint64_t *v, const char *what) { return read_bytes(r, v, 8, what); }

/* A string in place: points into the mapping, not NUL-terminated. */
static tl_status read_string(reader *r, tl_string *s, const char *what) {
    uint64_t len = 0;
    size_t at = r->pos;
    tl_status st = read_u64(r, &len, what);
    if (st) return st;
    if (len > remaining(r))
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: %s at offset %zu has length %llu, past the end of the file (%zu bytes left)",
                            r->path, what, at, (unsigned long long)len, remaining(r));
    s->ptr = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += len;
    return TL_OK;
}

static int clip(uint64_t len) { return len > 120 ? 120 : (int)len; }

static tl_status read_value(reader *r, tl_value_type type, tl_value *v, tl_string key);

static tl_status read_array(reader *r, tl_value *v, tl_string key) {
    uint32_t et = 0;
    uint64_t n = 0;
    tl_status st;
    if ((st = read_u32(r, &et, "array element type")) || (st = read_u64(r, &n, "array length"))) return st;
    if (et >= TL_VAL_TYPE_COUNT)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s': unknown array element type %u", r->path,
                            clip(key.len), key.ptr, et);
    if (++r->depth > GGUF_MAX_ARRAY_DEPTH)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s': arrays nested deeper than %d", r->path,
                            clip(key.len), key.ptr, GGUF_MAX_ARRAY_DEPTH);
    v->arr.elem_type = (tl_value_type)et;
    v->arr.n = n;
    size_t esize = tl_value_type_size((tl_value_type)et);
    /* the smallest encoding of one element bounds the count before anything is allocated */
    size_t min_elem = esize ? esize : (et == TL_VAL_STRING ? 8 : 12);
    if (n > remaining(r) / min_elem)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s': array of %llu %s elements does not fit in the %zu bytes left",
                            r->path, clip(key.len), key.ptr, (unsigned long long)n,
                            tl_value_type_name((tl_value_type)et), remaining(r));
    if (esize) {
        /* numbers and bools: copied once to aligned memory (the file offset may be odd) */
        void *data = tl_arena_alloc_array(&r->w->arena, n, esize, 8);
        if (!data) return tl_set_error(TL_ERR_NOMEM, "gguf: %s: out of memory for array '%.*s'", r->path, clip(key.len), key.ptr);
        memcpy(data, r->base + r->pos, (size_t)n * esize);
        if (et == TL_VAL_BOOL) {
            const uint8_t *b = data;
            for (uint64_t i = 0; i < n; i++)
                if (b[i] > 1)
                    return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s': bool element %llu has value %u (must be 0 or 1)",
                                        r->path, clip(key.len), key.ptr, (unsigned long long)i, b[i]);
        }
        r->pos += (size_t)n * esize;
        v->arr.data = data;
    } else if (et == TL_VAL_STRING) {
        tl_string *items = tl_arena_alloc_array(&r->w->arena, n, sizeof(tl_string), 8);
        if (!items) return tl_set_error(TL_ERR_NOMEM, "gguf: %s: out of memory for array '%.*s'", r->path, clip(key.len), key.ptr);
        for (uint64_t i = 0; i < n; i++)
            if ((st = read_string(r, &items[i], "array string"))) return st;
        v->arr.data = items;
    } else { /* arrays of arrays */
        tl_value *items = tl_arena_alloc_array(&r->w->arena, n, sizeof(tl_value), 8);
        if (!items) return tl_set_error(TL_ERR_NOMEM, "gguf: %s: out of memory for array '%.*s'", r->path, clip(key.len), key.ptr);
        for (uint64_t i = 0; i < n; i++)
            if ((st = read_value(r, TL_VAL_ARRAY, &items[i], key))) return st;
        v->arr.data = items;
    }
    r->depth--;
    return TL_OK;
}

static tl_status read_value(reader *r, tl_value_type type, tl_value *v, tl_string key) {
    v->type = type;
    tl_status st = TL_OK;
    uint8_t x[8] = {0};
    size_t n = tl_value_type_size(type);
    if (n && (st = read_bytes(r, x, n, "metadata value"))) return st;
    switch (type) {
    case TL_VAL_UINT8: case TL_VAL_INT8: case TL_VAL_UINT16: case TL_VAL_INT16: case TL_VAL_UINT32:
    case TL_VAL_INT32: case TL_VAL_FLOAT32: case TL_VAL_UINT64: case TL_VAL_INT64: case TL_VAL_FLOAT64:
    case TL_VAL_BOOL:
        if (!tl_value_from_packed(type, x, v))
            return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s': bool value %u (must be 0 or 1)", r->path,
                                clip(key.len), key.ptr, x[0]);
        break;
    case TL_VAL_STRING: st = read_string(r, &v->str, "string value"); break;
    case TL_VAL_ARRAY: st = read_array(r, v, key); break;
    default:
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: key '%.*s' has unknown value type %u", r->path,
                            clip(key.len), key.ptr, (unsigned)type);
    }
    return st;
}

static tl_status read_tensor_info(reader *r, tl_named_tensor *nt, uint64_t *offset) {
    tl_status st;
    tl_string name;
    if ((st = read_string(r, &name, "tensor name"))) return st;
    /* tensors are found by C string: a name with a NUL in it could never be looked up */
    if (memchr(name.ptr, '\0', name.len))
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor name '%.*s' contains a NUL character", r->path,
                            clip(name.len), name.ptr);
    if ((st = tl_weights_strdup(r->w, name.ptr, name.len, &nt->name))) return st;
    uint32_t n_dims = 0, type = 0;
    if ((st = read_u32(r, &n_dims, "tensor dimension count"))) return st;
    if (n_dims < 1 || n_dims > TL_MAX_DIMS)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' has %u dimensions (1 to %d allowed)", r->path,
                            clip(name.len), name.ptr, n_dims, TL_MAX_DIMS);
    tl_tensor *t = &nt->tensor;
    t->n_dims = (int)n_dims;
    for (int i = 0; i < TL_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        uint64_t ne = 0;
        if ((st = read_u64(r, &ne, "tensor dimension"))) return st;
        if (ne > (uint64_t)INT64_MAX)
            return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' dimension %u is %llu (too large)", r->path,
                                clip(name.len), name.ptr, i, (unsigned long long)ne);
        t->ne[i] = (int64_t)ne;
    }
    if ((st = read_u32(r, &type, "tensor type")) || (st = read_u64(r, offset, "tensor offset"))) return st;
    const tl_dtype_traits *tr = tl_dtype_traits_of((int)type);
    if (!tr || type >= TL_U8)
        return tl_set_error(TL_ERR_UNSUPPORTED, "gguf: %s: tensor '%.*s' has unknown or unsupported type %u", r->path,
                            clip(name.len), name.ptr, type);
    t->dtype = (tl_dtype)type;
    if (t->ne[0] % tr->block_size != 0)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' row of %lld elements is not a whole number of %s blocks of %lld",
                            r->path, clip(name.len), name.ptr, (long long)t->ne[0], tl_dtype_name(t->dtype),
                            (long long)tr->block_size);
    /* The element count must fit in int64 even when a zero dimension makes it 0:
     * tl_tensor_nelements / tl_tensor_nrows multiply the dimensions in order. */
    int64_t nonzero = 1;
    for (int i = 0; i < TL_MAX_DIMS; i++)
        if (t->ne[i] && __builtin_mul_overflow(nonzero, t->ne[i], &nonzero)) goto too_big;
    /* bytes = row bytes * rows, every product overflow-checked */
    size_t bytes = tl_dtype_row_size(t->dtype, t->ne[0]);
    if (t->ne[0] > 0 && bytes == 0) goto too_big;
    for (int i = 1; i < TL_MAX_DIMS; i++)
        if (tl_mul_overflows(bytes, (size_t)t->ne[i], &bytes)) goto too_big;
    t->nbytes = bytes;
    return TL_OK;
too_big:
    return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' shape [%lld, %lld, %lld, %lld] is too large", r->path,
                        clip(name.len), name.ptr, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                        (long long)t->ne[3]);
}

static tl_status parse(reader *r) {
    tl_weights *w = r->w;
    tl_status st;
    uint32_t magic = 0, version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    if ((st = read_u32(r, &magic, "magic"))) return st;
    if (magic != GGUF_MAGIC)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: bad magic %02x %02x %02x %02x (expected 'GGUF')", r->path,
                            r->base[0], r->base[1], r->base[2], r->base[3]);
    if ((st = read_u32(r, &version, "version"))) return st;
    if (version == 1)
        return tl_set_error(TL_ERR_UNSUPPORTED, "gguf: %s: GGUF version 1 is not supported (2 and 3 are); re-convert the model", r->path);
    if ((version & 0xffff) == 0 && version != 0)
        return tl_set_error(TL_ERR_UNSUPPORTED, "gguf: %s: big-endian GGUF (version field %08x) is not supported", r->path, version);
    if (version != 2 && version != 3)
        return tl_set_error(TL_ERR_UNSUPPORTED, "gguf: %s: unknown GGUF version %u (2 and 3 are supported)", r->path, version);
    w->version = version;
    if ((st = read_u64(r, &n_tensors, "tensor count")) || (st = read_u64(r, &n_kv, "metadata count"))) return st;
    /* each entry takes at least 8+4+1 (kv) and 8+4+8+4+8 (tensor) bytes */
    if (n_kv > remaining(r) / 13)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: metadata count %llu cannot fit in the %zu bytes left", r->path,
                            (unsigned long long)n_kv, remaining(r));
    if (n_tensors > remaining(r) / 32)
        return tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor count %llu cannot fit in the %zu bytes left", r->path,
                            (unsigned long long)n_tensors, remaining(r));

    w->kv = tl_arena_alloc_array(&w->arena, n_kv, sizeof(tl_kv), 8);
    w->tensors = tl_arena_alloc_array(&w->arena, n_tensors, sizeof(tl_named_tensor), 8);
    if (!w->kv || !w->tensors) return tl_set_error(TL_ERR_NOMEM, "gguf: %s: out of memory", r->path);

    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        tl_kv *kv = &w->kv[i];
        tl_string key;
        uint32_t type = 0;
        if ((st = read_string(r, &key, "metadata key"))) return st;
        if ((st = tl_weights_strdup(w, key.ptr, key.len, &kv->key))) return st;
        if ((st = read_u32(r, &type, "metadata value type"))) return st;
        r->depth = 0;
        if ((st = read_value(r, (tl_value_type)type, &kv->value, key))) return st;
        w->n_kv++;
        if (tl_string_eq_cstr(kv->key, "general.alignment")) {
            if (kv->value.type != TL_VAL_UINT32)
                return tl_set_error(TL_ERR_FORMAT, "gguf: %s: general.alignment has type %s (must be uint32)", r->path,
                                    tl_value_type_name(kv->value.type));
            uint64_t a = kv->value.u64;
            if (a == 0 || (a & (a - 1)) != 0)
                return tl_set_error(TL_ERR_FORMAT, "gguf: %s: general.alignment %llu is not a power of two", r->path,
                                    (unsigned long long)a);
            w->alignment = a;
        }
    }

    uint64_t *offsets = malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *offsets);
    if (!offsets) return tl_set_error(TL_ERR_NOMEM, "gguf: %s: out of memory", r->path);
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((st = read_tensor_info(r, &w->tensors[i], &offsets[i]))) goto done;
        w->n_tensors++;
    }

    /* the data section starts at the next multiple of the alignment */
    size_t data_start = r->pos;
    if (data_start % w->alignment) data_start += w->alignment - data_start % w->alignment;
    if (n_tensors > 0 && data_start > r->size) {
        st = tl_set_error(TL_ERR_FORMAT, "gguf: %s: data section at offset %zu starts past the end of the file (%zu bytes)",
                          r->path, data_start, r->size);
        goto done;
    }
    for (int64_t i = 0; i < w->n_tensors; i++) {
        tl_named_tensor *nt = &w->tensors[i];
        const tl_string nm = nt->name;
        if (offsets[i] % w->alignment) {
            st = tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' offset %llu is not a multiple of the alignment %llu",
                              r->path, clip(nm.len), nm.ptr, (unsigned long long)offsets[i],
                              (unsigned long long)w->alignment);
            goto done;
        }
        size_t avail = r->size - data_start;
        if (offsets[i] > avail || nt->tensor.nbytes > avail - offsets[i]) {
            st = tl_set_error(TL_ERR_FORMAT, "gguf: %s: tensor '%.*s' extends past end of file (offset %llu, size %zu, file %zu)",
                              r->path, clip(nm.len), nm.ptr, (unsigned long long)(data_start + offsets[i]),
                              nt->tensor.nbytes, r->size);
            goto done;
        }
        nt->tensor.data = r->base + data_start + offsets[i];
        nt->tensor.owner = w->maps[0];
    }
    st = tl_weights_check_overlaps(w, "gguf", r->path, offsets);
done:
    free(offsets);
    return st;
}

static tl_status parse_gguf(tl_weights *w, const char *path, const uint8_t *data, size_t size) {
    reader r = {data, size, 0, path, w, 0};
    return parse(&r);
}

tl_status tl_gguf_open(const char *path, tl_weights **out) {
    return tl_weights_open_mapped(path, TL_FORMAT_GGUF, "gguf", parse_gguf, out);
}

/* ---------------------------------------------------------------- dispatch by content */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

tl_status tl_weights_open(const char *path, tl_weights **out) {
    *out = NULL;
    if (!path) return tl_set_error(TL_ERR_INVALID, "open: path is NULL");
    if (ends_with(path, ".index.json")) return tl_safetensors_open_index(path, out);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return tl_hf_open(path, out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return tl_set_error(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO, "%s: %s", path, strerror(e));
    }
    unsigned char head[40] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    fclose(f);
    if (got >= 4 && memcmp(head, "GGUF", 4) == 0) return tl_gguf_open(path, out);
    if (got >= 4 && memcmp(head, "FUGG", 4) == 0)
        return tl_set_error(TL_ERR_UNSUPPORTED, "gguf: %s: big-endian GGUF is not supported", path);
    if (got >= TL_NATIVE_MAGIC_LEN && memcmp(head, TL_NATIVE_MAGIC, TL_NATIVE_MAGIC_LEN) == 0)
        return tl_native_open(path, out);
    /* a .gguf without the magic (empty, truncated, corrupt) gets the GGUF reader's message */
    if (ends_with(path, ".gguf")) return tl_gguf_open(path, out);
    if (ends_with(path, ".tl")) return tl_native_open(path, out);
    /* safetensors: u64 header length, then the JSON object's '{' */
    bool safetensors_like = got > 8 && head[8] == '{';
    if (!safetensors_like && size >= 0 && tl_llama2c_sniff(head, got, (size_t)size, ends_with(path, ".bin")))
        return tl_llama2c_open(path, out);
    return tl_safetensors_open(path, out);
}

/* ---------------------------------------------------------------- writing */

typedef tl_file_writer writer;

static void put(writer *wr, const void *p, size_t n) { tl_file_put(wr, p, n); }
static void put_u32(writer *wr, uint32_t v) { put(wr, &v, 4); }
static void put_u64(writer *wr, uint64_t v) { put(wr, &v, 8); }
static void put_string(writer *wr, tl_string s) {
    put_u64(wr, s.len);
    put(wr, s.ptr, s.len);
}

static tl_status check_value(const tl_value *v, tl_string key, int depth) {
    if ((unsigned)v->type >= TL_VAL_TYPE_COUNT)
        return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s' has unknown value type %d", clip(key.len), key.ptr, v->type);
    if (v->type == TL_VAL_STRING && v->str.len && !v->str.ptr)
        return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s': string without data", clip(key.len), key.ptr);
    if (v->type != TL_VAL_ARRAY) return TL_OK;
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s': arrays nested deeper than %d", clip(key.len), key.ptr,
                            GGUF_MAX_ARRAY_DEPTH);
    if ((unsigned)v->arr.elem_type >= TL_VAL_TYPE_COUNT)
        return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s': unknown array element type %d", clip(key.len), key.ptr,
                            v->arr.elem_type);
    if (v->arr.n && !v->arr.data)
        return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s': array without data", clip(key.len), key.ptr);
    if (v->arr.elem_type == TL_VAL_ARRAY) {
        const tl_value *items = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++) {
            if (items[i].type != TL_VAL_ARRAY)
                return tl_set_error(TL_ERR_INVALID, "gguf write: key '%.*s': element %llu of an array of arrays is a %s",
                                    clip(key.len), key.ptr, (unsigned long long)i, tl_value_type_name(items[i].type));
            tl_status st = check_value(&items[i], key, depth + 1);
            if (st) return st;
        }
    }
    return TL_OK;
}

static void put_value(writer *wr, const tl_value *v, bool with_type) {
    if (with_type) put_u32(wr, (uint32_t)v->type);
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        float f32;
        uint64_t u64;
        double f64;
    } x = {0};
    size_t n = tl_value_type_size(v->type);
    switch (v->type) {
    case TL_VAL_UINT8: case TL_VAL_INT8: x.u8 = (uint8_t)v->u64; break;
    case TL_VAL_UINT16: case TL_VAL_INT16: x.u16 = (uint16_t)v->u64; break;
    case TL_VAL_UINT32: case TL_VAL_INT32: x.u32 = (uint32_t)v->u64; break;
    case TL_VAL_UINT64: case TL_VAL_INT64: x.u64 = v->u64; break;
    case TL_VAL_FLOAT32: x.f32 = (float)v->f64; break;
    case TL_VAL_FLOAT64: x.f64 = v->f64; break;
    case TL_VAL_BOOL: x.u8 = v->b ? 1 : 0; break;
    case TL_VAL_STRING: put_string(wr, v->str); return;
    case TL_VAL_ARRAY:
        put_u32(wr, (uint32_t)v->arr.elem_type);
        put_u64(wr, v->arr.n);
        if (tl_value_type_size(v->arr.elem_type)) {
            put(wr, v->arr.data, (size_t)v->arr.n * tl_value_type_size(v->arr.elem_type));
        } else if (v->arr.elem_type == TL_VAL_STRING) {
            const tl_string *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) put_string(wr, s[i]);
        } else {
            const tl_value *items = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) put_value(wr, &items[i], false);
        }
        return;
    default: return;
    }
    put(wr, &x, n);
}

/* The one-shot writer's data source: the descriptors' own pointers. */
static tl_status descs_data(void *user, int64_t i, size_t nbytes, const void **data) {
    (void)nbytes;
    *data = ((const tl_gguf_tensor_desc *)user)[i].data;
    return TL_OK;
}

tl_status tl_gguf_write(const char *path, uint32_t version, const tl_kv *kvs, int64_t n_kv,
                        const tl_gguf_tensor_desc *tensors, int64_t n_tensors) {
    return tl_gguf_write_stream(path, version, kvs, n_kv, tensors, n_tensors, NULL, NULL);
}

tl_status tl_gguf_write_stream(const char *path, uint32_t version, const tl_kv *kvs, int64_t n_kv,
                               const tl_gguf_tensor_desc *tensors, int64_t n_tensors, tl_tensor_data_fn data,
                               void *user) {
    if (!path) return tl_set_error(TL_ERR_INVALID, "gguf write: path is NULL");
    if (version != 2 && version != 3)
        return tl_set_error(TL_ERR_INVALID, "gguf write: version %u (2 or 3 can be written)", version);
    if (n_kv < 0 || n_tensors < 0 || (n_kv && !kvs) || (n_tensors && !tensors))
        return tl_set_error(TL_ERR_INVALID, "gguf write: bad counts");

    /* validate everything before the file is created */
    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < n_kv; i++) {
        tl_status st = check_value(&kvs[i].value, kvs[i].key, 0);
        if (st) return st;
        for (int64_t j = 0; j < i; j++)
            if (tl_string_cmp(kvs[i].key, kvs[j].key) == 0)
                return tl_set_error(TL_ERR_INVALID, "gguf write: duplicate key '%.*s'", clip(kvs[i].key.len), kvs[i].key.ptr);
        if (tl_string_eq_cstr(kvs[i].key, "general.alignment")) {
            const tl_value *v = &kvs[i].value;
            if (v->type != TL_VAL_UINT32 || v->u64 == 0 || (v->u64 & (v->u64 - 1)))
                return tl_set_error(TL_ERR_INVALID, "gguf write: general.alignment must be a uint32 power of two");
            alignment = v->u64;
        }
    }
    size_t *sizes = malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *sizes);
    if (!sizes) return tl_set_error(TL_ERR_NOMEM, "gguf write: out of memory");
    tl_status st = tl_writer_check_tensors(tensors, n_tensors, true, data == NULL, sizes, "gguf write");
    if (st) {
        free(sizes);
        return st;
    }

    writer wr;
    if ((st = tl_file_writer_open(&wr, path, "gguf write"))) {
        free(sizes);
        return st;
    }
    put_u32(&wr, GGUF_MAGIC);
    put_u32(&wr, version);
    put_u64(&wr, (uint64_t)n_tensors);
    put_u64(&wr, (uint64_t)n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        put_string(&wr, kvs[i].key);
        put_value(&wr, &kvs[i].value, true);
    }
    uint64_t offset = 0;
    for (int64_t i = 0; i < n_tensors; i++) {
        const tl_gguf_tensor_desc *t = &tensors[i];
        put_string(&wr, (tl_string){t->name, strlen(t->name)});
        put_u32(&wr, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&wr, (uint64_t)t->ne[d]);
        put_u32(&wr, (uint32_t)t->dtype);
        put_u64(&wr, offset);
        offset += sizes[i];
        if (offset % alignment) offset += alignment - offset % alignment;
    }
    if (n_tensors > 0) {
        tl_file_put_zeros(&wr, (size_t)((alignment - wr.pos % alignment) % alignment));
        st = tl_file_put_tensors(&wr, n_tensors, sizes, alignment, data ? data : descs_data,
                                 data ? user : (void *)tensors);
    }
    free(sizes);
    return tl_file_writer_close(&wr, st);
}
