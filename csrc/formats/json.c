/* Strict JSON (RFC 8259) into an arena DOM. Decisions are listed in json.h.
 *
 * One recursive descent, depth-limited. Children of an array or object are
 * parsed onto one growable stack shared by the whole parse and copied into the
 * arena as one contiguous block when the container closes, so a 100k-element
 * array costs one arena allocation and no per-element linking. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strtod_l */
#endif
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Objects up to this many members are searched linearly and checked for
 * duplicate keys pairwise; bigger ones get a sorted index. */
#define SMALL_OBJECT 8

typedef struct parser {
    const char *text;
    size_t len, pos;
    uint32_t line;     /* 1-based line of pos */
    size_t line_start; /* offset of the first byte of that line */
    int depth;
    tl_arena *arena;
    const char *what;
    tl_json_member *stack; /* pending children of the open containers */
    size_t stack_n, stack_cap;
    locale_t c_locale; /* for strtod_l, created on the first non-integer */
} parser;

/* ---------------------------------------------------------------- errors */

static uint32_t column_of(const parser *p, size_t pos) { return (uint32_t)(pos - p->line_start + 1); }

static tl_status fail_at(const parser *p, size_t pos, const char *fmt, ...) TL_PRINTF(3, 4);
static tl_status fail_at(const parser *p, size_t pos, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tl_set_error(TL_ERR_FORMAT, "%s: line %u, column %u: %s", p->what, p->line,
                        column_of(p, pos), msg);
}

/* A printable description of the byte at pos, for "unexpected X" messages. */
static const char *describe(const parser *p, size_t pos, char buf[16]) {
    if (pos >= p->len) return "end of input";
    unsigned char c = (unsigned char)p->text[pos];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static tl_status out_of_memory(const parser *p) {
    return tl_set_error(TL_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
}

/* ---------------------------------------------------------------- lexing */

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c == ' ' || c == '\t' || c == '\r') {
            p->pos++;
        } else if (c == '\n') {
            p->pos++;
            p->line++;
            p->line_start = p->pos;
        } else {
            break;
        }
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at pos (the caller checked they are inside the string). */
static bool read_hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(s[i]);
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *dst, uint32_t cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xc0 | cp >> 6);
        dst[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xe0 | cp >> 12);
        dst[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        dst[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    dst[0] = (char)(0xf0 | cp >> 18);
    dst[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    dst[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    dst[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), 0 if
 * ill-formed. Unicode 15, table 3-7: no overlongs, no surrogates, <= U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c == 0xe0) len = 3, lo = 0xa0;
    else if (c >= 0xe1 && c <= 0xec) len = 3;
    else if (c == 0xed) len = 3, hi = 0x9f;
    else if (c >= 0xee && c <= 0xef) len = 3;
    else if (c == 0xf0) len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3) len = 4;
    else if (c == 0xf4) len = 4, hi = 0x8f;
    else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

/* The string starting at the '"' at p->pos, decoded into the arena. */
static tl_status parse_string(parser *p, const char **out, size_t *out_len) {
    const size_t start = p->pos;
    const char *t = p->text;
    /* Pass 1: find the closing quote, so the decoded copy (never longer than
     * the raw text) can be allocated once. Stops at a raw control character,
     * which cannot be part of a string. */
    size_t end = start + 1;
    while (end < p->len) {
        unsigned char c = (unsigned char)t[end];
        if (c == '"') break;
        if (c < 0x20)
            return fail_at(p, end, "raw control character 0x%02x in a string (it must be escaped)", c);
        end += c == '\\' ? 2 : 1;
    }
    if (end >= p->len) return fail_at(p, start, "unterminated string");

    char *dst = tl_arena_alloc(p->arena, end - start, 1); /* raw bytes - 1 quote + NUL */
    if (!dst) return out_of_memory(p);
    size_t n = 0, i = start + 1;
    while (i < end) {
        unsigned char c = (unsigned char)t[i];
        if (c < 0x80 && c != '\\') {
            dst[n++] = (char)c;
            i++;
        } else if (c >= 0x80) {
            size_t k = utf8_sequence((const unsigned char *)t + i, end - i);
            if (!k) return fail_at(p, i, "invalid UTF-8 byte 0x%02x in a string", c);
            memcpy(dst + n, t + i, k);
            n += k;
            i += k;
        } else {
            char e = t[i + 1]; /* i + 1 < end: pass 1 stepped over it */
            switch (e) {
            case '"': dst[n++] = '"'; break;
            case '\\': dst[n++] = '\\'; break;
            case '/': dst[n++] = '/'; break;
            case 'b': dst[n++] = '\b'; break;
            case 'f': dst[n++] = '\f'; break;
            case 'n': dst[n++] = '\n'; break;
            case 'r': dst[n++] = '\r'; break;
            case 't': dst[n++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (end - i < 6 || !read_hex4(t + i + 2, &cp))
                    return fail_at(p, i, "\\u must be followed by four hex digits");
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return fail_at(p, i, "lone low surrogate \\u%04X", (unsigned)cp);
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t low;
                    if (end - i < 12 || t[i + 6] != '\\' || t[i + 7] != 'u' || !read_hex4(t + i + 8, &low) ||
                        low < 0xdc00 || low > 0xdfff)
                        return fail_at(p, i, "high surrogate \\u%04X is not followed by a low surrogate \\uDC00-\\uDFFF",
                                       (unsigned)cp);
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    i += 6;
                }
                n += put_utf8(dst + n, cp);
                i += 4; /* plus the 2 below */
                break;
            }
            default: {
                char buf[16];
                return fail_at(p, i + 1, "invalid escape \\%s in a string",
                               describe(p, i + 1, buf));
            }
            }
            i += 2;
        }
    }
    dst[n] = '\0';
    p->pos = end + 1;
    *out = dst;
    *out_len = n;
    return TL_OK;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static tl_status parse_number(parser *p, tl_json *v) {
    const char *t = p->text;
    const size_t start = p->pos;
    size_t i = start;
    bool negative = false, integer = true;
    if (t[i] == '-') {
        negative = true;
        i++;
    }
    if (i >= p->len || !is_digit(t[i])) return fail_at(p, i, "expected a digit after '-'");
    if (t[i] == '0') {
        i++;
        if (i < p->len && is_digit(t[i])) return fail_at(p, start, "numbers may not have leading zeros");
    } else {
        while (i < p->len && is_digit(t[i])) i++;
    }
    const size_t int_end = i;
    if (i < p->len && t[i] == '.') {
        integer = false;
        i++;
        if (i >= p->len || !is_digit(t[i])) return fail_at(p, i, "expected a digit after '.'");
        while (i < p->len && is_digit(t[i])) i++;
    }
    if (i < p->len && (t[i] == 'e' || t[i] == 'E')) {
        integer = false;
        i++;
        if (i < p->len && (t[i] == '+' || t[i] == '-')) i++;
        if (i >= p->len || !is_digit(t[i])) return fail_at(p, i, "expected a digit in the exponent");
        while (i < p->len && is_digit(t[i])) i++;
    }

    size_t n = i - start;
    char *raw = tl_arena_alloc(p->arena, n + 1, 1);
    if (!raw) return out_of_memory(p);
    memcpy(raw, t + start, n);
    raw[n] = '\0';
    v->kind = TL_JSON_NUMBER;
    v->number.raw = raw;
    v->number.raw_len = n;
    p->pos = i;

    if (integer) {
        /* Exact accumulation; falls through to strtod beyond int64. */
        uint64_t mag = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        bool fits = true;
        for (size_t k = start + negative; k < int_end && fits; k++) {
            uint64_t d = (uint64_t)(t[k] - '0');
            if (mag > (limit - d) / 10) fits = false;
            else mag = mag * 10 + d;
        }
        if (fits) {
            v->number.is_int = true;
            if (negative) {
                v->number.i64 = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
                v->number.f64 = mag == 0 ? -0.0 : (double)v->number.i64;
            } else {
                v->number.i64 = (int64_t)mag;
                v->number.f64 = (double)v->number.i64; /* int -> double rounds to nearest */
            }
            return TL_OK;
        }
    }
    /* The grammar was checked above, so strtod_l consumes exactly raw. The C
     * locale keeps '.' the decimal point whatever the process locale is. */
    if (!p->c_locale) {
        p->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        if (!p->c_locale) return out_of_memory(p);
    }
    double d = strtod_l(raw, NULL, p->c_locale);
    if (isinf(d))
        return fail_at(p, start, "number %.*s%s is too large for a double", n > 40 ? 40 : (int)n, raw,
                       n > 40 ? "..." : "");
    v->number.f64 = d;
    return TL_OK;
}

static tl_status expect_literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) {
        char buf[16];
        return fail_at(p, p->pos, "unexpected %s, expected a value (did you mean '%s'?)",
                       describe(p, p->pos, buf), word);
    }
    p->pos += n;
    return TL_OK;
}

/* ---------------------------------------------------------------- values */

static tl_status parse_value(parser *p, tl_json *v);

static tl_status push(parser *p, const char *key, size_t key_len, const tl_json *v) {
    if (p->stack_n == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 256;
        tl_json_member *s = cap < SIZE_MAX / sizeof *s ? realloc(p->stack, cap * sizeof *s) : NULL;
        if (!s) return out_of_memory(p);
        p->stack = s;
        p->stack_cap = cap;
    }
    tl_json_member *m = &p->stack[p->stack_n++];
    m->key = key;
    m->key_len = key_len;
    m->value = *v;
    return TL_OK;
}

static tl_status enter(parser *p) {
    if (++p->depth > TL_JSON_MAX_DEPTH)
        return fail_at(p, p->pos, "nesting deeper than %d arrays/objects", TL_JSON_MAX_DEPTH);
    p->pos++; /* the '[' or '{' */
    return TL_OK;
}

static tl_status parse_array(parser *p, tl_json *v) {
    tl_status s = enter(p);
    if (s) return s;
    const size_t base = p->stack_n;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            tl_json item;
            if ((s = parse_value(p, &item)) || (s = push(p, NULL, 0, &item))) return s;
            skip_ws(p);
            char c = p->pos < p->len ? p->text[p->pos] : 0;
            if (c == ',') {
                p->pos++;
            } else if (c == ']') {
                p->pos++;
                break;
            } else {
                char buf[16];
                return fail_at(p, p->pos, "unexpected %s, expected ',' or ']' after an array element",
                               describe(p, p->pos, buf));
            }
        }
    }
    size_t n = p->stack_n - base;
    tl_json *items = NULL;
    if (n) {
        items = tl_arena_alloc_array(p->arena, n, sizeof *items, _Alignof(tl_json));
        if (!items) return out_of_memory(p);
        for (size_t i = 0; i < n; i++) items[i] = p->stack[base + i].value;
    }
    p->stack_n = base;
    p->depth--;
    v->kind = TL_JSON_ARRAY;
    v->array.items = items;
    v->array.n = n;
    return TL_OK;
}

static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return (an > bn) - (an < bn);
}

/* Sorts pointers into one contiguous member array: by key, then by position. */
static int member_ptr_cmp(const void *x, const void *y) {
    const tl_json_member *a = *(const tl_json_member *const *)x, *b = *(const tl_json_member *const *)y;
    int c = key_cmp(a->key, a->key_len, b->key, b->key_len);
    if (c) return c;
    return (a > b) - (a < b);
}

static tl_status duplicate_key(const parser *p, const tl_json_member *later) {
    int n = later->key_len > 200 ? 200 : (int)later->key_len;
    return tl_set_error(TL_ERR_FORMAT, "%s: line %u, column %u: duplicate object key '%.*s'%s (this is its value)",
                        p->what, later->value.line, later->value.column, n, later->key,
                        later->key_len > 200 ? "..." : "");
}

/* Rejects duplicate keys; for big objects also leaves the sorted index. */
static tl_status index_members(parser *p, tl_json *v) {
    const tl_json_member *m = v->object.members;
    size_t n = v->object.n;
    if (n <= SMALL_OBJECT) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (key_cmp(m[i].key, m[i].key_len, m[j].key, m[j].key_len) == 0) return duplicate_key(p, &m[i]);
        return TL_OK;
    }
    if (n > UINT32_MAX) return fail_at(p, p->pos, "object has more than %u members", (unsigned)UINT32_MAX);
    const tl_json_member **sorted = malloc(n * sizeof *sorted);
    uint32_t *order = tl_arena_alloc_array(p->arena, n, sizeof *order, _Alignof(uint32_t));
    if (!sorted || !order) {
        free(sorted);
        return out_of_memory(p);
    }
    for (size_t i = 0; i < n; i++) sorted[i] = &m[i];
    qsort(sorted, n, sizeof *sorted, member_ptr_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && key_cmp(sorted[i - 1]->key, sorted[i - 1]->key_len, sorted[i]->key, sorted[i]->key_len) == 0) {
            tl_status s = duplicate_key(p, sorted[i]);
            free(sorted);
            return s;
        }
        order[i] = (uint32_t)(sorted[i] - m);
    }
    free(sorted);
    v->object.order = order;
    return TL_OK;
}

static tl_status parse_object(parser *p, tl_json *v) {
    tl_status s = enter(p);
    if (s) return s;
    const size_t base = p->stack_n;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != '"') {
                char buf[16];
                return fail_at(p, p->pos, "unexpected %s, expected a string key%s", describe(p, p->pos, buf),
                               p->stack_n == base ? " or '}'" : "");
            }
            const char *key;
            size_t key_len;
            if ((s = parse_string(p, &key, &key_len))) return s;
            skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != ':') {
                char buf[16];
                return fail_at(p, p->pos, "unexpected %s, expected ':' after an object key",
                               describe(p, p->pos, buf));
            }
            p->pos++;
            tl_json value;
            if ((s = parse_value(p, &value)) || (s = push(p, key, key_len, &value))) return s;
            skip_ws(p);
            char c = p->pos < p->len ? p->text[p->pos] : 0;
            if (c == ',') {
                p->pos++;
            } else if (c == '}') {
                p->pos++;
                break;
            } else {
                char buf[16];
                return fail_at(p, p->pos, "unexpected %s, expected ',' or '}' after an object member",
                               describe(p, p->pos, buf));
            }
        }
    }
    size_t n = p->stack_n - base;
    tl_json_member *members = NULL;
    if (n) {
        members = tl_arena_alloc_array(p->arena, n, sizeof *members, _Alignof(tl_json_member));
        if (!members) return out_of_memory(p);
        memcpy(members, p->stack + base, n * sizeof *members);
    }
    p->stack_n = base;
    p->depth--;
    v->kind = TL_JSON_OBJECT;
    v->object.members = members;
    v->object.n = n;
    v->object.order = NULL;
    return index_members(p, v);
}

static tl_status parse_value(parser *p, tl_json *v) {
    skip_ws(p);
    memset(v, 0, sizeof *v);
    v->line = p->line;
    v->column = column_of(p, p->pos);
    if (p->pos >= p->len) return fail_at(p, p->pos, "unexpected end of input, expected a value");
    char c = p->text[p->pos];
    switch (c) {
    case '{': return parse_object(p, v);
    case '[': return parse_array(p, v);
    case '"':
        v->kind = TL_JSON_STRING;
        return parse_string(p, &v->string.ptr, &v->string.len);
    case 't':
        v->kind = TL_JSON_BOOL;
        v->boolean = true;
        return expect_literal(p, "true");
    case 'f':
        v->kind = TL_JSON_BOOL;
        v->boolean = false;
        return expect_literal(p, "false");
    case 'n':
        v->kind = TL_JSON_NULL;
        return expect_literal(p, "null");
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, v);
        char buf[16];
        return fail_at(p, p->pos, "unexpected %s, expected a value", describe(p, p->pos, buf));
    }
}

tl_status tl_json_parse(const char *text, size_t len, tl_arena *arena, const tl_json **out,
                        const char *what) {
    if (out) *out = NULL;
    if (!what) what = "json";
    if (!arena || !out || (!text && len))
        return tl_set_error(TL_ERR_INVALID, "%s: tl_json_parse: NULL argument", what);
    if (len > UINT32_MAX)
        return tl_set_error(TL_ERR_UNSUPPORTED, "%s: JSON text of %zu bytes is over the 4 GiB limit", what, len);
    parser p = {.text = text, .len = len, .line = 1, .arena = arena, .what = what};
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) p.pos = p.line_start = 3;

    tl_json *root = tl_arena_alloc(arena, sizeof *root, _Alignof(tl_json));
    tl_status s = root ? parse_value(&p, root) : out_of_memory(&p);
    if (!s) {
        skip_ws(&p);
        if (p.pos < p.len) {
            char buf[16];
            s = fail_at(&p, p.pos, "unexpected %s after the JSON value", describe(&p, p.pos, buf));
        }
    }
    free(p.stack);
    if (p.c_locale) freelocale(p.c_locale);
    if (!s) *out = root;
    return s;
}

tl_status tl_json_parse_file(const char *path, tl_arena *arena, const tl_json **out) {
    if (out) *out = NULL;
    tl_mapping *m;
    tl_status s = tl_mapping_open(path, &m);
    if (s) return s;
    s = tl_json_parse((const char *)tl_mapping_data(m), tl_mapping_size(m), arena, out, path);
    tl_mapping_release(m);
    return s;
}

/* ---------------------------------------------------------------- access */

const char *tl_json_kind_name(tl_json_kind k) {
    switch (k) {
    case TL_JSON_NULL: return "null";
    case TL_JSON_BOOL: return "a boolean";
    case TL_JSON_NUMBER: return "a number";
    case TL_JSON_STRING: return "a string";
    case TL_JSON_ARRAY: return "an array";
    case TL_JSON_OBJECT: return "an object";
    }
    return "an unknown kind";
}

const tl_json *tl_json_get_n(const tl_json *v, const char *key, size_t key_len) {
    if (!v || v->kind != TL_JSON_OBJECT || (!key && key_len)) return NULL;
    const tl_json_member *m = v->object.members;
    if (!v->object.order) {
        for (size_t i = 0; i < v->object.n; i++)
            if (key_cmp(m[i].key, m[i].key_len, key, key_len) == 0) return &m[i].value;
        return NULL;
    }
    size_t lo = 0, hi = v->object.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const tl_json_member *x = &m[v->object.order[mid]];
        int c = key_cmp(x->key, x->key_len, key, key_len);
        if (c == 0) return &x->value;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const tl_json *tl_json_get(const tl_json *v, const char *key) {
    return key ? tl_json_get_n(v, key, strlen(key)) : NULL;
}

const tl_json *tl_json_index(const tl_json *v, size_t i) {
    if (!v || v->kind != TL_JSON_ARRAY || i >= v->array.n) return NULL;
    return &v->array.items[i];
}

size_t tl_json_len(const tl_json *v) {
    if (!v) return 0;
    switch (v->kind) {
    case TL_JSON_ARRAY: return v->array.n;
    case TL_JSON_OBJECT: return v->object.n;
    case TL_JSON_STRING: return v->string.len;
    default: return 0;
    }
}

/* "what: expected an integer, got a string (line 3, column 18)" or, with a key,
 * "what: 'key' must be an integer, got a string (line 3, column 18)". */
static tl_status kind_error(const tl_json *v, const char *expected, const char *what, const char *key) {
    const char *got = v->kind == TL_JSON_NUMBER ? v->number.raw : tl_json_kind_name(v->kind);
    if (!what) what = "json";
    if (key)
        return tl_set_error(TL_ERR_FORMAT, "%s: '%s' must be %s, got %s (line %u, column %u)", what, key, expected,
                            got, v->line, v->column);
    return tl_set_error(TL_ERR_FORMAT, "%s: expected %s, got %s (line %u, column %u)", what, expected, got, v->line,
                        v->column);
}

static tl_status read_int64(const tl_json *v, int64_t *out, const char *what, const char *key) {
    if (v->kind != TL_JSON_NUMBER || !v->number.is_int) return kind_error(v, "an integer", what, key);
    *out = v->number.i64;
    return TL_OK;
}

static tl_status read_double(const tl_json *v, double *out, const char *what, const char *key) {
    if (v->kind != TL_JSON_NUMBER) return kind_error(v, "a number", what, key);
    *out = v->number.f64;
    return TL_OK;
}

static tl_status read_bool(const tl_json *v, bool *out, const char *what, const char *key) {
    if (v->kind != TL_JSON_BOOL) return kind_error(v, "a boolean", what, key);
    *out = v->boolean;
    return TL_OK;
}

static tl_status read_string(const tl_json *v, const char **ptr, size_t *len, const char *what, const char *key) {
    if (v->kind != TL_JSON_STRING) return kind_error(v, "a string", what, key);
    *ptr = v->string.ptr;
    if (len) *len = v->string.len;
    return TL_OK;
}

tl_status tl_json_as_int64(const tl_json *v, int64_t *out, const char *what) {
    return read_int64(v, out, what, NULL);
}
tl_status tl_json_as_double(const tl_json *v, double *out, const char *what) {
    return read_double(v, out, what, NULL);
}
tl_status tl_json_as_bool(const tl_json *v, bool *out, const char *what) { return read_bool(v, out, what, NULL); }
tl_status tl_json_as_string(const tl_json *v, const char **ptr, size_t *len, const char *what) {
    return read_string(v, ptr, len, what, NULL);
}

/* The member `key` of obj, or a NOT_FOUND / FORMAT status. */
static tl_status member(const tl_json *obj, const char *key, const char *what, const tl_json **out) {
    if (!what) what = "json";
    if (!obj || obj->kind != TL_JSON_OBJECT)
        return tl_set_error(TL_ERR_FORMAT, "%s: looking up '%s' in %s, expected an object", what, key,
                            obj ? tl_json_kind_name(obj->kind) : "nothing");
    *out = tl_json_get(obj, key);
    if (!*out) return tl_set_error(TL_ERR_NOT_FOUND, "%s: missing key '%s'", what, key);
    return TL_OK;
}

tl_status tl_json_get_int64(const tl_json *obj, const char *key, int64_t *out, const char *what) {
    const tl_json *v;
    tl_status s = member(obj, key, what, &v);
    return s ? s : read_int64(v, out, what, key);
}
tl_status tl_json_get_double(const tl_json *obj, const char *key, double *out, const char *what) {
    const tl_json *v;
    tl_status s = member(obj, key, what, &v);
    return s ? s : read_double(v, out, what, key);
}
tl_status tl_json_get_bool(const tl_json *obj, const char *key, bool *out, const char *what) {
    const tl_json *v;
    tl_status s = member(obj, key, what, &v);
    return s ? s : read_bool(v, out, what, key);
}
tl_status tl_json_get_string(const tl_json *obj, const char *key, const char **ptr, size_t *len,
                             const char *what) {
    const tl_json *v;
    tl_status s = member(obj, key, what, &v);
    return s ? s : read_string(v, ptr, len, what, key);
}

bool tl_json_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_sequence(u + i, len - i);
        if (!k) return false;
        i += k;
    }
    return true;
}
