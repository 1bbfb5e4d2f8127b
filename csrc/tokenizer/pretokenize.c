/* Byte-level BPE pre-tokenizers, one hand-written matcher per regex (no regex engine).
 *
 * Source of the regexes, the names and the per-name switches: llama.cpp
 * src/llama-vocab.cpp (llm_tokenizer_bpe, llama_vocab::impl::load). A matcher answers
 * one question: does the regex match at position pos, and how long is the match? The
 * answer follows the regex exactly: alternatives are tried in order and the first that
 * matches wins; quantifiers are greedy and give back characters only where the rest of
 * the alternative needs them. split_piece() then does what a regex split does: it
 * searches for the leftmost match, and keeps both the matches and the text between
 * them as pieces (HF tokenizers' Split(regex, "isolated"), llama.cpp's
 * unicode_regex_split). */
#include "tokenizer/pretokenize.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/unicode.h"

/* One piece of text being searched: code points c[start..end) and their classes f. */
typedef struct span {
    const uint32_t *c;
    const uint8_t *f;
    size_t start, end;
} span;

/* Length of the match of one regex at pos (pos < end), 0 when it does not match there. */
typedef size_t (*match_fn)(const span *s, size_t pos);

#define MAX_PASSES 6

struct tl_pretokenizer {
    const char *names[16]; /* llama.cpp's tokenizer.ggml.pre values, canonical first; NULL-ended */
    match_fn passes[MAX_PASSES]; /* regexes applied in turn; NULL-ended */
    bool ignore_merges;
    bool add_bos;
};

/* ------------------------------------------------------------------ class helpers */

static bool has(const span *s, size_t i, unsigned mask) {
    return i < s->end && (s->f[i] & mask);
}

/* [^\s\p{L}\p{N}] */
static bool is_other(const span *s, size_t i) {
    return i < s->end && !(s->f[i] & (TL_U_WHITESPACE | TL_U_LETTER | TL_U_NUMBER));
}

static bool is_cr_or_lf(const span *s, size_t i) {
    return i < s->end && (s->c[i] == '\r' || s->c[i] == '\n');
}

/* How many characters from i on have one of the classes in mask. */
static size_t run_of(const span *s, size_t i, unsigned mask) {
    size_t j = i;
    while (has(s, j, mask)) {
        j++;
    }
    return j - i;
}

static size_t run_of_other(const span *s, size_t i) {
    size_t j = i;
    while (is_other(s, j)) {
        j++;
    }
    return j - i;
}

static bool in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid][0]) {
            hi = mid;
        } else if (c > r[mid][1]) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

static size_t run_in_ranges(const span *s, size_t i, const uint32_t (*r)[2], size_t n) {
    size_t j = i;
    while (j < s->end && in_ranges(s->c[j], r, n)) {
        j++;
    }
    return j - i;
}

/* ------------------------------------------------------------------ shared pieces */

static uint32_t ascii_lower(uint32_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, or with each letter [xX] when any_case (llama.cpp's
 * rewrite of LLaMA-3's (?i:'s|'t|'re|'ve|'m|'ll|'d)). */
static size_t match_contraction(const span *s, size_t p, bool any_case) {
    if (s->c[p] != '\'' || p + 1 >= s->end) {
        return 0;
    }
    uint32_t a = any_case ? ascii_lower(s->c[p + 1]) : s->c[p + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if (p + 2 >= s->end) {
        return 0;
    }
    uint32_t b = any_case ? ascii_lower(s->c[p + 2]) : s->c[p + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        return 3;
    }
    return 0;
}

/* \s+(?!\S): the whitespace run, less its last character when a non-space follows
 * (the lookahead makes the greedy run give one back); no match for a single
 * whitespace character before a non-space. */
static size_t match_space_run_not_before_nonspace(const span *s, size_t p) {
    size_t r = run_of(s, p, TL_U_WHITESPACE);
    if (r == 0) {
        return 0;
    }
    if (p + r == s->end) {
        return r;
    }
    return r > 1 ? r - 1 : 0;
}

/* ------------------------------------------------------------------ the regexes */

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static size_t match_gpt2(const span *s, size_t p) {
    size_t m = match_contraction(s, p, false);
    if (m) {
        return m;
    }
    /* " ?" takes the space only when the class follows; a space itself is none of them */
    size_t q = p + (s->c[p] == ' ' ? 1 : 0);
    if (has(s, q, TL_U_LETTER)) {
        return q - p + run_of(s, q, TL_U_LETTER);
    }
    if (has(s, q, TL_U_NUMBER)) {
        return q - p + run_of(s, q, TL_U_NUMBER);
    }
    if (is_other(s, q)) {
        return q - p + run_of_other(s, q);
    }
    return match_space_run_not_before_nonspace(s, p);
}

/* LLaMA-3 (max_digits 3) and Qwen2 (max_digits 1):
 * (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
 * \p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3_like(const span *s, size_t p, size_t max_digits) {
    size_t m = match_contraction(s, p, true);
    if (m) {
        return m;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ : the optional character is anything but CR, LF, a
     * letter (a letter starts the \p{L}+ itself) or a number */
    if (has(s, p, TL_U_LETTER)) {
        return run_of(s, p, TL_U_LETTER);
    }
    if (!is_cr_or_lf(s, p) && !has(s, p, TL_U_NUMBER) && has(s, p + 1, TL_U_LETTER)) {
        return 1 + run_of(s, p + 1, TL_U_LETTER);
    }
    /* \p{N}{1,max_digits} */
    if (has(s, p, TL_U_NUMBER)) {
        size_t r = run_of(s, p, TL_U_NUMBER);
        return r < max_digits ? r : max_digits;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t q = p + (s->c[p] == ' ' ? 1 : 0);
    if (is_other(s, q)) {
        size_t e = q + run_of_other(s, q);
        while (is_cr_or_lf(s, e)) {
            e++;
        }
        return e - p;
    }
    /* what is left at p is whitespace */
    size_t r = run_of(s, p, TL_U_WHITESPACE);
    if (r == 0) {
        return 0;
    }
    /* \s*[\r\n]+ : \s* gives back characters until [\r\n]+ can match, so the match
     * ends after the run's last CR or LF */
    for (size_t i = p + r; i > p; i--) {
        if (is_cr_or_lf(s, i - 1)) {
            return i - p;
        }
    }
    /* \s+(?!\S) | \s+ */
    if (p + r == s->end || r == 1) {
        return r;
    }
    return r - 1;
}

static size_t match_llama3(const span *s, size_t p) {
    return match_llama3_like(s, p, 3);
}

static size_t match_qwen2(const span *s, size_t p) {
    return match_llama3_like(s, p, 1);
}

/* \p{N} */
static size_t match_one_number(const span *s, size_t p) {
    return has(s, p, TL_U_NUMBER) ? 1 : 0;
}

/* \p{N}+ */
static size_t match_numbers(const span *s, size_t p) {
    return run_of(s, p, TL_U_NUMBER);
}

/* [0-9][0-9][0-9] */
static size_t match_three_ascii_digits(const span *s, size_t p) {
    for (size_t i = 0; i < 3; i++) {
        if (p + i >= s->end || s->c[p + i] < '0' || s->c[p + i] > '9') {
            return 0;
        }
    }
    return 3;
}

static bool is_punct_or(const span *s, size_t i, const char *ascii) {
    if (i >= s->end) {
        return false;
    }
    if (s->f[i] & TL_U_PUNCT) {
        return true;
    }
    return s->c[i] < 128 && s->c[i] != 0 && strchr(ascii, (int)s->c[i]) != NULL;
}

/* default: [\p{P}\$\+<=>\^~\|]+ */
static size_t match_punct_default(const span *s, size_t p) {
    size_t j = p;
    while (is_punct_or(s, j, "$+<=>^~|")) {
        j++;
    }
    return j - p;
}

/* falcon: [\p{P}\$\+<=>\^~\|`]+ */
static size_t match_punct_falcon(const span *s, size_t p) {
    size_t j = p;
    while (is_punct_or(s, j, "$+<=>^~|`")) {
        j++;
    }
    return j - p;
}

/* [\r\n] */
static size_t match_cr_or_lf(const span *s, size_t p) {
    return is_cr_or_lf(s, p) ? 1 : 0;
}

/* \s?X+ for a class X given by mask: the whitespace is taken only when X follows. */
static size_t match_space_then_run(const span *s, size_t p, unsigned mask) {
    if (has(s, p, TL_U_WHITESPACE) && has(s, p + 1, mask)) {
        return 1 + run_of(s, p + 1, mask);
    }
    return run_of(s, p, mask);
}

/* \s?\p{L}+ */
static size_t match_space_letters(const span *s, size_t p) {
    return match_space_then_run(s, p, TL_U_LETTER);
}

/* \s?\p{P}+ */
static size_t match_space_punct(const span *s, size_t p) {
    return match_space_then_run(s, p, TL_U_PUNCT);
}

/* [一-龥ࠀ-一가-퟿] (DeepSeek): U+4E00-U+9FA5 and U+0800-U+4E00 as written upstream
 * (together U+0800-U+9FA5), and Hangul U+AC00-U+D7FF. */
static const uint32_t DEEPSEEK_CJK[][2] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

static size_t match_deepseek_cjk(const span *s, size_t p) {
    return run_in_ranges(s, p, DEEPSEEK_CJK, sizeof DEEPSEEK_CJK / sizeof DEEPSEEK_CJK[0]);
}

/* DeepSeek LLM's letter class [A-Za-zµÀ-ÖØ-öø-ƺ...𞤀-𞥃] (the cased letters), as
 * code point ranges, sorted. */
static const uint32_t DEEPSEEK_LETTERS[][2] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6}, {0x00F8, 0x01BA},
    {0x01BC, 0x01BF}, {0x01C4, 0x0293}, {0x0295, 0x02AF}, {0x0370, 0x0373}, {0x0376, 0x0377}, {0x037B, 0x037D},
    {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A}, {0x038C, 0x038C}, {0x038E, 0x03A1}, {0x03A3, 0x03F5},
    {0x03F7, 0x0481}, {0x048A, 0x052F}, {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF},
    {0x1E900, 0x1E943},
};

/* DeepSeek LLM's punctuation class [!-/:-~！-／：-～‘-‟　-。]. */
static const uint32_t DEEPSEEK_PUNCT[][2] = {
    {0x0021, 0x002F}, {0x003A, 0x007E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};

#define N_RANGES(r) (sizeof(r) / sizeof((r)[0]))

/* \s?[class]+ over a range table */
static size_t match_space_then_ranges(const span *s, size_t p, const uint32_t (*r)[2], size_t n) {
    if (has(s, p, TL_U_WHITESPACE) && p + 1 < s->end && in_ranges(s->c[p + 1], r, n)) {
        return 1 + run_in_ranges(s, p + 1, r, n);
    }
    return run_in_ranges(s, p, r, n);
}

static size_t match_deepseek_letters(const span *s, size_t p) {
    return match_space_then_ranges(s, p, DEEPSEEK_LETTERS, N_RANGES(DEEPSEEK_LETTERS));
}

static size_t match_deepseek_punct(const span *s, size_t p) {
    return match_space_then_ranges(s, p, DEEPSEEK_PUNCT, N_RANGES(DEEPSEEK_PUNCT));
}

/* \s+$ : whitespace that runs to the end of the piece. Only a run's first character
 * is tried: had an earlier one in the same run matched, the search would not be here. */
static size_t match_trailing_space(const span *s, size_t p) {
    if (!has(s, p, TL_U_WHITESPACE) || (p > s->start && (s->f[p - 1] & TL_U_WHITESPACE))) {
        return 0;
    }
    size_t r = run_of(s, p, TL_U_WHITESPACE);
    return p + r == s->end ? r : 0;
}

/* ------------------------------------------------------------------ the names */

static const tl_pretokenizer PRETOKENIZERS[] = {
    {.names = {"default"},
     .passes = {match_punct_default, match_gpt2, match_numbers, match_three_ascii_digits}},
    {.names = {"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
     .passes = {match_llama3},
     .ignore_merges = true,
     .add_bos = true},
    {.names = {"dbrx", "smaug-bpe"}, .passes = {match_llama3}},
    {.names = {"gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat",
               "a.x-4.0", "mellum", "modern-bert", "trillion", "exaone4"},
     .passes = {match_gpt2}},
    {.names = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
     .passes = {match_one_number, match_gpt2}},
    {.names = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan"}, .passes = {match_qwen2}},
    {.names = {"deepseek-llm"},
     .passes = {match_cr_or_lf, match_deepseek_letters, match_deepseek_punct, match_trailing_space,
                match_deepseek_cjk, match_numbers}},
    {.names = {"deepseek-coder"},
     .passes = {match_cr_or_lf, match_space_letters, match_space_punct, match_deepseek_cjk, match_one_number}},
    {.names = {"falcon"}, .passes = {match_punct_falcon, match_gpt2, match_three_ascii_digits}},
};

#define N_PRETOKENIZERS (sizeof PRETOKENIZERS / sizeof PRETOKENIZERS[0])

tl_status tl_pretokenizer_lookup(const char *name, const tl_pretokenizer **out) {
    *out = NULL;
    if (name == NULL || name[0] == '\0') {
        name = "default"; /* llama.cpp: a file without tokenizer.ggml.pre */
    }
    for (size_t i = 0; i < N_PRETOKENIZERS; i++) {
        for (const char *const *n = PRETOKENIZERS[i].names; *n; n++) {
            if (strcmp(*n, name) == 0) {
                *out = &PRETOKENIZERS[i];
                return TL_OK;
            }
        }
    }
    char known[1024];
    size_t used = 0;
    known[0] = '\0';
    for (size_t i = 0; i < N_PRETOKENIZERS; i++) {
        for (const char *const *n = PRETOKENIZERS[i].names; *n; n++) {
            size_t l = strlen(*n);
            if (used + l + 3 < sizeof known) {
                if (used) {
                    memcpy(known + used, ", ", 2);
                    used += 2;
                }
                memcpy(known + used, *n, l + 1);
                used += l;
            }
        }
    }
    return tl_set_error(TL_ERR_UNSUPPORTED, "tokenizer: unknown pre-tokenizer '%.64s' (tokenizer.ggml.pre); known: %s",
                        name, known);
}

const char *tl_pretokenizer_name(const tl_pretokenizer *p) {
    return p->names[0];
}

bool tl_pretokenizer_ignore_merges(const tl_pretokenizer *p) {
    return p->ignore_merges;
}

bool tl_pretokenizer_add_bos(const tl_pretokenizer *p) {
    return p->add_bos;
}

/* ------------------------------------------------------------------ splitting */

/* The pieces of c[start..end) under one regex, appended to ends[*n] as end offsets:
 * every match, and the text between matches, as pieces of their own. */
static void split_piece(match_fn match, const span *s, size_t *ends, size_t *n) {
    size_t gap = s->start; /* start of text not matched yet */
    size_t p = s->start;
    while (p < s->end) {
        size_t m = match(s, p);
        if (m == 0) {
            p++;
            continue;
        }
        if (gap < p) {
            ends[(*n)++] = p;
        }
        p += m;
        ends[(*n)++] = p;
        gap = p;
    }
    if (gap < s->end) {
        ends[(*n)++] = s->end;
    }
}

static tl_status grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) {
        return TL_OK;
    }
    size_t bytes;
    if (tl_mul_overflows(need, elem, &bytes)) {
        return tl_set_error(TL_ERR_NOMEM, "pre-tokenize: text too long (%zu)", need);
    }
    void *p = realloc(*buf, bytes);
    if (p == NULL) {
        return tl_set_error(TL_ERR_NOMEM, "pre-tokenize: out of memory for %zu bytes", bytes);
    }
    *buf = p;
    *cap = need;
    return TL_OK;
}

tl_status tl_pretokenize(const tl_pretokenizer *p, const char *text, size_t len, tl_pretokens *out) {
    out->n = 0;
    out->len = 0;
    /* at most one code point per byte; U+FFFD for one invalid byte takes three */
    size_t cap = len + 1, text_need;
    if (tl_mul_overflows(len, 3, &text_need)) {
        return tl_set_error(TL_ERR_NOMEM, "pre-tokenize: text too long (%zu bytes)", len);
    }
    size_t cpts_cap = out->cpts_cap, ends_cap_a = out->ends_cap, ends_cap_b = out->ends_cap;
    tl_status st;
    if ((st = grow((void **)&out->cpts, &cpts_cap, cap, sizeof(uint32_t))) != TL_OK) {
        return st;
    }
    size_t flags_cap = out->cpts_cap;
    if ((st = grow((void **)&out->flags, &flags_cap, cap, 1)) != TL_OK) {
        return st;
    }
    out->cpts_cap = cpts_cap;
    if ((st = grow((void **)&out->ends_a, &ends_cap_a, cap, sizeof(size_t))) != TL_OK ||
        (st = grow((void **)&out->ends_b, &ends_cap_b, cap, sizeof(size_t))) != TL_OK) {
        return st;
    }
    out->ends_cap = ends_cap_a < ends_cap_b ? ends_cap_a : ends_cap_b;
    if ((st = grow((void **)&out->text, &out->text_cap, text_need + 1, 1)) != TL_OK) {
        return st;
    }

    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        uint32_t c = tl_utf8_decode(text + i, len - i, &used);
        out->cpts[n] = c;
        out->flags[n] = (uint8_t)tl_unicode_flags(c);
        n++;
        i += used;
    }

    /* every pass splits each piece of the previous one */
    size_t *cur = out->ends_a, *next = out->ends_b;
    size_t n_cur = 0;
    if (n > 0) {
        cur[n_cur++] = n;
    }
    for (int k = 0; k < MAX_PASSES && p->passes[k]; k++) {
        size_t n_next = 0, start = 0;
        for (size_t i = 0; i < n_cur; i++) {
            span s = {out->cpts, out->flags, start, cur[i]};
            split_piece(p->passes[k], &s, next, &n_next);
            start = cur[i];
        }
        size_t *t = cur;
        cur = next;
        next = t;
        n_cur = n_next;
    }

    /* back to UTF-8, piece ends in bytes (written over the code point offsets) */
    size_t b = 0, piece = 0;
    for (size_t i = 0; i < n; i++) {
        b += tl_utf8_encode(out->cpts[i], out->text + b);
        if (i + 1 == cur[piece]) {
            cur[piece++] = b;
        }
    }
    out->text[b] = '\0';
    out->len = b;
    out->end = cur;
    out->n = n_cur;
    return TL_OK;
}

void tl_pretokens_free(tl_pretokens *pt) {
    free(pt->text);
    free(pt->cpts);
    free(pt->flags);
    free(pt->ends_a);
    free(pt->ends_b);
    memset(pt, 0, sizeof *pt);
}
