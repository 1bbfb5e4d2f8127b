/* UTF-8 decoding and Unicode class lookups over the generated range tables. */
#include "tokenizer/unicode.h"

/* tl_ucat -> TL_U_* class bit. */
static const uint8_t CLASS_OF_CATEGORY[32] = {
    [TL_UCAT_CN] = TL_U_OTHER,
    [TL_UCAT_LU] = TL_U_LETTER,    [TL_UCAT_LL] = TL_U_LETTER, [TL_UCAT_LT] = TL_U_LETTER,
    [TL_UCAT_LM] = TL_U_LETTER,    [TL_UCAT_LO] = TL_U_LETTER,
    [TL_UCAT_MN] = TL_U_MARK,      [TL_UCAT_MC] = TL_U_MARK,   [TL_UCAT_ME] = TL_U_MARK,
    [TL_UCAT_ND] = TL_U_NUMBER,    [TL_UCAT_NL] = TL_U_NUMBER, [TL_UCAT_NO] = TL_U_NUMBER,
    [TL_UCAT_PC] = TL_U_PUNCT,     [TL_UCAT_PD] = TL_U_PUNCT,  [TL_UCAT_PS] = TL_U_PUNCT,
    [TL_UCAT_PE] = TL_U_PUNCT,     [TL_UCAT_PI] = TL_U_PUNCT,  [TL_UCAT_PF] = TL_U_PUNCT,
    [TL_UCAT_PO] = TL_U_PUNCT,
    [TL_UCAT_SM] = TL_U_SYMBOL,    [TL_UCAT_SC] = TL_U_SYMBOL, [TL_UCAT_SK] = TL_U_SYMBOL,
    [TL_UCAT_SO] = TL_U_SYMBOL,
    [TL_UCAT_ZS] = TL_U_SEPARATOR, [TL_UCAT_ZL] = TL_U_SEPARATOR, [TL_UCAT_ZP] = TL_U_SEPARATOR,
    [TL_UCAT_CC] = TL_U_OTHER,     [TL_UCAT_CF] = TL_U_OTHER,  [TL_UCAT_CS] = TL_U_OTHER,
    [TL_UCAT_CO] = TL_U_OTHER,
};

#define WHITESPACE_BIT 0x80u

/* The generated code of a code point: its category and White_Space bit. */
static uint8_t unicode_code(uint32_t cpt) {
    if (cpt < 256) {
        return tl_unicode_latin1_code[cpt];
    }
    if (cpt > 0x10FFFF) {
        return TL_UCAT_CN;
    }
    /* the last range whose start is <= cpt (range 0 starts at U+0000) */
    size_t lo = 0, hi = tl_unicode_n_ranges;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tl_unicode_range_start[mid] <= cpt) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return tl_unicode_range_code[lo];
}

tl_ucat tl_unicode_category(uint32_t cpt) {
    return (tl_ucat)(unicode_code(cpt) & 0x1F);
}

unsigned tl_unicode_flags(uint32_t cpt) {
    uint8_t code = unicode_code(cpt);
    return CLASS_OF_CATEGORY[code & 0x1F] | ((code & WHITESPACE_BIT) ? TL_U_WHITESPACE : 0);
}

static bool is_continuation(unsigned char b) {
    return (b & 0xC0) == 0x80;
}

uint32_t tl_utf8_decode(const char *str, size_t len, size_t *n) {
    const unsigned char *s = (const unsigned char *)str;
    unsigned char b = s[0];
    *n = 1;
    if (b < 0x80) {
        return b;
    }
    if (b < 0xC0) { /* a continuation byte where a character should start */
        return TL_UNICODE_REPLACEMENT;
    }
    if (b < 0xE0) {
        if (len < 2 || !is_continuation(s[1])) {
            return TL_UNICODE_REPLACEMENT;
        }
        *n = 2;
        return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (b < 0xF0) {
        if (len < 3 || !is_continuation(s[1]) || !is_continuation(s[2])) {
            return TL_UNICODE_REPLACEMENT;
        }
        *n = 3;
        return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    if (b < 0xF8) {
        if (len < 4 || !is_continuation(s[1]) || !is_continuation(s[2]) || !is_continuation(s[3])) {
            return TL_UNICODE_REPLACEMENT;
        }
        uint32_t cpt = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                       ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (cpt > 0x10FFFF) {
            return TL_UNICODE_REPLACEMENT;
        }
        *n = 4;
        return cpt;
    }
    return TL_UNICODE_REPLACEMENT;
}

size_t tl_utf8_encode(uint32_t cpt, char out[4]) {
    if (cpt < 0x80) {
        out[0] = (char)cpt;
        return 1;
    }
    if (cpt < 0x800) {
        out[0] = (char)(0xC0 | (cpt >> 6));
        out[1] = (char)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt < 0x10000) {
        out[0] = (char)(0xE0 | (cpt >> 12));
        out[1] = (char)(0x80 | ((cpt >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cpt & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cpt >> 18));
    out[1] = (char)(0x80 | ((cpt >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cpt >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cpt & 0x3F));
    return 4;
}
