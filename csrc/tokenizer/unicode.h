/* UTF-8 decoding and the Unicode character classes the pre-tokenizer regexes use
 * (\p{L}, \p{N}, \p{P}, \p{S}, \p{M}, \s). The tables are generated
 * (unicode_tables.c, by gen_unicode_tables.py); this header says how to read them. */
#ifndef TL_UNICODE_H
#define TL_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* General categories, in the generator's order (Cn, unassigned, is 0). */
typedef enum tl_ucat {
    TL_UCAT_CN, TL_UCAT_LU, TL_UCAT_LL, TL_UCAT_LT, TL_UCAT_LM, TL_UCAT_LO,
    TL_UCAT_MN, TL_UCAT_MC, TL_UCAT_ME, TL_UCAT_ND, TL_UCAT_NL, TL_UCAT_NO,
    TL_UCAT_PC, TL_UCAT_PD, TL_UCAT_PS, TL_UCAT_PE, TL_UCAT_PI, TL_UCAT_PF, TL_UCAT_PO,
    TL_UCAT_SM, TL_UCAT_SC, TL_UCAT_SK, TL_UCAT_SO,
    TL_UCAT_ZS, TL_UCAT_ZL, TL_UCAT_ZP,
    TL_UCAT_CC, TL_UCAT_CF, TL_UCAT_CS, TL_UCAT_CO,
} tl_ucat;

/* Character classes as bits, so a regex class like [^\s\p{L}\p{N}] is one mask test. */
enum {
    TL_U_LETTER = 1 << 0,     /* \p{L}: Lu Ll Lt Lm Lo */
    TL_U_NUMBER = 1 << 1,     /* \p{N}: Nd Nl No */
    TL_U_PUNCT = 1 << 2,      /* \p{P}: Pc Pd Ps Pe Pi Pf Po */
    TL_U_SYMBOL = 1 << 3,     /* \p{S}: Sm Sc Sk So */
    TL_U_MARK = 1 << 4,       /* \p{M}: Mn Mc Me */
    TL_U_SEPARATOR = 1 << 5,  /* \p{Z}: Zs Zl Zp */
    TL_U_OTHER = 1 << 6,      /* \p{C}: Cc Cf Cs Co Cn */
    TL_U_WHITESPACE = 1 << 7, /* \s: the White_Space property (not a category) */
};

/* Generated tables (unicode_tables.c): code = tl_ucat | 0x80 for White_Space. */
extern const char tl_unicode_version[];
extern const uint8_t tl_unicode_latin1_code[256];
extern const size_t tl_unicode_n_ranges;
extern const uint32_t tl_unicode_range_start[];
extern const uint8_t tl_unicode_range_code[];

tl_ucat tl_unicode_category(uint32_t cpt);
/* The TL_U_* bits of a code point (0 beyond U+10FFFF). */
unsigned tl_unicode_flags(uint32_t cpt);

#define TL_UNICODE_REPLACEMENT 0xFFFDu

/* Decodes the code point at s[0..len), len >= 1, and sets *n to the bytes it used.
 * As llama.cpp's unicode_cpts_from_utf8: a byte that does not start a complete
 * sequence (stray continuation byte, 0xF8..0xFF, truncated or broken sequence) decodes
 * to U+FFFD and uses one byte, so decoding never fails and always advances. Unlike
 * llama.cpp, a 4-byte sequence above U+10FFFF is also treated as invalid (llama.cpp
 * throws when it re-encodes one). Overlong forms and surrogates decode as llama.cpp
 * decodes them, to the value their bits spell. */
uint32_t tl_utf8_decode(const char *s, size_t len, size_t *n);

/* Writes cpt (<= U+10FFFF) as 1-4 bytes to out and returns how many. */
size_t tl_utf8_encode(uint32_t cpt, char out[4]);

#endif
