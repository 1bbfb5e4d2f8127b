/* A strict JSON (RFC 8259) parser producing a read-only DOM in a caller's arena.
 *
 * Used for safetensors headers and indexes, config.json, tokenizer.json and
 * generation_config.json, so it is built for inputs of hundreds of MB with
 * arrays and objects of 100k+ elements.
 *
 * Decisions, in one place:
 *   - Strict RFC 8259 grammar: no comments, no trailing commas, no NaN/Infinity,
 *     no single quotes, no leading zeros, whitespace is only space/tab/CR/LF.
 *   - A leading UTF-8 byte order mark is skipped (RFC 8259 section 8.1 allows
 *     this); anything but whitespace after the top-level value is an error.
 *   - Strings must be valid UTF-8 (no overlong forms, no encoded surrogates,
 *     nothing above U+10FFFF); raw control characters (< 0x20) are errors.
 *     \uXXXX escapes are decoded; a surrogate pair becomes one code point, a lone
 *     surrogate is an error (it has no UTF-8 form). \u0000 is kept: string
 *     lengths are explicit, and every string is also NUL-terminated.
 *   - Numbers: f64 is the correctly rounded double. A number too large for a
 *     double (1e400) is an error; one too small (1e-400) becomes 0 or a denormal,
 *     as in Python. is_int is true for integer syntax (no fraction, no exponent)
 *     whose value fits in int64; then i64 holds it exactly. Bigger integers keep
 *     only the double and is_int = false. "-0" is an integer 0 with f64 = -0.0.
 *     raw is the number's text as written.
 *   - Duplicate keys in an object are an error. Member order is kept.
 *   - Nesting deeper than TL_JSON_MAX_DEPTH arrays/objects is an error.
 *   - Errors are TL_ERR_FORMAT with "what: line L, column C: problem", where the
 *     column counts bytes from 1. Inputs of 4 GiB or more are TL_ERR_UNSUPPORTED.
 *   - The DOM never points into the input text: the text may be freed (or the
 *     file unmapped) after parsing. Everything lives in the arena; free it with
 *     tl_arena_free_all. On failure the arena may hold partial allocations.
 */
#ifndef TL_JSON_H
#define TL_JSON_H

#include "core/arena.h"
#include "core/status.h"

#define TL_JSON_MAX_DEPTH 512

typedef enum tl_json_kind {
    TL_JSON_NULL,
    TL_JSON_BOOL,
    TL_JSON_NUMBER,
    TL_JSON_STRING,
    TL_JSON_ARRAY,
    TL_JSON_OBJECT,
} tl_json_kind;

typedef struct tl_json tl_json;
typedef struct tl_json_member tl_json_member;

struct tl_json {
    tl_json_kind kind;
    uint32_t line, column; /* where the value starts in the text (1-based) */
    union {
        bool boolean; /* BOOL */
        struct {
            double f64;      /* nearest double; always finite */
            int64_t i64;     /* the exact value when is_int */
            bool is_int;     /* integer syntax and within int64 */
            const char *raw; /* the text as written, NUL-terminated */
            size_t raw_len;
        } number;
        struct {
            const char *ptr; /* decoded UTF-8, NUL-terminated, may contain NUL */
            size_t len;      /* bytes, without the terminator */
        } string;
        struct {
            const tl_json *items;
            size_t n;
        } array;
        struct {
            const tl_json_member *members; /* in document order */
            size_t n;
            const uint32_t *order; /* member indices sorted by key (NULL for small objects) */
        } object;
    };
};

struct tl_json_member {
    const char *key; /* decoded, NUL-terminated, may contain NUL */
    size_t key_len;
    tl_json value;
};

/* Parses len bytes of text. `what` names the input in error messages (a path,
 * "safetensors: x.safetensors: header"); NULL means "json". */
tl_status tl_json_parse(const char *text, size_t len, tl_arena *arena, const tl_json **out,
                        const char *what);
/* Maps the file at path and parses it; errors name the path. */
tl_status tl_json_parse_file(const char *path, tl_arena *arena, const tl_json **out);

/* "null", "a boolean", "a number", "a string", "an array", "an object". */
const char *tl_json_kind_name(tl_json_kind k);

/* Member of an object by key; NULL when v is not an object or has no such key.
 * O(log n) for big objects. */
const tl_json *tl_json_get(const tl_json *v, const char *key);
const tl_json *tl_json_get_n(const tl_json *v, const char *key, size_t key_len);
/* Element i of an array; NULL when v is not an array or i is out of range. */
const tl_json *tl_json_index(const tl_json *v, size_t i);
/* Elements of an array, members of an object, bytes of a string; 0 otherwise. */
size_t tl_json_len(const tl_json *v);

/* Typed reads of a value. On a kind mismatch: TL_ERR_FORMAT, with a message
 * "what: expected an integer, got a string (line L, column C)".
 * as_int64 takes only is_int numbers; as_double takes any number;
 * as_string gives the decoded bytes (len may be NULL). */
tl_status tl_json_as_int64(const tl_json *v, int64_t *out, const char *what);
tl_status tl_json_as_double(const tl_json *v, double *out, const char *what);
tl_status tl_json_as_bool(const tl_json *v, bool *out, const char *what);
tl_status tl_json_as_string(const tl_json *v, const char **ptr, size_t *len, const char *what);

/* Typed reads of an object member: TL_ERR_NOT_FOUND (with a message) when the
 * key is absent, TL_ERR_FORMAT when obj is not an object or the member has the
 * wrong kind: "config.json: 'hidden_size' must be an integer, got a string
 * (line 3, column 18)". `what` names the file. */
tl_status tl_json_get_int64(const tl_json *obj, const char *key, int64_t *out, const char *what);
tl_status tl_json_get_double(const tl_json *obj, const char *key, double *out, const char *what);
tl_status tl_json_get_bool(const tl_json *obj, const char *key, bool *out, const char *what);
tl_status tl_json_get_string(const tl_json *obj, const char *key, const char **ptr, size_t *len,
                             const char *what);

/* True when the len bytes at s are well-formed UTF-8 by the rules the parser applies
 * to strings (no overlongs, no surrogates, nothing above U+10FFFF); NUL is allowed. */
bool tl_json_utf8_valid(const char *s, size_t len);

#endif
