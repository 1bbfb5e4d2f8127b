/* Unit tests of the strict JSON parser (csrc/formats/json.c).
 *
 * argv[1] = tests/data, argv[2] = ../shared/fixtures (encode_with_bos.jsonl is
 * parsed line by line as real JSON written by someone else).
 * Every input is parsed from a malloc'd copy of exactly its length, so a read
 * past the end shows up under AddressSanitizer. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include "formats/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* Parses exactly len bytes from a private heap copy. */
static tl_status parse(tl_arena *a, const char *text, size_t len, const tl_json **out) {
    char *copy = malloc(len ? len : 1);
    if (!copy) abort();
    memcpy(copy, text, len);
    tl_status s = tl_json_parse(copy, len, a, out, "test.json");
    /* the DOM must not point into the text: scribble over it before use */
    memset(copy, 'X', len);
    free(copy);
    return s;
}

static const tl_json *parse_ok(tl_arena *a, const char *text) {
    const tl_json *v = NULL;
    tl_status s = parse(a, text, strlen(text), &v);
    if (s) fprintf(stderr, "unexpected failure on %s: %s\n", text, tl_last_error());
    return s ? NULL : v;
}

/* ---------------------------------------------------------------- invalid inputs */

typedef struct {
    const char *text;
    size_t len;            /* 0: strlen(text) */
    const char *message;   /* must appear in the error message */
} bad_case;

#define BAD(t, m) {t, sizeof(t) - 1, m}

static const bad_case bad_cases[] = {
    BAD("", "end of input, expected a value"),
    BAD(" \n\t ", "line 2, column 3: unexpected end of input"),
    BAD("{", "expected a string key or '}'"),
    BAD("[", "end of input, expected a value"),
    BAD("[1,]", "unexpected ']', expected a value"),
    BAD("[1 2]", "expected ',' or ']' after an array element"),
    BAD("{\"a\":1,}", "unexpected '}', expected a string key"),
    BAD("{\"a\" 1}", "expected ':' after an object key"),
    BAD("{\"a\":1 \"b\":2}", "expected ',' or '}' after an object member"),
    BAD("{a:1}", "unexpected 'a', expected a string key"),
    BAD("{'a':1}", "unexpected '''"),
    BAD("01", "leading zeros"),
    BAD("-01", "leading zeros"),
    BAD("-", "expected a digit after '-'"),
    BAD("-a", "expected a digit after '-'"),
    BAD("1.", "expected a digit after '.'"),
    BAD("1.e5", "expected a digit after '.'"),
    BAD("1e", "expected a digit in the exponent"),
    BAD("1e+", "expected a digit in the exponent"),
    BAD(".5", "unexpected '.', expected a value"),
    BAD("+1", "unexpected '+', expected a value"),
    BAD("1e400", "number 1e400 is too large for a double"),
    BAD("-1e400", "too large for a double"),
    BAD("[1, 1.8e308]", "line 1, column 5: number 1.8e308 is too large"),
    BAD("NaN", "unexpected 'N'"),
    BAD("Infinity", "unexpected 'I'"),
    BAD("-Infinity", "expected a digit after '-'"),
    BAD("tru", "did you mean 'true'"),
    BAD("nul", "did you mean 'null'"),
    BAD("True", "unexpected 'T'"),
    BAD("truex", "unexpected 'x' after the JSON value"),
    BAD("\"abc", "unterminated string"),
    BAD("\"\\", "unterminated string"),
    BAD("\"a\tb\"", "raw control character 0x09"),
    BAD("\"a\nb\"", "raw control character 0x0a"),
    BAD("\"\\x\"", "invalid escape \\'x'"),
    BAD("\"\\'\"", "invalid escape"),
    BAD("\"\\u12\"", "\\u must be followed by four hex digits"),
    BAD("\"\\u12G4\"", "four hex digits"),
    BAD("\"\\uD800\"", "high surrogate \\uD800 is not followed by a low surrogate"),
    BAD("\"\\uD800\\u0041\"", "not followed by a low surrogate"),
    BAD("\"\\uD800\\uD800\"", "not followed by a low surrogate"),
    BAD("\"\\uDC00\"", "lone low surrogate \\uDC00"),
    BAD("\"\xc3\"", "invalid UTF-8 byte 0xc3"),
    BAD("\"\xc0\xaf\"", "invalid UTF-8 byte 0xc0"),       /* overlong '/' */
    BAD("\"\xe0\x80\xaf\"", "invalid UTF-8 byte 0xe0"),   /* overlong, 3 bytes */
    BAD("\"\xed\xa0\x80\"", "invalid UTF-8 byte 0xed"),   /* encoded surrogate */
    BAD("\"\xf4\x90\x80\x80\"", "invalid UTF-8 byte 0xf4"), /* above U+10FFFF */
    BAD("\"\xff\"", "invalid UTF-8 byte 0xff"),
    BAD("\"\x80\"", "invalid UTF-8 byte 0x80"),
    BAD("\"ok\xe2\x82\"", "invalid UTF-8 byte 0xe2"),     /* truncated at the quote */
    BAD("{\"a\":1,\"a\":2}", "line 1, column 12: duplicate object key 'a'"),
    BAD("{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k3\":10}",
        "duplicate object key 'k3'"),
    BAD("[1] x", "unexpected 'x' after the JSON value"),
    BAD("{}{}", "unexpected '{' after the JSON value"),
    BAD("// comment\n1", "unexpected '/'"),
    BAD("[1,\n 2,\n x]", "line 3, column 2: unexpected 'x', expected a value"),
    BAD("\x00", "byte 0x00"),
    BAD("1\x00", "unexpected byte 0x00 after the JSON value"),
    BAD("\"a\" \xef\xbb\xbf", "unexpected byte 0xef"),      /* a BOM is only skipped at the start */
    BAD("\xef\xbb", "unexpected byte 0xef"),
    BAD("\x0c 1", "unexpected byte 0x0c"),                  /* form feed is not whitespace */
    BAD("[1,,2]", "unexpected ','"),
    BAD("{\"a\"}", "expected ':'"),
    BAD("{\"a\":}", "unexpected '}', expected a value"),
};

static void test_invalid_inputs_fail_with_a_located_message(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        tl_arena a = {0};
        const tl_json *v = (const tl_json *)&a; /* must be reset to NULL */
        tl_status s = parse(&a, c->text, c->len, &v);
        const char *msg = tl_last_error();
        bool ok = s == TL_ERR_FORMAT && v == NULL && strncmp(msg, "test.json: line ", 16) == 0 &&
                  strstr(msg, c->message) != NULL;
        if (!ok) fprintf(stderr, "bad case %zu: status %d, message \"%s\", wanted \"%s\"\n", i, s, msg, c->message);
        CHECK(ok);
        tl_arena_free_all(&a);
    }
}

/* ---------------------------------------------------------------- valid inputs */

static void test_literals_and_whitespace(void) {
    tl_arena a = {0};
    const tl_json *v;
    CHECK((v = parse_ok(&a, "null")) && v->kind == TL_JSON_NULL);
    CHECK((v = parse_ok(&a, "true")) && v->kind == TL_JSON_BOOL && v->boolean);
    CHECK((v = parse_ok(&a, "false")) && v->kind == TL_JSON_BOOL && !v->boolean);
    CHECK((v = parse_ok(&a, " \t\r\n 7 \r\n\t ")) && v->kind == TL_JSON_NUMBER && v->number.i64 == 7 &&
          v->line == 2 && v->column == 2);
    /* a leading byte order mark is skipped, and columns count from after it */
    CHECK((v = parse_ok(&a, "\xef\xbb\xbf{\"a\":1}")) && v->kind == TL_JSON_OBJECT && v->column == 1 &&
          tl_json_get(v, "a"));
    tl_arena_free_all(&a);
}

static const tl_json *number(tl_arena *a, const char *text) {
    const tl_json *v = parse_ok(a, text);
    return v && v->kind == TL_JSON_NUMBER ? v : NULL;
}

static void test_numbers_keep_exact_integers_and_correctly_rounded_doubles(void) {
    tl_arena a = {0};
    const tl_json *v;
    CHECK((v = number(&a, "0")) && v->number.is_int && v->number.i64 == 0 && !signbit(v->number.f64));
    CHECK((v = number(&a, "-0")) && v->number.is_int && v->number.i64 == 0 && v->number.f64 == 0 &&
          signbit(v->number.f64));
    CHECK((v = number(&a, "-0.0")) && !v->number.is_int && signbit(v->number.f64));
    CHECK((v = number(&a, "123")) && v->number.is_int && v->number.i64 == 123 && v->number.f64 == 123.0);
    CHECK((v = number(&a, "-42")) && v->number.is_int && v->number.i64 == -42);
    CHECK((v = number(&a, "9223372036854775807")) && v->number.is_int && v->number.i64 == INT64_MAX);
    CHECK((v = number(&a, "-9223372036854775808")) && v->number.is_int && v->number.i64 == INT64_MIN &&
          v->number.f64 == -9223372036854775808.0);
    CHECK((v = number(&a, "9223372036854775808")) && !v->number.is_int && v->number.f64 == 9223372036854775808.0);
    CHECK((v = number(&a, "-9223372036854775809")) && !v->number.is_int);
    CHECK((v = number(&a, "123456789012345678901234567890")) && !v->number.is_int &&
          v->number.f64 == 123456789012345678901234567890.0 &&
          strcmp(v->number.raw, "123456789012345678901234567890") == 0);
    /* 2^53 + 1 is an exact int64; its double rounds to even */
    CHECK((v = number(&a, "9007199254740993")) && v->number.is_int && v->number.i64 == 9007199254740993LL &&
          v->number.f64 == 9007199254740992.0);
    CHECK((v = number(&a, "1.5")) && !v->number.is_int && v->number.f64 == 1.5);
    CHECK((v = number(&a, "1e2")) && !v->number.is_int && v->number.f64 == 100.0 && strcmp(v->number.raw, "1e2") == 0);
    CHECK((v = number(&a, "1E-2")) && v->number.f64 == 0.01);
    CHECK((v = number(&a, "2.5e+3")) && v->number.f64 == 2500.0);
    CHECK((v = number(&a, "0.1")) && v->number.f64 == 0.1);
    CHECK((v = number(&a, "1e-05")) && v->number.f64 == 1e-05);
    CHECK((v = number(&a, "1e-400")) && v->number.f64 == 0.0);
    CHECK((v = number(&a, "4.9406564584124654e-324")) && v->number.f64 == 4.9406564584124654e-324);
    CHECK((v = number(&a, "1.7976931348623157e308")) && v->number.f64 == 1.7976931348623157e308);
    CHECK((v = number(&a, "2.2250738585072014e-308")) && v->number.f64 == 2.2250738585072014e-308);
    CHECK((v = number(&a, "10000.0")) && !v->number.is_int && v->number.f64 == 10000.0);
    tl_arena_free_all(&a);
}

/* The decoded bytes of a string value, compared with (want, want_len). */
static bool string_is(const tl_json *v, const char *want, size_t want_len) {
    return v && v->kind == TL_JSON_STRING && v->string.len == want_len &&
           memcmp(v->string.ptr, want, want_len) == 0 && v->string.ptr[want_len] == '\0';
}

static void test_strings_decode_escapes_surrogates_and_utf8(void) {
    tl_arena a = {0};
    CHECK(string_is(parse_ok(&a, "\"\""), "", 0));
    CHECK(string_is(parse_ok(&a, "\"plain\""), "plain", 5));
    CHECK(string_is(parse_ok(&a, "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), "\"\\/\b\f\n\r\t", 8));
    CHECK(string_is(parse_ok(&a, "\"\\u0041\\u00e9\\u20AC\""), "A\xc3\xa9\xe2\x82\xac", 6));
    CHECK(string_is(parse_ok(&a, "\"\\uD83D\\uDE00\""), "\xf0\x9f\x98\x80", 4)); /* U+1F600 */
    CHECK(string_is(parse_ok(&a, "\"\\udbff\\udfff\""), "\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    CHECK(string_is(parse_ok(&a, "\"a\\u0000b\""), "a\0b", 3));
    CHECK(string_is(parse_ok(&a, "\"\\u007f\\u0080\\u07ff\\u0800\\uffff\""),
                    "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 11));
    /* raw UTF-8 of every length passes through unchanged */
    const char *raw = "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xed\x9f\xbf \xee\x80\x80 \xf4\x8f\xbf\xbf\"";
    CHECK(string_is(parse_ok(&a, raw), raw + 1, strlen(raw) - 2));
    /* the byte-level BPE alphabet of GPT-2 style vocabularies */
    CHECK(string_is(parse_ok(&a, "\"\xc4\xa0the\""), "\xc4\xa0the", 5));
    tl_arena_free_all(&a);
}

static void test_objects_keep_order_and_find_keys(void) {
    tl_arena a = {0};
    const tl_json *v = parse_ok(&a, "{\"b\": 1, \"a\": [true, null], \"\": \"empty\", \"a\\u0000b\": 3}");
    CHECK(v && v->kind == TL_JSON_OBJECT && tl_json_len(v) == 4);
    if (v) {
        CHECK(strcmp(v->object.members[0].key, "b") == 0 && strcmp(v->object.members[1].key, "a") == 0);
        const tl_json *arr = tl_json_get(v, "a");
        CHECK(arr && arr->kind == TL_JSON_ARRAY && tl_json_len(arr) == 2);
        CHECK(tl_json_index(arr, 0) && tl_json_index(arr, 0)->boolean);
        CHECK(tl_json_index(arr, 1) && tl_json_index(arr, 1)->kind == TL_JSON_NULL);
        CHECK(tl_json_index(arr, 2) == NULL);
        CHECK(tl_json_index(v, 0) == NULL); /* not an array */
        CHECK(string_is(tl_json_get(v, ""), "empty", 5));
        const tl_json *nul = tl_json_get_n(v, "a\0b", 3);
        CHECK(nul && nul->number.i64 == 3);
        CHECK(tl_json_get(v, "c") == NULL && tl_json_get(arr, "a") == NULL);
        CHECK(tl_json_get(v, "a")->line == 1 && tl_json_get(v, "a")->column == 15);
    }
    CHECK((v = parse_ok(&a, "{}")) && v->kind == TL_JSON_OBJECT && tl_json_len(v) == 0 && !tl_json_get(v, ""));
    CHECK((v = parse_ok(&a, "[]")) && v->kind == TL_JSON_ARRAY && tl_json_len(v) == 0 && !tl_json_index(v, 0));
    CHECK((v = parse_ok(&a, "[[],[[]],{}]")) && tl_json_len(v) == 3 && tl_json_len(tl_json_index(v, 1)) == 1);
    tl_arena_free_all(&a);
}

/* A vocabulary-sized object and array: sorted lookup and contiguous storage. */
static void test_big_object_and_array(void) {
    enum { N = 200000 };
    size_t cap = (size_t)N * 32 + 64, n = 0;
    char *text = malloc(cap);
    n += (size_t)sprintf(text + n, "{\"vocab\": {");
    for (int i = 0; i < N; i++) n += (size_t)sprintf(text + n, "%s\"tok%d\": %d", i ? ", " : "", (i * 7919) % N, i);
    n += (size_t)sprintf(text + n, "}, \"ids\": [");
    for (int i = 0; i < N; i++) n += (size_t)sprintf(text + n, "%s%d.5", i ? "," : "", i);
    n += (size_t)sprintf(text + n, "]}");
    tl_arena a = {0};
    const tl_json *root = NULL;
    tl_status s = parse(&a, text, n, &root);
    if (s) fprintf(stderr, "big: %s\n", tl_last_error());
    CHECK(s == TL_OK);
    const tl_json *vocab = tl_json_get(root, "vocab"), *ids = tl_json_get(root, "ids");
    CHECK(tl_json_len(vocab) == N && tl_json_len(ids) == N);
    bool all = vocab && ids;
    for (int i = 0; all && i < N; i++) {
        char key[32];
        sprintf(key, "tok%d", (i * 7919) % N);
        const tl_json *v = tl_json_get(vocab, key);
        all = v && v->number.i64 == i && strcmp(vocab->object.members[i].key, key) == 0 &&
              tl_json_index(ids, (size_t)i)->number.f64 == i + 0.5;
    }
    CHECK(all);
    CHECK(tl_json_get(vocab, "tok") == NULL && tl_json_get(vocab, "tok200000") == NULL);
    tl_arena_free_all(&a);

    /* one duplicate among 200k keys is found */
    memcpy(strstr(text, "\"tok7919\""), "\"tok0000\"", 9); /* differs from tok0 */
    CHECK(parse(&a, text, n, &root) == TL_OK);
    tl_arena_free_all(&a);
    memcpy(strstr(text, "\"tok0000\""), "\"tok0\"   ", 9);
    CHECK(parse(&a, text, n, &root) == TL_ERR_FORMAT && strstr(tl_last_error(), "duplicate object key 'tok0'"));
    tl_arena_free_all(&a);
    free(text);
}

static void test_nesting_is_limited_without_recursion_overflow(void) {
    enum { DEEP = 1000000 };
    char *text = malloc(2 * DEEP);
    tl_arena a = {0};
    const tl_json *v;
    for (int depth = TL_JSON_MAX_DEPTH; depth <= TL_JSON_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) text[i] = '[';
        for (int i = 0; i < depth; i++) text[depth + i] = ']';
        tl_status s = parse(&a, text, 2 * (size_t)depth, &v);
        if (depth == TL_JSON_MAX_DEPTH) {
            CHECK(s == TL_OK && v && v->kind == TL_JSON_ARRAY);
        } else {
            CHECK(s == TL_ERR_FORMAT && strstr(tl_last_error(), "nesting deeper than 512"));
        }
        tl_arena_free_all(&a);
    }
    /* a million open brackets, and alternating objects, fail cleanly */
    memset(text, '[', DEEP);
    CHECK(parse(&a, text, DEEP, &v) == TL_ERR_FORMAT && strstr(tl_last_error(), "column 513: nesting"));
    tl_arena_free_all(&a);
    size_t n = 0;
    for (int i = 0; i < 600; i++) n += (size_t)sprintf(text + n, "{\"a\":[");
    CHECK(parse(&a, text, n, &v) == TL_ERR_FORMAT && strstr(tl_last_error(), "nesting"));
    tl_arena_free_all(&a);
    free(text);
}

static void test_typed_getters_name_the_key_and_the_kind(void) {
    tl_arena a = {0};
    const tl_json *cfg = parse_ok(&a, "{\n  \"hidden_size\": 576,\n  \"rope_theta\": 10000.0,\n"
                                      "  \"tie\": true,\n  \"name\": \"llama\",\n  \"bad\": \"576\"\n}");
    int64_t i = 0;
    double d = 0;
    bool b = false;
    const char *str = NULL;
    size_t len = 0;
    CHECK(tl_json_get_int64(cfg, "hidden_size", &i, "config.json") == TL_OK && i == 576);
    CHECK(tl_json_get_double(cfg, "hidden_size", &d, "config.json") == TL_OK && d == 576.0);
    CHECK(tl_json_get_double(cfg, "rope_theta", &d, "config.json") == TL_OK && d == 10000.0);
    CHECK(tl_json_get_bool(cfg, "tie", &b, "config.json") == TL_OK && b);
    CHECK(tl_json_get_string(cfg, "name", &str, &len, "config.json") == TL_OK && len == 5 && !strcmp(str, "llama"));
    CHECK(tl_json_get_int64(cfg, "bad", &i, "config.json") == TL_ERR_FORMAT &&
          strcmp(tl_last_error(), "config.json: 'bad' must be an integer, got a string (line 6, column 10)") == 0);
    CHECK(tl_json_get_int64(cfg, "rope_theta", &i, "config.json") == TL_ERR_FORMAT &&
          strstr(tl_last_error(), "'rope_theta' must be an integer, got 10000.0"));
    CHECK(tl_json_get_int64(cfg, "missing", &i, "config.json") == TL_ERR_NOT_FOUND &&
          strcmp(tl_last_error(), "config.json: missing key 'missing'") == 0);
    CHECK(tl_json_get_int64(tl_json_get(cfg, "name"), "x", &i, "config.json") == TL_ERR_FORMAT);
    CHECK(tl_json_as_string(tl_json_get(cfg, "tie"), &str, NULL, "config.json: 'tie'") == TL_ERR_FORMAT &&
          strstr(tl_last_error(), "config.json: 'tie': expected a string, got a boolean (line 4"));
    CHECK(tl_json_as_bool(tl_json_get(cfg, "tie"), &b, "x") == TL_OK);
    tl_arena_free_all(&a);
}

/* Real JSON lines written by someone else: texts with escapes, id arrays. */
static void test_fixture_jsonl_lines_parse(const char *fixtures) {
    char path[4096];
    snprintf(path, sizeof path, "%s/llama2-tokenizer/encode_with_bos.jsonl", fixtures);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "skipping fixture test: cannot open %s\n", path);
        return;
    }
    char line[65536];
    int lines = 0, good = 0;
    while (fgets(line, sizeof line, f)) {
        tl_arena a = {0};
        const tl_json *v = NULL;
        lines++;
        if (parse(&a, line, strlen(line), &v) == TL_OK) {
            const tl_json *ids = tl_json_get(v, "ids_with_bos");
            const tl_json *text = tl_json_get(v, "text");
            int64_t first = 0;
            if (text && text->kind == TL_JSON_STRING && tl_json_len(ids) >= 1 &&
                tl_json_as_int64(tl_json_index(ids, 0), &first, "ids") == TL_OK && first == 1)
                good++;
        } else {
            fprintf(stderr, "%s line %d: %s\n", path, lines, tl_last_error());
        }
        tl_arena_free_all(&a);
    }
    fclose(f);
    CHECK(lines > 0 && good == lines);
}

static void test_parse_file_names_the_path(const char *data_dir) {
    tl_arena a = {0};
    const tl_json *v;
    char path[4096];
    snprintf(path, sizeof path, "%s/does-not-exist.json", data_dir);
    CHECK(tl_json_parse_file(path, &a, &v) == TL_ERR_NOT_FOUND && strstr(tl_last_error(), "does-not-exist.json"));
    char tmp[] = "/tmp/torchless_test_json_XXXXXX";
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    CHECK(f != NULL);
    if (f) {
        fputs("{\"x\": [1, 2,]}\n", f);
        fclose(f);
        char want[256];
        snprintf(want, sizeof want, "%s: line 1, column 13: unexpected ']'", tmp);
        CHECK(tl_json_parse_file(tmp, &a, &v) == TL_ERR_FORMAT && strstr(tl_last_error(), want));
        remove(tmp);
    }
    tl_arena_free_all(&a);
}

int main(int argc, char **argv) {
    const char *data_dir = argc > 1 ? argv[1] : "tests/data";
    const char *fixtures = argc > 2 ? argv[2] : "../shared/fixtures";
    test_invalid_inputs_fail_with_a_located_message();
    test_literals_and_whitespace();
    test_numbers_keep_exact_integers_and_correctly_rounded_doubles();
    test_strings_decode_escapes_surrogates_and_utf8();
    test_objects_keep_order_and_find_keys();
    test_big_object_and_array();
    test_nesting_is_limited_without_recursion_overflow();
    test_typed_getters_name_the_key_and_the_kind();
    test_fixture_jsonl_lines_parse(fixtures);
    test_parse_file_names_the_path(data_dir);
    return check_summary();
}
