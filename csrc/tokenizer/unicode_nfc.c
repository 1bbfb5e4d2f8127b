/* Normalization form C (UAX #15 section 3, "Normalization Process"): decompose every code
 * point canonically (recursively; Hangul syllables by the algorithm of Unicode ch. 3.12),
 * put each run of combining marks in canonical order (stable sort by combining class),
 * then recompose each mark with the last starter when nothing between blocks it. */
#include "tokenizer/unicode_nfc.h"

#include "tokenizer/unicode.h"

#include <stdlib.h>
#include <string.h>

/* Hangul (Unicode 3.12): S = SBase + (L * VCount + V) * TCount + T */
enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7 };
enum { LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

/* A byte that is not valid UTF-8 travels as RAW + byte: class 0, never decomposes or composes. */
#define RAW 0x110000u

static uint8_t ccc_of(uint32_t cp) {
    size_t lo = 0, hi = tl_nfc_n_ccc;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < tl_nfc_ccc[mid].first) hi = mid;
        else if (cp > tl_nfc_ccc[mid].last) lo = mid + 1;
        else return tl_nfc_ccc[mid].ccc;
    }
    return 0;
}

static const tl_nfc_triple *find_decomp(uint32_t cp) {
    size_t lo = 0, hi = tl_nfc_n_decomp;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < tl_nfc_decomp[mid].a) hi = mid;
        else if (cp > tl_nfc_decomp[mid].a) lo = mid + 1;
        else return &tl_nfc_decomp[mid];
    }
    return NULL;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a - LBASE < LCOUNT && b - VBASE < VCOUNT) return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a - SBASE < SCOUNT && (a - SBASE) % TCOUNT == 0 && b - TBASE - 1 < TCOUNT - 1) return a + (b - TBASE);
    size_t lo = 0, hi = tl_nfc_n_compose;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const tl_nfc_triple *t = &tl_nfc_compose[mid];
        if (a < t->a || (a == t->a && b < t->b)) hi = mid;
        else if (a > t->a || b > t->b) lo = mid + 1;
        else return t->c;
    }
    return 0;
}

typedef struct {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int push(cpbuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = cp;
    return 0;
}

/* Canonical decomposition of cp appended to b (the longest mapping chain is 4 deep). */
static int decompose(cpbuf *b, uint32_t cp, int depth) {
    if (cp - SBASE < SCOUNT) {
        uint32_t s = cp - SBASE, t = s % TCOUNT;
        if (push(b, LBASE + s / NCOUNT) || push(b, VBASE + (s % NCOUNT) / TCOUNT)) return -1;
        return t ? push(b, TBASE + t) : 0;
    }
    const tl_nfc_triple *d = cp < RAW && depth < 8 ? find_decomp(cp) : NULL;
    if (!d) return push(b, cp);
    if (decompose(b, d->b, depth + 1)) return -1;
    return d->c ? decompose(b, d->c, depth + 1) : 0;
}

tl_status tl_utf8_nfc(const char *s, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    size_t i = 0;
    while (i < len && (unsigned char)s[i] < 0x80) i++;
    if (i == len) return TL_OK; /* ASCII is NFC */

    cpbuf b = {0};
    for (size_t p = 0; p < len;) {
        size_t n;
        uint32_t cp = tl_utf8_decode(s + p, len - p, &n);
        /* a lone bad byte decodes to U+FFFD with n = 1; a real U+FFFD takes 3 bytes */
        if (cp == TL_UNICODE_REPLACEMENT && n == 1) cp = RAW + (unsigned char)s[p];
        if (decompose(&b, cp, 0)) goto nomem;
        p += n;
    }
    /* canonical ordering: a stable insertion sort of each run of nonzero classes */
    for (size_t k = 1; k < b.n; k++) {
        uint32_t cp = b.v[k];
        uint8_t c = cp < RAW ? ccc_of(cp) : 0;
        if (!c) continue;
        size_t j = k;
        while (j > 0) {
            uint8_t prev = b.v[j - 1] < RAW ? ccc_of(b.v[j - 1]) : 0;
            if (prev <= c) break;
            b.v[j] = b.v[j - 1];
            j--;
        }
        b.v[j] = cp;
    }
    /* canonical composition, in place: k reads, w writes */
    size_t w = 0, starter = SIZE_MAX;
    int last_class = -1;
    for (size_t k = 0; k < b.n; k++) {
        uint32_t cp = b.v[k];
        int c = cp < RAW ? ccc_of(cp) : 0;
        if (starter != SIZE_MAX && cp < RAW && (last_class == 0 || (last_class != -1 && last_class < c))) {
            uint32_t composite = compose(b.v[starter], cp);
            if (composite) {
                b.v[starter] = composite;
                continue;
            }
        }
        if (c == 0) {
            starter = cp < RAW ? w : SIZE_MAX;
            last_class = 0;
        } else {
            last_class = c;
        }
        b.v[w++] = cp;
    }
    b.n = w;

    size_t cap = b.n * 4 + 1;
    char *o = malloc(cap), *q = o;
    if (!o) goto nomem;
    for (size_t k = 0; k < b.n; k++) {
        if (b.v[k] >= RAW) *q++ = (char)(b.v[k] - RAW);
        else q += tl_utf8_encode(b.v[k], q);
    }
    free(b.v);
    size_t n_out = (size_t)(q - o);
    if (n_out == len && memcmp(o, s, len) == 0) { /* already NFC */
        free(o);
        return TL_OK;
    }
    *out = o;
    *out_len = n_out;
    return TL_OK;
nomem:
    free(b.v);
    return tl_set_error(TL_ERR_NOMEM, "tokenizer: out of memory normalizing %zu bytes", len);
}
