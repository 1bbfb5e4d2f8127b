/* The torchless native format (.tl): reader and writer. docs/format.md is the spec.
 *
 * Layout (little-endian): 8-byte magic "TLESS\0\0\0", u32 version (1), u64 length N of
 * the header; N bytes of UTF-8 JSON {"metadata": {...}, "tensors": {...}}; zeros up to
 * the next multiple of 64; the payload. Every tensor's offset is relative to the
 * payload and a multiple of 64.
 *
 * Metadata holds GGUF keys with their GGUF value types, so GGUF -> .tl -> GGUF gives
 * the same metadata: {"key": {"type": "uint32", "value": 5}}; arrays are
 * "array[T]" with a JSON list; arrays of arrays are "array[array]" whose items are
 * typed values themselves. JSON cannot say everything a GGUF value can, so: a float
 * that is NaN or infinite is the string "nan", "inf" or "-inf"; a string that is not
 * UTF-8 is {"hex": "..."}; a uint64 above 2^63 is a plain JSON integer.
 *
 * The reader maps the file and checks every offset and size before a view is made;
 * tensor data is used in place (zero copies). The metadata strings point into the
 * parsed JSON, which lives in the table's arena.
 */
#include "formats/json.h"
#include "formats/weights.h"
#include "formats/writer.h"

#include "core/dtype.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NATIVE_VERSION 1
#define NATIVE_ALIGNMENT 64
#define NATIVE_PREFIX 20 /* magic + version + header length */
#define MAX_ARRAY_DEPTH 8

#define SHOW(len) ((int)((len) > 120 ? 120 : (len)))

/* ================================================================ reading */

typedef struct reader {
    tl_weights *w;
    const char *path;
} reader;

/* "uint32" -> TL_VAL_UINT32; "array[string]" -> ARRAY + STRING; "array[array]" -> ARRAY + ARRAY. */
static bool parse_type(const char *s, size_t len, tl_value_type *type, tl_value_type *elem) {
    for (int t = 0; t < TL_VAL_TYPE_COUNT; t++) {
        const char *name = tl_value_type_name((tl_value_type)t);
        size_t n = strlen(name);
        if (t != TL_VAL_ARRAY && len == n && memcmp(s, name, n) == 0) {
            *type = (tl_value_type)t;
            return true;
        }
    }
    if (len > 7 && memcmp(s, "array[", 6) == 0 && s[len - 1] == ']') {
        const char *inner = s + 6;
        size_t n = len - 7;
        if (n == 5 && memcmp(inner, "array", 5) == 0) {
            *type = TL_VAL_ARRAY;
            *elem = TL_VAL_ARRAY;
            return true;
        }
        tl_value_type t, unused;
        if (parse_type(inner, n, &t, &unused) && t != TL_VAL_ARRAY) {
            *type = TL_VAL_ARRAY;
            *elem = t;
            return true;
        }
    }
    return false;
}

static tl_status bad(reader *r, tl_string key, const tl_json *v, const char *problem) {
    return tl_set_error(TL_ERR_FORMAT, "tl: %s: metadata '%.*s': %s (header line %u, column %u)", r->path,
                        SHOW(key.len), key.ptr, problem, v->line, v->column);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A JSON string, or {"hex": "..."} for bytes that are not UTF-8. */
static tl_status decode_string(reader *r, tl_string key, const tl_json *v, tl_string *out) {
    if (v->kind == TL_JSON_STRING) {
        *out = (tl_string){v->string.ptr, v->string.len};
        return TL_OK;
    }
    const tl_json *hex = tl_json_get(v, "hex");
    if (v->kind != TL_JSON_OBJECT || tl_json_len(v) != 1 || !hex || hex->kind != TL_JSON_STRING || hex->string.len % 2)
        return bad(r, key, v, "a string must be a JSON string or {\"hex\": even-length hex digits}");
    size_t n = hex->string.len / 2;
    char *bytes = tl_arena_alloc(&r->w->arena, n + 1, 1);
    if (!bytes) return tl_set_error(TL_ERR_NOMEM, "tl: %s: out of memory", r->path);
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(hex->string.ptr[2 * i]), lo = hex_digit(hex->string.ptr[2 * i + 1]);
        if (hi < 0 || lo < 0) return bad(r, key, hex, "\"hex\" holds a character that is not a hex digit");
        bytes[i] = (char)(hi << 4 | lo);
    }
    bytes[n] = '\0';
    *out = (tl_string){bytes, n};
    return TL_OK;
}

/* A number or bool of `type` into v (tl_value's representation). */
static tl_status decode_scalar(reader *r, tl_string key, tl_value_type type, const tl_json *j, tl_value *v) {
    v->type = type;
    if (type == TL_VAL_BOOL) {
        if (j->kind != TL_JSON_BOOL) return bad(r, key, j, "expected true or false");
        v->b = j->boolean;
        return TL_OK;
    }
    if (type == TL_VAL_FLOAT32 || type == TL_VAL_FLOAT64) {
        double d;
        if (j->kind == TL_JSON_STRING) {
            if (strcmp(j->string.ptr, "nan") == 0) d = NAN;
            else if (strcmp(j->string.ptr, "inf") == 0) d = INFINITY;
            else if (strcmp(j->string.ptr, "-inf") == 0) d = -INFINITY;
            else return bad(r, key, j, "a float must be a number, \"nan\", \"inf\" or \"-inf\"");
        } else if (j->kind == TL_JSON_NUMBER) {
            d = j->number.f64;
            if (type == TL_VAL_FLOAT32 && isinf((float)d)) return bad(r, key, j, "number out of float32 range");
        } else {
            return bad(r, key, j, "expected a number");
        }
        v->f64 = type == TL_VAL_FLOAT32 ? (double)(float)d : d;
        return TL_OK;
    }
    if (j->kind != TL_JSON_NUMBER) return bad(r, key, j, "expected an integer");
    int bits = (int)tl_value_type_size(type) * 8;
    bool is_signed = type == TL_VAL_INT8 || type == TL_VAL_INT16 || type == TL_VAL_INT32 || type == TL_VAL_INT64;
    if (j->number.is_int) {
        int64_t x = j->number.i64;
        if (is_signed) {
            if (bits < 64 && (x < -(INT64_C(1) << (bits - 1)) || x >= (INT64_C(1) << (bits - 1))))
                return bad(r, key, j, "integer out of range for its type");
            v->i64 = x;
        } else {
            if (x < 0 || (bits < 64 && (uint64_t)x >> bits)) return bad(r, key, j, "integer out of range for its type");
            v->u64 = (uint64_t)x;
        }
        return TL_OK;
    }
    /* beyond int64: only a uint64 in plain integer syntax (2^63 .. 2^64-1) */
    const char *raw = j->number.raw;
    bool digits = type == TL_VAL_UINT64 && j->number.raw_len > 0 && j->number.raw_len <= 20;
    for (size_t i = 0; digits && i < j->number.raw_len; i++) digits = raw[i] >= '0' && raw[i] <= '9';
    if (!digits) return bad(r, key, j, "expected an integer in range for its type");
    uint64_t x = 0;
    for (size_t i = 0; i < j->number.raw_len; i++) {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, (uint64_t)(raw[i] - '0'), &x))
            return bad(r, key, j, "integer out of range for uint64");
    }
    v->u64 = x;
    return TL_OK;
}

static tl_status decode_value(reader *r, tl_string key, tl_value_type type, tl_value_type elem, const tl_json *j,
                              tl_value *v, int depth);

/* {"type": ..., "value": ...} */
static tl_status decode_typed(reader *r, tl_string key, const tl_json *entry, tl_value *v, int depth) {
    const tl_json *type = tl_json_get(entry, "type"), *value = tl_json_get(entry, "value");
    if (entry->kind != TL_JSON_OBJECT || tl_json_len(entry) != 2 || !type || !value || type->kind != TL_JSON_STRING)
        return bad(r, key, entry, "expected {\"type\": name, \"value\": value}");
    tl_value_type t, elem = TL_VAL_UINT8;
    if (!parse_type(type->string.ptr, type->string.len, &t, &elem)) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown value type '%.40s'", type->string.ptr);
        return bad(r, key, type, msg);
    }
    return decode_value(r, key, t, elem, value, v, depth);
}

static tl_status decode_value(reader *r, tl_string key, tl_value_type type, tl_value_type elem, const tl_json *j,
                              tl_value *v, int depth) {
    if (type == TL_VAL_STRING) {
        v->type = TL_VAL_STRING;
        return decode_string(r, key, j, &v->str);
    }
    if (type != TL_VAL_ARRAY) return decode_scalar(r, key, type, j, v);
    if (depth >= MAX_ARRAY_DEPTH) return bad(r, key, j, "arrays nested too deeply");
    if (j->kind != TL_JSON_ARRAY) return bad(r, key, j, "expected a JSON array");
    size_t n = tl_json_len(j);
    v->type = TL_VAL_ARRAY;
    v->arr.elem_type = elem;
    v->arr.n = n;
    size_t esize = tl_value_type_size(elem);
    size_t item = esize ? esize : elem == TL_VAL_STRING ? sizeof(tl_string) : sizeof(tl_value);
    void *data = tl_arena_alloc_array(&r->w->arena, n, item, 8);
    if (!data) return tl_set_error(TL_ERR_NOMEM, "tl: %s: out of memory for metadata '%.*s'", r->path, SHOW(key.len), key.ptr);
    v->arr.data = data;
    tl_status s;
    for (size_t i = 0; i < n; i++) {
        const tl_json *e = tl_json_index(j, i);
        if (elem == TL_VAL_STRING) {
            if ((s = decode_string(r, key, e, (tl_string *)data + i))) return s;
        } else if (elem == TL_VAL_ARRAY) {
            tl_value *x = (tl_value *)data + i;
            if ((s = decode_typed(r, key, e, x, depth + 1))) return s;
            if (x->type != TL_VAL_ARRAY) return bad(r, key, e, "an item of an array[array] must be an array");
        } else {
            tl_value x;
            if ((s = decode_scalar(r, key, elem, e, &x))) return s;
            uint8_t *dst = (uint8_t *)data + i * esize;
            union {
                uint8_t u8;
                uint16_t u16;
                uint32_t u32;
                uint64_t u64;
                float f32;
                double f64;
            } p = {0};
            switch (elem) {
            case TL_VAL_UINT8: case TL_VAL_INT8: p.u8 = (uint8_t)x.u64; break;
            case TL_VAL_UINT16: case TL_VAL_INT16: p.u16 = (uint16_t)x.u64; break;
            case TL_VAL_UINT32: case TL_VAL_INT32: p.u32 = (uint32_t)x.u64; break;
            case TL_VAL_UINT64: case TL_VAL_INT64: p.u64 = x.u64; break;
            case TL_VAL_FLOAT32: p.f32 = (float)x.f64; break;
            case TL_VAL_FLOAT64: p.f64 = x.f64; break;
            case TL_VAL_BOOL: p.u8 = x.b; break;
            default: break;
            }
            memcpy(dst, &p, esize);
        }
    }
    return TL_OK;
}

static tl_status read_metadata(reader *r, const tl_json *md) {
    tl_weights *w = r->w;
    size_t n = tl_json_len(md);
    w->kv = tl_arena_alloc_array(&w->arena, n, sizeof(tl_kv), 8);
    if (!w->kv) return tl_set_error(TL_ERR_NOMEM, "tl: %s: out of memory", r->path);
    for (size_t i = 0; i < n; i++) {
        const tl_json_member *m = &md->object.members[i];
        tl_kv *kv = &w->kv[i];
        kv->key = (tl_string){m->key, m->key_len};
        tl_status s = decode_typed(r, kv->key, &m->value, &kv->value, 0);
        if (s) return s;
        w->n_kv++;
    }
    return TL_OK;
}

static tl_status bad_tensor(reader *r, const tl_json_member *m, const tl_json *v, const char *problem) {
    return tl_set_error(TL_ERR_FORMAT, "tl: %s: tensor '%.*s': %s (header line %u, column %u)", r->path,
                        SHOW(m->key_len), m->key, problem, v->line, v->column);
}

/* One "tensors" entry: {"dtype", "shape" (NumPy order), "offset", "nbytes"}. */
static tl_status read_tensor(reader *r, const tl_json_member *m, tl_named_tensor *nt, uint64_t *offset) {
    const tl_json *e = &m->value;
    if (memchr(m->key, '\0', m->key_len)) return bad_tensor(r, m, e, "name contains a NUL character");
    const tl_json *dtype = tl_json_get(e, "dtype"), *shape = tl_json_get(e, "shape");
    const tl_json *off = tl_json_get(e, "offset"), *nbytes = tl_json_get(e, "nbytes");
    if (e->kind != TL_JSON_OBJECT || tl_json_len(e) != 4 || !dtype || !shape || !off || !nbytes)
        return bad_tensor(r, m, e, "expected exactly {\"dtype\", \"shape\", \"offset\", \"nbytes\"}");
    nt->name = (tl_string){m->key, m->key_len};
    tl_tensor *t = &nt->tensor;
    tl_dtype dt;
    if (dtype->kind != TL_JSON_STRING || !tl_dtype_from_name(dtype->string.ptr, &dt) ||
        strlen(dtype->string.ptr) != dtype->string.len) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown dtype %.40s", dtype->kind == TL_JSON_STRING ? dtype->string.ptr : "(not a string)");
        tl_set_error(TL_ERR_UNSUPPORTED, "tl: %s: tensor '%.*s': %s", r->path, SHOW(m->key_len), m->key, msg);
        return TL_ERR_UNSUPPORTED;
    }
    t->dtype = dt;
    size_t nd = tl_json_len(shape);
    if (shape->kind != TL_JSON_ARRAY || nd < 1 || nd > TL_MAX_DIMS)
        return bad_tensor(r, m, shape, "shape must be a list of 1 to 4 dimensions");
    for (int i = 0; i < TL_MAX_DIMS; i++) t->ne[i] = 1;
    t->n_dims = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        const tl_json *d = tl_json_index(shape, i);
        if (d->kind != TL_JSON_NUMBER || !d->number.is_int || d->number.i64 < 0)
            return bad_tensor(r, m, d, "a dimension must be a non-negative integer");
        t->ne[nd - 1 - i] = d->number.i64; /* NumPy order -> GGML order */
    }
    int64_t bs = tl_dtype_block_size(dt);
    if (t->ne[0] % bs) return bad_tensor(r, m, shape, "its rows are not a whole number of blocks of its dtype");
    int64_t elements = 1;
    for (int i = 0; i < TL_MAX_DIMS; i++)
        if (t->ne[i] && __builtin_mul_overflow(elements, t->ne[i], &elements))
            return bad_tensor(r, m, shape, "shape is too large");
    size_t bytes = tl_dtype_row_size(dt, t->ne[0]);
    if (t->ne[0] > 0 && bytes == 0) return bad_tensor(r, m, shape, "shape is too large");
    for (int i = 1; i < TL_MAX_DIMS; i++)
        if (tl_mul_overflows(bytes, (size_t)t->ne[i], &bytes)) return bad_tensor(r, m, shape, "shape is too large");
    t->nbytes = bytes;
    if (nbytes->kind != TL_JSON_NUMBER || !nbytes->number.is_int || nbytes->number.i64 < 0 ||
        (uint64_t)nbytes->number.i64 != bytes) {
        char msg[160];
        snprintf(msg, sizeof msg, "nbytes %.30s does not match its dtype %s and shape (%zu bytes)",
                 nbytes->kind == TL_JSON_NUMBER ? nbytes->number.raw : "(not a number)", tl_dtype_name(dt), bytes);
        return bad_tensor(r, m, nbytes, msg);
    }
    if (off->kind != TL_JSON_NUMBER || !off->number.is_int || off->number.i64 < 0)
        return bad_tensor(r, m, off, "offset must be a non-negative integer");
    *offset = (uint64_t)off->number.i64;
    return TL_OK;
}

static tl_status parse(reader *r, const uint8_t *base, size_t size) {
    tl_weights *w = r->w;
    if (size < NATIVE_PREFIX)
        return tl_set_error(TL_ERR_FORMAT, "tl: %s: file truncated in the %d-byte prefix (file is %zu bytes)", r->path,
                            NATIVE_PREFIX, size);
    if (memcmp(base, TL_NATIVE_MAGIC, TL_NATIVE_MAGIC_LEN) != 0)
        return tl_set_error(TL_ERR_FORMAT, "tl: %s: bad magic (expected \"TLESS\\0\\0\\0\")", r->path);
    uint32_t version;
    uint64_t json_len;
    memcpy(&version, base + 8, 4);
    memcpy(&json_len, base + 12, 8);
    if (version != NATIVE_VERSION)
        return tl_set_error(TL_ERR_UNSUPPORTED, "tl: %s: unknown format version %u (1 is supported)", r->path, version);
    if (json_len > size - NATIVE_PREFIX)
        return tl_set_error(TL_ERR_FORMAT, "tl: %s: header of %llu bytes extends past end of file (%zu bytes)", r->path,
                            (unsigned long long)json_len, size);
    w->version = version;
    w->alignment = NATIVE_ALIGNMENT;
    char what[512];
    snprintf(what, sizeof what, "tl: %s: header", r->path);
    const tl_json *top;
    tl_status s = tl_json_parse((const char *)base + NATIVE_PREFIX, (size_t)json_len, &w->arena, &top, what);
    if (s) return s;
    const tl_json *md = tl_json_get(top, "metadata"), *tensors = tl_json_get(top, "tensors");
    if (top->kind != TL_JSON_OBJECT || !md || md->kind != TL_JSON_OBJECT || !tensors || tensors->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "tl: %s: header must be an object with \"metadata\" and \"tensors\" objects",
                            r->path);
    if ((s = read_metadata(r, md))) return s;

    size_t n = tl_json_len(tensors);
    w->tensors = tl_arena_alloc_array(&w->arena, n, sizeof(tl_named_tensor), 8);
    uint64_t *offsets = malloc((n ? n : 1) * sizeof *offsets);
    if (!w->tensors || !offsets) {
        free(offsets);
        return tl_set_error(TL_ERR_NOMEM, "tl: %s: out of memory", r->path);
    }
    size_t data_start = NATIVE_PREFIX + (size_t)json_len;
    data_start += (NATIVE_ALIGNMENT - data_start % NATIVE_ALIGNMENT) % NATIVE_ALIGNMENT;
    if (n > 0 && data_start > size) {
        free(offsets);
        return tl_set_error(TL_ERR_FORMAT, "tl: %s: payload at offset %zu starts past the end of the file (%zu bytes)",
                            r->path, data_start, size);
    }
    size_t avail = data_start <= size ? size - data_start : 0;
    for (size_t i = 0; i < n && !s; i++) {
        const tl_json_member *m = &tensors->object.members[i];
        tl_named_tensor *nt = &w->tensors[i];
        if ((s = read_tensor(r, m, nt, &offsets[i]))) break;
        w->n_tensors++;
        if (offsets[i] % NATIVE_ALIGNMENT) {
            s = tl_set_error(TL_ERR_FORMAT, "tl: %s: tensor '%.*s' offset %llu is not a multiple of %d", r->path,
                             SHOW(m->key_len), m->key, (unsigned long long)offsets[i], NATIVE_ALIGNMENT);
        } else if (offsets[i] > avail || nt->tensor.nbytes > avail - offsets[i]) {
            s = tl_set_error(TL_ERR_FORMAT, "tl: %s: tensor '%.*s' extends past end of file (offset %llu, size %zu, file %zu)",
                             r->path, SHOW(m->key_len), m->key, (unsigned long long)(data_start + offsets[i]),
                             nt->tensor.nbytes, size);
        } else {
            nt->tensor.data = base + data_start + offsets[i];
            nt->tensor.owner = w->maps[0];
        }
    }
    if (!s) s = tl_weights_check_overlaps(w, "tl", r->path, offsets);
    free(offsets);
    return s;
}

static tl_status parse_native(tl_weights *w, const char *path, const uint8_t *data, size_t size) {
    reader r = {w, path};
    return parse(&r, data, size);
}

tl_status tl_native_open(const char *path, tl_weights **out) {
    return tl_weights_open_mapped(path, TL_FORMAT_NATIVE, "tl", parse_native, out);
}

/* ================================================================ writing */

/* The JSON header, built in memory before the file is created. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void putf(sbuf *b, const char *fmt, ...) TL_PRINTF(2, 3);
static void putf(sbuf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string of UTF-8 bytes (checked by the caller). */
static void put_json_string(sbuf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(b, s + run, i - run);
        run = i + 1;
        if (c == '"') put(b, "\\\"", 2);
        else if (c == '\\') put(b, "\\\\", 2);
        else if (c == '\n') put(b, "\\n", 2);
        else if (c == '\t') put(b, "\\t", 2);
        else putf(b, "\\u%04x", c);
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

/* A metadata string: JSON when it is UTF-8, else {"hex": ...}. */
static void put_string_value(sbuf *b, tl_string s) {
    if (tl_json_utf8_valid(s.ptr, s.len)) {
        put_json_string(b, s.ptr, s.len);
        return;
    }
    static const char digits[] = "0123456789abcdef";
    puts_(b, "{\"hex\": \"");
    for (uint64_t i = 0; i < s.len; i++) {
        char h[2] = {digits[(unsigned char)s.ptr[i] >> 4], digits[(unsigned char)s.ptr[i] & 15]};
        put(b, h, 2);
    }
    puts_(b, "\"}");
}

/* The shortest decimal that reads back as the same float32 / float64. */
static void put_float(sbuf *b, double d, bool f32) {
    if (isnan(d)) return puts_(b, "\"nan\"");
    if (isinf(d)) return puts_(b, d > 0 ? "\"inf\"" : "\"-inf\"");
    if (f32) d = (double)(float)d; /* the value stored, so equal floats print alike */
    char tmp[40];
    for (int prec = f32 ? 1 : 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        double back = strtod(tmp, NULL);
        if (f32 ? (float)back == (float)d : back == d) break;
    }
    /* JSON numbers need a digit before '.', which %g always gives; "inf"/"nan" are handled above */
    puts_(b, tmp);
}

static void put_type_name(sbuf *b, const tl_value *v) {
    if (v->type != TL_VAL_ARRAY) return put_json_string(b, tl_value_type_name(v->type), strlen(tl_value_type_name(v->type)));
    putf(b, "\"array[%s]\"", tl_value_type_name(v->arr.elem_type));
}

static tl_status put_typed(sbuf *b, const tl_value *v, tl_string key, int depth);

static tl_status put_value(sbuf *b, const tl_value *v, tl_string key, int depth) {
    switch (v->type) {
    case TL_VAL_UINT8: case TL_VAL_UINT16: case TL_VAL_UINT32: case TL_VAL_UINT64:
        putf(b, "%llu", (unsigned long long)v->u64);
        return TL_OK;
    case TL_VAL_INT8: case TL_VAL_INT16: case TL_VAL_INT32: case TL_VAL_INT64:
        putf(b, "%lld", (long long)v->i64);
        return TL_OK;
    case TL_VAL_FLOAT32: put_float(b, v->f64, true); return TL_OK;
    case TL_VAL_FLOAT64: put_float(b, v->f64, false); return TL_OK;
    case TL_VAL_BOOL: puts_(b, v->b ? "true" : "false"); return TL_OK;
    case TL_VAL_STRING:
        if (v->str.len && !v->str.ptr)
            return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': string without data", SHOW(key.len), key.ptr);
        put_string_value(b, v->str);
        return TL_OK;
    case TL_VAL_ARRAY: break;
    default:
        return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s' has unknown value type %d", SHOW(key.len), key.ptr,
                            v->type);
    }
    tl_value_type et = v->arr.elem_type;
    if (depth >= MAX_ARRAY_DEPTH)
        return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': arrays nested deeper than %d", SHOW(key.len), key.ptr,
                            MAX_ARRAY_DEPTH);
    if ((unsigned)et >= TL_VAL_TYPE_COUNT)
        return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': unknown array element type %d", SHOW(key.len), key.ptr, et);
    if (v->arr.n && !v->arr.data)
        return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': array without data", SHOW(key.len), key.ptr);
    size_t esize = tl_value_type_size(et);
    put(b, "[", 1);
    for (uint64_t i = 0; i < v->arr.n; i++) {
        if (i) put(b, ", ", 2);
        tl_status s = TL_OK;
        if (et == TL_VAL_STRING) {
            tl_value x = {.type = TL_VAL_STRING};
            x.str = ((const tl_string *)v->arr.data)[i];
            s = put_value(b, &x, key, depth + 1);
        } else if (et == TL_VAL_ARRAY) {
            const tl_value *x = (const tl_value *)v->arr.data + i;
            if (x->type != TL_VAL_ARRAY)
                return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': element %llu of an array of arrays is a %s",
                                    SHOW(key.len), key.ptr, (unsigned long long)i, tl_value_type_name(x->type));
            s = put_typed(b, x, key, depth + 1);
        } else {
            /* packed little-endian elements (GGUF layout) */
            const uint8_t *p = (const uint8_t *)v->arr.data + i * esize;
            tl_value x;
            if (!tl_value_from_packed(et, p, &x))
                return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s': bool element %llu is %u", SHOW(key.len),
                                    key.ptr, (unsigned long long)i, *p);
            s = put_value(b, &x, key, depth + 1);
        }
        if (s) return s;
    }
    put(b, "]", 1);
    return TL_OK;
}

static tl_status put_typed(sbuf *b, const tl_value *v, tl_string key, int depth) {
    puts_(b, "{\"type\": ");
    put_type_name(b, v);
    puts_(b, ", \"value\": ");
    tl_status s = put_value(b, v, key, depth);
    put(b, "}", 1);
    return s;
}

static tl_status build_header(sbuf *b, const tl_kv *kvs, int64_t n_kv, const tl_gguf_tensor_desc *t, int64_t n_t,
                              const size_t *sizes) {
    puts_(b, "{\"metadata\": {");
    for (int64_t i = 0; i < n_kv; i++) {
        tl_string key = kvs[i].key;
        if (key.len && !key.ptr) return tl_set_error(TL_ERR_INVALID, "tl write: key %lld without data", (long long)i);
        if (!tl_json_utf8_valid(key.ptr, key.len))
            return tl_set_error(TL_ERR_INVALID, "tl write: key '%.*s' is not UTF-8", SHOW(key.len), key.ptr);
        for (int64_t j = 0; j < i; j++)
            if (tl_string_cmp(key, kvs[j].key) == 0)
                return tl_set_error(TL_ERR_INVALID, "tl write: duplicate key '%.*s'", SHOW(key.len), key.ptr);
        puts_(b, i ? ",\n  " : "\n  ");
        put_json_string(b, key.ptr, key.len);
        puts_(b, ": ");
        tl_status s = put_typed(b, &kvs[i].value, key, 0);
        if (s) return s;
    }
    puts_(b, "},\n\"tensors\": {");
    uint64_t offset = 0;
    for (int64_t i = 0; i < n_t; i++) {
        size_t len = strlen(t[i].name);
        if (!tl_json_utf8_valid(t[i].name, len))
            return tl_set_error(TL_ERR_INVALID, "tl write: tensor name '%.*s' is not UTF-8", SHOW(len), t[i].name);
        puts_(b, i ? ",\n  " : "\n  ");
        put_json_string(b, t[i].name, len);
        putf(b, ": {\"dtype\": \"%s\", \"shape\": [", tl_dtype_name(t[i].dtype));
        for (int d = t[i].n_dims - 1; d >= 0; d--) putf(b, d == t[i].n_dims - 1 ? "%lld" : ", %lld", (long long)t[i].ne[d]);
        putf(b, "], \"offset\": %llu, ", (unsigned long long)offset);
        putf(b, "\"nbytes\": %zu}", sizes[i]);
        if (__builtin_add_overflow(offset, sizes[i], &offset) ||
            __builtin_add_overflow(offset, (NATIVE_ALIGNMENT - offset % NATIVE_ALIGNMENT) % NATIVE_ALIGNMENT, &offset) ||
            offset > (uint64_t)INT64_MAX)
            return tl_set_error(TL_ERR_INVALID, "tl write: the tensors together are too large");
    }
    puts_(b, "}}\n");
    if (b->oom) return tl_set_error(TL_ERR_NOMEM, "tl write: out of memory building the header");
    return TL_OK;
}

static tl_status descs_data(void *user, int64_t i, size_t nbytes, const void **data) {
    (void)nbytes;
    *data = ((const tl_gguf_tensor_desc *)user)[i].data;
    return TL_OK;
}

tl_status tl_native_write(const char *path, const tl_kv *kvs, int64_t n_kv, const tl_gguf_tensor_desc *tensors,
                          int64_t n_tensors) {
    return tl_native_write_stream(path, kvs, n_kv, tensors, n_tensors, NULL, NULL);
}

tl_status tl_native_write_stream(const char *path, const tl_kv *kvs, int64_t n_kv, const tl_gguf_tensor_desc *tensors,
                                 int64_t n_tensors, tl_tensor_data_fn data, void *user) {
    if (!path) return tl_set_error(TL_ERR_INVALID, "tl write: path is NULL");
    if (n_kv < 0 || n_tensors < 0 || (n_kv && !kvs) || (n_tensors && !tensors))
        return tl_set_error(TL_ERR_INVALID, "tl write: bad counts");
    size_t *sizes = malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *sizes);
    if (!sizes) return tl_set_error(TL_ERR_NOMEM, "tl write: out of memory");
    sbuf header = {0};
    tl_status s = tl_writer_check_tensors(tensors, n_tensors, false, data == NULL, sizes, "tl write");
    if (!s) s = build_header(&header, kvs, n_kv, tensors, n_tensors, sizes);
    tl_file_writer wr;
    if (!s) s = tl_file_writer_open(&wr, path, "tl write");
    if (s) {
        free(sizes);
        free(header.p);
        return s;
    }
    uint32_t version = NATIVE_VERSION;
    uint64_t json_len = header.len;
    tl_file_put(&wr, TL_NATIVE_MAGIC, TL_NATIVE_MAGIC_LEN);
    tl_file_put(&wr, &version, 4);
    tl_file_put(&wr, &json_len, 8);
    tl_file_put(&wr, header.p, header.len);
    tl_file_put_zeros(&wr, (size_t)((NATIVE_ALIGNMENT - wr.pos % NATIVE_ALIGNMENT) % NATIVE_ALIGNMENT));
    s = tl_file_put_tensors(&wr, n_tensors, sizes, NATIVE_ALIGNMENT, data ? data : descs_data,
                            data ? user : (void *)tensors);
    free(sizes);
    free(header.p);
    return tl_file_writer_close(&wr, s);
}
