/* UTF-8 decoding (invalid bytes as llama.cpp treats them), the generated Unicode
 * classes, and the pre-tokenizer on text that is not valid UTF-8. */
#include <string.h>

#include "check.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

static void test_decode_valid_sequences_of_each_length(void) {
    size_t n;
    CHECK(tl_utf8_decode("A", 1, &n) == 'A' && n == 1);
    CHECK(tl_utf8_decode("\xC3\xA9", 2, &n) == 0xE9 && n == 2);
    CHECK(tl_utf8_decode("\xE4\xB8\x96", 3, &n) == 0x4E16 && n == 3);
    CHECK(tl_utf8_decode("\xF0\x9F\x98\x80", 4, &n) == 0x1F600 && n == 4);
}

static void test_decode_invalid_bytes_give_one_replacement_each(void) {
    size_t n;
    CHECK(tl_utf8_decode("\x80", 1, &n) == TL_UNICODE_REPLACEMENT && n == 1, "stray continuation byte");
    CHECK(tl_utf8_decode("\xFF", 1, &n) == TL_UNICODE_REPLACEMENT && n == 1, "0xFF never starts a sequence");
    CHECK(tl_utf8_decode("\xC3", 1, &n) == TL_UNICODE_REPLACEMENT && n == 1, "truncated at the end");
    CHECK(tl_utf8_decode("\xE4\xB8" "A", 3, &n) == TL_UNICODE_REPLACEMENT && n == 1, "broken by an ASCII byte");
    CHECK(tl_utf8_decode("\xF4\x90\x80\x80", 4, &n) == TL_UNICODE_REPLACEMENT && n == 1, "above U+10FFFF");
}

static void test_encode_round_trips_every_code_point(void) {
    int bad = 0;
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        char buf[4];
        size_t len = tl_utf8_encode(c, buf), n;
        if (tl_utf8_decode(buf, len, &n) != c || n != len) {
            bad++;
        }
    }
    CHECK(bad == 0, "%d code points do not round-trip", bad);
}

static void test_classes_of_known_code_points(void) {
    CHECK(tl_unicode_flags('a') == TL_U_LETTER);
    CHECK(tl_unicode_flags('7') == TL_U_NUMBER);
    CHECK(tl_unicode_flags(' ') == (TL_U_SEPARATOR | TL_U_WHITESPACE));
    CHECK(tl_unicode_flags('\n') == (TL_U_OTHER | TL_U_WHITESPACE));
    CHECK(tl_unicode_flags(0x1C) == TL_U_OTHER, "U+001C is a control but not White_Space");
    CHECK(tl_unicode_flags(0x85) & TL_U_WHITESPACE);
    CHECK(tl_unicode_flags(0x3000) & TL_U_WHITESPACE);
    CHECK(tl_unicode_flags(0x200B) == TL_U_OTHER, "ZERO WIDTH SPACE is Cf, not White_Space");
    CHECK(tl_unicode_flags('!') == TL_U_PUNCT && tl_unicode_flags('$') == TL_U_SYMBOL);
    CHECK(tl_unicode_flags(0x0301) == TL_U_MARK);
    CHECK(tl_unicode_flags(0x4E16) == TL_U_LETTER && tl_unicode_flags(0xFF11) == TL_U_NUMBER);
    CHECK(tl_unicode_flags(0x2167) == TL_U_NUMBER, "ROMAN NUMERAL EIGHT is Nl");
    CHECK(tl_unicode_flags(0x1F600) == TL_U_SYMBOL);
    CHECK(tl_unicode_category(0x1C89) == TL_UCAT_LU, "a Unicode 16 letter (tables are %s)", tl_unicode_version);
    CHECK(tl_unicode_category(0x10FFFF) == TL_UCAT_CN && tl_unicode_flags(0x110000) == TL_U_OTHER);
    CHECK(tl_unicode_category(0xE000) == TL_UCAT_CO && tl_unicode_category(0xD800) == TL_UCAT_CS);
}

static void test_range_table_is_sorted_and_starts_at_zero(void) {
    bool sorted = tl_unicode_range_start[0] == 0;
    for (size_t i = 1; i < tl_unicode_n_ranges; i++) {
        sorted = sorted && tl_unicode_range_start[i - 1] < tl_unicode_range_start[i];
    }
    CHECK(sorted);
}

static bool pieces_are(const tl_pretokens *pt, const char *const *want, size_t n_want) {
    if (pt->n != n_want) {
        return false;
    }
    for (size_t i = 0, start = 0; i < n_want; i++) {
        size_t len = pt->end[i] - start;
        if (len != strlen(want[i]) || memcmp(pt->text + start, want[i], len) != 0) {
            return false;
        }
        start = pt->end[i];
    }
    return true;
}

static void test_pretokenize_replaces_invalid_bytes_as_llama_cpp(void) {
    const tl_pretokenizer *p;
    CHECK(tl_pretokenizer_lookup("gpt-2", &p) == TL_OK);
    tl_pretokens pt = {0};
    /* 0xFF and a lone 0xC3 become U+FFFD (a symbol: [^\s\p{L}\p{N}]) */
    const char text[] = "ab\xFF\xC3 cd";
    CHECK(tl_pretokenize(p, text, sizeof text - 1, &pt) == TL_OK);
    const char *want[] = {"ab", "\xEF\xBF\xBD\xEF\xBF\xBD", " cd"};
    CHECK(pieces_are(&pt, want, 3), "got %zu pieces", pt.n);
    /* reused for a second text */
    CHECK(tl_pretokenize(p, "x  y", 4, &pt) == TL_OK);
    const char *want2[] = {"x", " ", " y"};
    CHECK(pieces_are(&pt, want2, 3));
    CHECK(tl_pretokenize(p, "", 0, &pt) == TL_OK && pt.n == 0 && pt.len == 0);
    tl_pretokens_free(&pt);
}

static void test_pretokenizer_names_and_switches(void) {
    const tl_pretokenizer *p;
    CHECK(tl_pretokenizer_lookup(NULL, &p) == TL_OK && strcmp(tl_pretokenizer_name(p), "default") == 0);
    CHECK(tl_pretokenizer_lookup("", &p) == TL_OK && strcmp(tl_pretokenizer_name(p), "default") == 0);
    CHECK(tl_pretokenizer_lookup("llama3", &p) == TL_OK && strcmp(tl_pretokenizer_name(p), "llama-bpe") == 0);
    CHECK(tl_pretokenizer_ignore_merges(p) && tl_pretokenizer_add_bos(p));
    CHECK(tl_pretokenizer_lookup("smollm", &p) == TL_OK && !tl_pretokenizer_ignore_merges(p) &&
          !tl_pretokenizer_add_bos(p));
    CHECK(tl_pretokenizer_lookup("dbrx", &p) == TL_OK && !tl_pretokenizer_ignore_merges(p));
    CHECK(tl_pretokenizer_lookup("klingon", &p) == TL_ERR_UNSUPPORTED && p == NULL);
    CHECK(strstr(tl_last_error(), "klingon") && strstr(tl_last_error(), "qwen2"), "%s", tl_last_error());
}

int main(void) {
    test_decode_valid_sequences_of_each_length();
    test_decode_invalid_bytes_give_one_replacement_each();
    test_encode_round_trips_every_code_point();
    test_classes_of_known_code_points();
    test_range_table_is_sorted_and_starts_at_zero();
    test_pretokenize_replaces_invalid_bytes_as_llama_cpp();
    test_pretokenizer_names_and_switches();
    return check_summary();
}
