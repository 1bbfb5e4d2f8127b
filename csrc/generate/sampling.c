/* Token sampling: logit bias, repetition penalties, greedy or top-k / top-p / min-p /
 * temperature, and a seeded draw.
 *
 * The pipeline runs on a copy of the raw logits, in this order (llama.cpp's default chain,
 * common/sampling.cpp, without its DRY / typical / XTC stages):
 *
 *   1. logit bias        z[id] += bias                       (-inf bans a token)
 *   2. penalties         over the last penalty_last_n accepted tokens, for each distinct token t
 *                        seen c_t > 0 times: z_t = z_t / r if z_t > 0 else z_t * r (repeat,
 *                        CTRL with llama.cpp's negative-logit rule), then
 *                        z_t -= c_t * frequency + presence
 *   3. temperature <= 0  argmax of z, ties to the lowest id; stop.
 *   4. top-k             keep the k largest z (k = 0: off)
 *   5. top-p             softmax of the survivors at temperature 1; keep the shortest
 *                        best-first prefix whose mass reaches p (p = 1: off)
 *   6. min-p             keep z_t >= z_max + log(min_p), i.e. p_t >= min_p * p_max (0: off)
 *   7. temperature       z /= T
 *   8. softmax and draw  one uniform double from the sampler's own generator.
 *
 * As in llama.cpp the truncations (4-6) see temperature-1 probabilities and temperature only
 * reshapes what survives; Meta's reference instead applies temperature before top-p. Ties in
 * every ordering break towards the lower token id, so results do not depend on the
 * selection algorithm. Temperature -> 0+ tends to step 3: the surviving maximum dominates.
 *
 * Logprobs are never of the pipeline's distribution: they are log-softmax of the raw logits,
 * as Meta's reference reports them (-cross_entropy of the logits). The log-partition is summed
 * in integers (tl_exp_fixed), so that a GPU's sum of the same row has the same bits.
 *
 * A GPU backend may instead hand over a row's best candidates (sampling.h): the same stages
 * then run on them, with the same results.
 *
 * Memory: every buffer is allocated by tl_sampler_new (n_vocab-sized scratch and the history
 * ring); sampling allocates nothing. */
#include "sampling.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/status.h"
#include "torchless.h"

/* ---------------------------------------------------------------- random numbers */

/* xoshiro256** 1.0 (Blackman & Vigna, https://prng.di.unimi.it/), seeded through
 * splitmix64 as its authors recommend, so that any 64-bit seed (0 included) gives a
 * well-mixed, non-zero state. */
typedef struct { uint64_t s[4]; } rng_state;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng_state *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_state *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, 1) with 53 random bits */
static double rng_uniform(rng_state *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------- the sampler */

typedef struct candidate {
    float logit;
    int32_t id;
    float w; /* unnormalised probability, set by set_weights */
} candidate;

struct tl_sampler {
    tl_sampler_params p; /* logit_bias pointers point at bias_ids / bias below */
    int32_t n_vocab;
    rng_state rng;

    int32_t *bias_ids; /* a copy of the caller's logit bias */
    float *bias;

    /* penalty history: the last penalty_last_n accepted tokens (ring; none when the window
     * is the whole context), the count of each token in the window, and the set of tokens
     * with a non-zero count (distinct[0..n_distinct), where[t] = index of t in it). */
    int32_t *ring;
    int64_t ring_len, ring_head;
    uint32_t *count;
    int32_t *distinct, *where;
    int32_t n_distinct;

    float *z;          /* n_vocab: the logits the pipeline works on */
    candidate *cand;   /* n_vocab: the surviving candidates */
    uint8_t *mark;     /* n_vocab, zero between calls (with bias or penalties): tl_sampler_plan's set */
};

tl_sampler_params tl_sampler_default_params(void) {
    tl_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.penalty_last_n = 64;
    p.seed = 0;
    return p;
}

static tl_status check_params(const tl_sampler_params *p, int32_t n_vocab) {
    if (n_vocab < 1) return tl_set_error(TL_ERR_INVALID, "sampler: n_vocab = %d (must be >= 1)", (int)n_vocab);
    if (!isfinite(p->temperature) || p->temperature < 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: temperature = %g (must be finite and >= 0; 0 = greedy)",
                            (double)p->temperature);
    if (p->top_k < 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: top_k = %d (must be >= 0; 0 = off)", (int)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return tl_set_error(TL_ERR_INVALID, "sampler: top_p = %g (must be in (0, 1]; 1 = off)", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return tl_set_error(TL_ERR_INVALID, "sampler: min_p = %g (must be in [0, 1); 0 = off)", (double)p->min_p);
    if (!isfinite(p->repeat_penalty) || !(p->repeat_penalty > 0))
        return tl_set_error(TL_ERR_INVALID, "sampler: repeat_penalty = %g (must be finite and > 0; 1 = off)",
                            (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty))
        return tl_set_error(TL_ERR_INVALID, "sampler: presence_penalty = %g (must be finite; 0 = off)",
                            (double)p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return tl_set_error(TL_ERR_INVALID, "sampler: frequency_penalty = %g (must be finite; 0 = off)",
                            (double)p->frequency_penalty);
    if (p->penalty_last_n < -1)
        return tl_set_error(TL_ERR_INVALID,
                            "sampler: penalty_last_n = %d (must be >= -1; -1 = whole context, 0 = off)",
                            (int)p->penalty_last_n);
    if (p->n_logit_bias < 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: n_logit_bias = %d (must be >= 0)", (int)p->n_logit_bias);
    if (p->n_logit_bias > 0 && (!p->logit_bias_ids || !p->logit_bias))
        return tl_set_error(TL_ERR_INVALID, "sampler: n_logit_bias = %d but the id or bias array is NULL",
                            (int)p->n_logit_bias);
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias_ids[i];
        float b = p->logit_bias[i];
        if (id < 0 || id >= n_vocab)
            return tl_set_error(TL_ERR_INVALID, "sampler: logit_bias token id %d (must be in [0, %d))", (int)id,
                                (int)n_vocab);
        /* -inf is allowed: it bans the token */
        if (isnan(b) || b == INFINITY)
            return tl_set_error(TL_ERR_INVALID, "sampler: logit_bias[%d] = %g (must be finite, or -inf to ban)",
                                (int)id, (double)b);
    }
    return TL_OK;
}

void tl_sampler_free(tl_sampler *s) {
    if (!s) return;
    free(s->bias_ids);
    free(s->bias);
    free(s->ring);
    free(s->count);
    free(s->distinct);
    free(s->where);
    free(s->z);
    free(s->cand);
    free(s->mark);
    free(s);
}

tl_status tl_sampler_new(const tl_sampler_params *p, int32_t n_vocab, tl_sampler **out) {
    if (!out) return tl_set_error(TL_ERR_INVALID, "sampler: out is NULL");
    *out = NULL;
    if (!p) return tl_set_error(TL_ERR_INVALID, "sampler: params is NULL");
    tl_status st = check_params(p, n_vocab);
    if (st) return st;

    tl_sampler *s = calloc(1, sizeof *s);
    if (!s) return tl_set_error(TL_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t nv = (size_t)n_vocab;
    bool ok = true;
    if (p->n_logit_bias > 0) {
        s->bias_ids = malloc((size_t)p->n_logit_bias * sizeof *s->bias_ids);
        s->bias = malloc((size_t)p->n_logit_bias * sizeof *s->bias);
        ok = s->bias_ids && s->bias;
        if (ok) {
            memcpy(s->bias_ids, p->logit_bias_ids, (size_t)p->n_logit_bias * sizeof *s->bias_ids);
            memcpy(s->bias, p->logit_bias, (size_t)p->n_logit_bias * sizeof *s->bias);
        }
    }
    s->p.logit_bias_ids = s->bias_ids;
    s->p.logit_bias = s->bias;
    if (p->penalty_last_n > 0) {
        s->ring = malloc((size_t)p->penalty_last_n * sizeof *s->ring);
        ok = ok && s->ring;
    }
    if (p->penalty_last_n != 0) {
        s->count = calloc(nv, sizeof *s->count);
        s->distinct = malloc(nv * sizeof *s->distinct);
        s->where = malloc(nv * sizeof *s->where);
        ok = ok && s->count && s->distinct && s->where;
    }
    if (p->n_logit_bias > 0 || p->penalty_last_n != 0) {
        s->mark = calloc(nv, 1);
        ok = ok && s->mark;
    }
    s->z = malloc(nv * sizeof *s->z);
    s->cand = malloc(nv * sizeof *s->cand);
    ok = ok && s->z && s->cand;
    if (!ok) {
        tl_sampler_free(s);
        return tl_set_error(TL_ERR_NOMEM, "sampler: out of memory (n_vocab %d, penalty_last_n %d)", (int)n_vocab,
                            (int)p->penalty_last_n);
    }
    tl_sampler_reset(s, p->seed);
    *out = s;
    return TL_OK;
}

void tl_sampler_reset(tl_sampler *s, uint64_t seed) {
    if (!s) return;
    s->p.seed = seed;
    rng_seed(&s->rng, seed);
    for (int32_t i = 0; i < s->n_distinct; i++) s->count[s->distinct[i]] = 0;
    s->n_distinct = 0;
    s->ring_len = s->ring_head = 0;
}

/* ---------------------------------------------------------------- penalty history */

static void history_add(tl_sampler *s, int32_t t) {
    if (s->count[t]++ == 0) {
        s->where[t] = s->n_distinct;
        s->distinct[s->n_distinct++] = t;
    }
}

static void history_remove(tl_sampler *s, int32_t t) {
    if (--s->count[t] == 0) {
        int32_t i = s->where[t], last = s->distinct[--s->n_distinct];
        s->distinct[i] = last;
        s->where[last] = i;
    }
}

/* Tokens outside [0, n_vocab) are ignored (they cannot be penalised). */
void tl_sampler_accept(tl_sampler *s, int32_t token) {
    if (!s || s->p.penalty_last_n == 0 || token < 0 || token >= s->n_vocab) return;
    if (s->p.penalty_last_n > 0) {
        int64_t cap = s->p.penalty_last_n;
        if (s->ring_len == cap) history_remove(s, s->ring[s->ring_head]); /* the oldest leaves the window */
        else s->ring_len++;
        s->ring[s->ring_head] = token;
        s->ring_head = (s->ring_head + 1) % cap;
    } else if (s->count[token] == UINT32_MAX) {
        return; /* whole-context window: saturate rather than wrap */
    }
    history_add(s, token);
}

/* ---------------------------------------------------------------- selection */

/* The candidate order: larger logit first, then lower id. A total order, so every
 * selection below gives the same result. */
static inline bool better(candidate a, candidate b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

/* Min-heap on `better` (the worst candidate at the root). */
static void sift_down(candidate *h, int64_t n, int64_t i) {
    candidate x = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(h[c], h[c + 1])) c++;
        if (!better(x, h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Moves the m best of c[0..n) into c[0..m), best first. O(n log m), in place. */
static void select_best(candidate *c, int64_t n, int64_t m) {
    if (m > n) m = n;
    if (m <= 0) return;
    for (int64_t i = m / 2; i-- > 0;) sift_down(c, m, i);
    for (int64_t i = m; i < n; i++) {
        if (better(c[i], c[0])) {
            candidate t = c[0];
            c[0] = c[i];
            c[i] = t;
            sift_down(c, m, 0);
        }
    }
    /* heap sort: repeatedly move the worst to the end */
    for (int64_t end = m - 1; end > 0; end--) {
        candidate t = c[0];
        c[0] = c[end];
        c[end] = t;
        sift_down(c, end, 0);
    }
}

/* ---------------------------------------------------------------- pipeline stages */

static bool penalties_on(const tl_sampler_params *p) {
    return p->penalty_last_n != 0 &&
           !(p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f);
}

/* 1. logit bias, 2. penalties, on z[t] for the tokens they concern (and no other) */
static void adjust(tl_sampler *s, float *z) {
    const tl_sampler_params *p = &s->p;
    for (int32_t i = 0; i < p->n_logit_bias; i++) { /* a repeated id adds up */
        float *zt = &z[s->bias_ids[i]];
        *zt += s->bias[i];
        if (*zt > FLT_MAX) *zt = FLT_MAX;
    }
    if (!penalties_on(p)) return;
    for (int32_t i = 0; i < s->n_distinct; i++) {
        int32_t t = s->distinct[i];
        float c = (float)s->count[t];
        /* CTRL divides; llama.cpp multiplies non-positive logits instead, so a penalised
         * token never becomes more likely */
        if (z[t] <= 0) z[t] *= p->repeat_penalty;
        else z[t] /= p->repeat_penalty;
        z[t] -= c * p->frequency_penalty + p->presence_penalty;
        /* extreme penalties must not create +inf (every probability NaN) or NaN (-inf - -inf) */
        if (isnan(z[t])) z[t] = -INFINITY;
        else if (z[t] > FLT_MAX) z[t] = FLT_MAX;
    }
}

/* The weights w = exp((logit - max) / T) of c[0..n), in float (the sums are in double);
 * returns their sum. */
static double set_weights(candidate *c, int64_t n, float T) {
    float zmax = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (c[i].logit > zmax) zmax = c[i].logit;
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        c[i].w = expf((c[i].logit - zmax) / T);
        total += c[i].w;
    }
    return total;
}

static inline void swap_cand(candidate *a, candidate *b) {
    candidate t = *a;
    *a = *b;
    *b = t;
}

/* top-p on c[0..n) (any order): the shortest best-first prefix whose temperature-1 probability
 * mass (within the candidates) reaches top_p, moved to c[0..k); returns k.
 *
 * A quickselect guided by mass instead of rank: partition around a pivot, and the mass of the
 * side better than the pivot says on which side the prefix ends. Expected O(n), no sort; the
 * nucleus comes out unordered, which the draw does not mind. c[0..lo) always holds tokens
 * known to be in the nucleus, with mass `acc`. */
static int64_t apply_top_p(candidate *c, int64_t n, double top_p) {
    double want = top_p * set_weights(c, n, 1.0f), acc = 0;
    int64_t lo = 0, hi = n;
    int rounds = 0; /* median-of-three can be defeated; after 64 rounds, sort what is left */
    while (hi - lo > 16 && rounds++ < 64) {
        /* median of three as the pivot, moved to hi - 1 */
        int64_t mid = lo + (hi - lo) / 2;
        if (better(c[mid], c[lo])) swap_cand(&c[mid], &c[lo]);
        if (better(c[hi - 1], c[lo])) swap_cand(&c[hi - 1], &c[lo]);
        if (better(c[hi - 1], c[mid])) swap_cand(&c[hi - 1], &c[mid]);
        swap_cand(&c[mid], &c[hi - 1]); /* the median */
        candidate pivot = c[hi - 1];
        int64_t q = lo;
        double mass_better = 0;
        for (int64_t i = lo; i < hi - 1; i++)
            if (better(c[i], pivot)) {
                mass_better += c[i].w;
                swap_cand(&c[i], &c[q++]);
            }
        swap_cand(&c[q], &c[hi - 1]);
        /* c[lo..q) better than the pivot, c[q] the pivot, c[q+1..hi) worse */
        if (acc + mass_better >= want) {
            hi = q; /* the prefix ends before the pivot */
        } else {
            acc += mass_better + c[q].w;
            if (acc >= want) return q + 1;
            lo = q + 1;
        }
    }
    /* a few left (or the budget ran out): sort them and walk */
    if (hi - lo > 16) select_best(c + lo, hi - lo, hi - lo);
    for (int64_t i = lo + 1; i < hi; i++)
        for (int64_t j = i; j > lo && better(c[j], c[j - 1]); j--) swap_cand(&c[j], &c[j - 1]);
    for (int64_t i = lo; i < hi; i++) {
        acc += c[i].w;
        if (acc >= want) return i + 1;
    }
    return hi; /* rounding: the whole remaining range (hi == n here unless we narrowed) */
}

/* min-p: keep logit >= max + log(min_p), i.e. p >= min_p * p_max. Order is kept. */
static int64_t apply_min_p(candidate *c, int64_t n, double min_p) {
    float zmax = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (c[i].logit > zmax) zmax = c[i].logit;
    double threshold = (double)zmax + log(min_p);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if ((double)c[i].logit >= threshold) c[k++] = c[i];
    return k;
}

/* softmax of c[0..n) at temperature T and one draw; returns the chosen id. */
static int32_t draw(tl_sampler *s, candidate *c, int64_t n, float T) {
    double total = set_weights(c, n, T);
    double u = rng_uniform(&s->rng) * total, cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += c[i].w;
        if (u < cum) return c[i].id;
    }
    /* rounding left u at the very top: the last candidate with non-zero weight */
    for (int64_t i = n; i-- > 0;)
        if (c[i].w > 0) return c[i].id;
    return c[0].id;
}

/* 5. top-p, 6. min-p, 7. temperature, 8. softmax and draw, on the candidates c[0..n) (every
 * token with z > -inf; best first when top-k cut them): the chosen id, -1 if there is none. */
static int32_t sample_from(tl_sampler *s, candidate *c, int64_t n) {
    if (n == 0) return -1;
    if (s->p.top_p < 1.0f) n = apply_top_p(c, n, s->p.top_p);
    if (s->p.min_p > 0.0f) n = apply_min_p(c, n, s->p.min_p);
    return draw(s, c, n, s->p.temperature);
}

/* ---------------------------------------------------------------- the log-partition */

/* exp(x) for -64 <= x <= 0 in float32 operations every backend performs alike (IEEE
 * round-to-nearest, no fused multiply-add: -ffp-contract=off here, __fmul_rn/__fadd_rn in
 * CUDA, FP_CONTRACT OFF in OpenCL): n = round(x / ln 2) by adding and taking away 1.5 * 2^23;
 * r = x - n ln 2 in two parts (Cody-Waite: n * 0.693359375 is exact); Cephes expf's polynomial
 * for exp(r); times 2^n. Within 2 ulp of exp, and never above 1. */
/* exp(x - n ln 2) for n = round(x / ln 2): the reduction and Cephes' polynomial */
static inline __attribute__((always_inline)) float exp_reduced(float x, float n) {
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r;
    p = p + 1.0f;
    return p;
}

static float exp_canonical(float x) {
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float p = exp_reduced(x, n);
    union { uint32_t u; float f; } two_n = {(uint32_t)((int32_t)n + 127) << 23}; /* n in [-93, 0] */
    return p * two_n.f;
}

uint64_t tl_exp_fixed(float x) {
    if (!(x >= -64.0f)) return 0; /* below 2^-92: nothing at 2^-63; also -inf and NaN */
    return (uint64_t)(exp_canonical(x) * 0x1p63f);
}

static inline uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The sum of tl_exp_fixed(l[i] - max) over a row, as sums of the terms' low and high 32 bits
 * (each below 2^64 for rows of fewer than 2^32: no carries, so the compiler may vectorize).
 * The terms are tl_exp_fixed's, bit for bit (test_sampling checks it at every CPU level),
 * computed without branches or float-to-integer conversions: x below -64 (or NaN) becomes -64,
 * whose term is 0; n comes from the rounding constant's low bits; exp(r) * 2^24 is p's
 * mantissa, and the term that times 2^(n + 39), a shift. */
static inline __attribute__((always_inline)) void row_sum_body(const float *l, int32_t n, float max, uint64_t *lo32,
                                                                uint64_t *hi32) {
    uint64_t lo = 0, hi = 0;
    for (int32_t i = 0; i < n; i++) {
        const uint32_t u = bits_of(l[i] - max);
        const uint32_t low = 0u - (uint32_t)((u > 0xC2800000u) | (u - 0x7F800001u < 0x7FFFFFu)); /* < -64, NaN */
        const float x = float_of((u & ~low) | (0xC2800000u & low));
        const float y = x * 1.44269504088896341f + 12582912.0f, nf = y - 12582912.0f;
        const int32_t shift = (int32_t)(bits_of(y) - 0x4B400000u) + 39;
        const float p = exp_reduced(x, nf);
        const uint32_t pb = bits_of(p); /* p in [0.7, 1.42]: exponent 126 or 127 */
        const uint64_t p24 = (uint64_t)((pb & 0x7FFFFFu) | 0x800000u) << ((pb >> 23) - 126);
        const uint32_t left = shift > 0 ? (uint32_t)shift : 0, right = shift < 0 ? (uint32_t)-shift : 0;
        const uint64_t t = (p24 << left) >> right;
        lo += t & 0xFFFFFFFFu;
        hi += t >> 32;
    }
    *lo32 = lo, *hi32 = hi;
}

typedef void (*row_sum_fn)(const float *l, int32_t n, float max, uint64_t *lo32, uint64_t *hi32);
/* without vectors the plain terms are faster (3x: no 64-bit shifts by lane) */
static void row_sum_portable(const float *l, int32_t n, float max, uint64_t *lo32, uint64_t *hi32) {
    uint64_t lo = 0, hi = 0;
    for (int32_t i = 0; i < n; i++) {
        const uint64_t t = tl_exp_fixed(l[i] - max);
        lo += t & 0xFFFFFFFFu;
        hi += t >> 32;
    }
    *lo32 = lo, *hi32 = hi;
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) static void row_sum_avx2(const float *l, int32_t n, float max, uint64_t *lo32,
                                                         uint64_t *hi32) {
    row_sum_body(l, n, max, lo32, hi32);
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static void row_sum_avx512(const float *l, int32_t n,
                                                                                       float max, uint64_t *lo32,
                                                                                       uint64_t *hi32) {
    row_sum_body(l, n, max, lo32, hi32);
}
#endif

/* A row's max and first NaN or +inf, and (when `sum`) the sum of tl_top_k_stats. */
static void row_stats(const float *l, int32_t n, bool sum, tl_top_k_stats *st) {
    memset(st, 0, sizeof *st);
    st->max = -INFINITY;
    st->bad = -1;
    for (int32_t i = 0; i < n; i++) {
        if (st->bad < 0 && (isnan(l[i]) || l[i] == INFINITY)) st->bad = i, st->bad_value = l[i];
        if (l[i] > st->max) st->max = l[i];
    }
    if (!sum || !isfinite(st->max)) return;
    row_sum_fn f = row_sum_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (tl_cpu_level_get() == TL_CPU_AVX512) f = row_sum_avx512;
    else if (tl_cpu_level_get() == TL_CPU_AVX2) f = row_sum_avx2;
#endif
    uint64_t lo32, hi32;
    f(l, n, st->max, &lo32, &hi32);
    /* lo32 + hi32 * 2^32 in 128 bits */
    st->sum_lo = lo32 + (hi32 << 32);
    st->sum_hi = (hi32 >> 32) + (st->sum_lo < lo32);
}

/* the raw logits: no NaN, no +inf (it would make every probability 0 or NaN), not all -inf */
static tl_status check_row(const tl_top_k_stats *st) {
    if (st->bad >= 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: logits[%d] = %g (logits must be finite or -inf)", (int)st->bad,
                            (double)st->bad_value);
    if (st->max == -INFINITY) return tl_set_error(TL_ERR_INVALID, "sampler: every logit is -inf");
    return TL_OK;
}

/* log Z of the raw logits, logprob_t = l_t - log Z: the exact integer sum, then its log in double */
static double log_partition(const tl_top_k_stats *st) {
    return (double)st->max + log(((double)st->sum_hi * 0x1p64 + (double)st->sum_lo) * 0x1p-63);
}

/* ---------------------------------------------------------------- sample */

tl_status tl_sampler_sample(tl_sampler *s, const float *logits, int32_t *token, float *logprob,
                            tl_token_logprob *top, int32_t n_top) {
    if (!s || !logits || !token) return tl_set_error(TL_ERR_INVALID, "sampler: NULL sampler, logits or token");
    const int32_t nv = s->n_vocab;
    if (n_top < 0 || n_top > nv)
        return tl_set_error(TL_ERR_INVALID, "sampler: n_top = %d (must be in [0, %d])", (int)n_top, (int)nv);
    if (n_top > 0 && !top) return tl_set_error(TL_ERR_INVALID, "sampler: n_top = %d but top is NULL", (int)n_top);

    tl_top_k_stats st;
    row_stats(logits, nv, logprob || n_top > 0, &st);
    tl_status e = check_row(&st);
    if (e) return e;
    const double log_z = logprob || n_top > 0 ? log_partition(&st) : 0;
    if (n_top > 0) {
        candidate *c = s->cand;
        for (int32_t i = 0; i < nv; i++) c[i] = (candidate){logits[i], i, 0};
        select_best(c, nv, n_top);
        for (int32_t i = 0; i < n_top; i++)
            top[i] = (tl_token_logprob){c[i].id, (float)((double)c[i].logit - log_z)};
    }

    /* 1. logit bias, 2. penalties */
    float *z = s->z;
    memcpy(z, logits, (size_t)nv * sizeof *z);
    adjust(s, z);

    int32_t chosen = -1;
    if (s->p.temperature <= 0) {
        /* 3. greedy: the first maximum */
        float best = -INFINITY;
        for (int32_t i = 0; i < nv; i++)
            if (z[i] > best) {
                best = z[i];
                chosen = i;
            }
    } else {
        /* the candidates: every token not banned (-inf) */
        candidate *c = s->cand;
        int64_t n = 0;
        for (int32_t i = 0; i < nv; i++)
            if (z[i] > -INFINITY) c[n++] = (candidate){z[i], i, 0};
        /* 4. top-k */
        if (s->p.top_k > 0 && s->p.top_k < n) {
            select_best(c, n, s->p.top_k);
            n = s->p.top_k;
        }
        chosen = sample_from(s, c, n);
    }
    if (chosen < 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: every token has logit -inf after logit bias and penalties");

    *token = chosen;
    if (logprob) *logprob = (float)((double)logits[chosen] - log_z);
    return TL_OK;
}

/* ---------------------------------------------------------------- sample from candidates */

/* Adds t to the set ids[0..n) (marked in s->mark) unless it is there; false when full. */
static bool plan_add(tl_sampler *s, int32_t t, int32_t *ids, int32_t *n, int32_t cap) {
    if (t < 0 || t >= s->n_vocab || s->mark[t]) return true;
    if (*n == cap) return false;
    s->mark[t] = 1;
    ids[(*n)++] = t;
    return true;
}

bool tl_sampler_plan(tl_sampler *s, const int32_t *pending, size_t n_pending, int32_t max_k, int32_t *k, int32_t *ids,
                     int32_t *n_ids) {
    const tl_sampler_params *p = &s->p;
    const bool greedy = p->temperature <= 0;
    if (!greedy && p->top_k == 0) return false; /* every token may be drawn */
    /* greedy: the best; else the best top_k and one more, which says whether more than top_k
     * tokens survive bias and penalties (if not, the pipeline sees them in id order) */
    const int64_t m = greedy ? 1 : (int64_t)p->top_k + 1;
    if (m > max_k) return false;
    /* the tokens adjust() changes: the bias ids, and with penalties on, the window's tokens
     * after the pending ones are accepted (a superset: the window now, and the last
     * penalty_last_n pending ones) */
    const int32_t cap = max_k - (int32_t)m;
    int32_t n = 0;
    bool ok = true;
    for (int32_t i = 0; ok && i < p->n_logit_bias; i++) ok = plan_add(s, s->bias_ids[i], ids, &n, cap);
    if (penalties_on(p)) {
        for (int32_t i = 0; ok && i < s->n_distinct; i++) ok = plan_add(s, s->distinct[i], ids, &n, cap);
        size_t from = p->penalty_last_n > 0 && n_pending > (size_t)p->penalty_last_n ? n_pending - (size_t)p->penalty_last_n : 0;
        for (size_t i = from; ok && i < n_pending; i++) ok = plan_add(s, pending[i], ids, &n, cap);
    }
    for (int32_t i = 0; i < n; i++) s->mark[ids[i]] = 0;
    if (!ok) return false;
    *k = m + n < s->n_vocab ? (int32_t)m + n : s->n_vocab;
    *n_ids = n;
    return true;
}

static int by_id(const void *a, const void *b) {
    const int32_t x = ((const candidate *)a)->id, y = ((const candidate *)b)->id;
    return (x > y) - (x < y);
}

tl_status tl_sampler_sample_top_k(tl_sampler *s, const tl_top_k_stats *stats, const tl_top_k_cand *cand, int32_t k,
                                  const int32_t *ids, const float *at_ids, int32_t n_ids, int32_t *token, float *logprob) {
    if (!s || !stats || !cand || !token || k < 1 || k > s->n_vocab || n_ids < 0 || (n_ids > 0 && (!ids || !at_ids || !s->mark)))
        return tl_set_error(TL_ERR_INVALID, "sampler: bad candidates (k %d, %d ids)", (int)k, (int)n_ids);
    const bool greedy = s->p.temperature <= 0;
    if (!greedy && s->p.top_k == 0) return tl_set_error(TL_ERR_INVALID, "sampler: candidates need top_k > 0 or greedy");
    for (int32_t j = 0; j < n_ids + k; j++) {
        const int32_t id = j < n_ids ? ids[j] : cand[j - n_ids].id;
        if (id < 0 || id >= s->n_vocab)
            return tl_set_error(TL_ERR_INVALID, "sampler: candidate id %d out of range [0, %d)", (int)id, (int)s->n_vocab);
    }
    tl_status e = check_row(stats);
    if (e) return e;

    /* 1. logit bias, 2. penalties, on the tokens they change (z holds those, and only those) */
    float *z = s->z;
    for (int32_t j = 0; j < n_ids; j++) {
        z[ids[j]] = at_ids[j];
        s->mark[ids[j]] = 1;
    }
    adjust(s, z);
    /* the best of the other tokens, whose z is their raw logit, and the changed ones */
    candidate *c = s->cand;
    int64_t n = 0;
    for (int32_t i = 0; i < k; i++)
        if (!(n_ids > 0 && s->mark[cand[i].id])) c[n++] = (candidate){cand[i].logit, cand[i].id, 0};
    for (int32_t j = 0; j < n_ids; j++)
        if (s->mark[ids[j]]) { /* once per id */
            s->mark[ids[j]] = 0;
            c[n++] = (candidate){z[ids[j]], ids[j], 0};
        }
    /* the row's best m of the changed row (greedy: 1; else top_k + 1, tl_sampler_plan), and of
     * those the ones not banned */
    const int64_t m = greedy ? 1 : (int64_t)s->p.top_k + 1;
    select_best(c, n, m);
    if (n > m) n = m;
    int64_t live = 0;
    while (live < n && c[live].logit > -INFINITY) live++;

    int32_t chosen = -1;
    if (greedy) {
        /* 3. greedy: the first maximum */
        if (live > 0) chosen = c[0].id;
    } else {
        /* 4. top-k: tl_sampler_sample keeps the best top_k, best first, when more survive; all
         * of them, in id order, when no more than top_k do */
        if (live > s->p.top_k) live = s->p.top_k;
        else qsort(c, (size_t)live, sizeof *c, by_id);
        chosen = sample_from(s, c, live);
    }
    if (chosen < 0)
        return tl_set_error(TL_ERR_INVALID, "sampler: every token has logit -inf after logit bias and penalties");

    *token = chosen;
    if (logprob) {
        float raw = NAN;
        for (int32_t j = 0; j < n_ids && isnan(raw); j++)
            if (ids[j] == chosen) raw = at_ids[j];
        for (int32_t i = 0; i < k && isnan(raw); i++)
            if (cand[i].id == chosen) raw = cand[i].logit;
        *logprob = (float)((double)raw - log_partition(stats));
    }
    return TL_OK;
}

tl_status tl_top_k_reference(const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a) {
    if (!logits || !a || rows < 1 || n_vocab < 1 || a->k < 1 || a->k > n_vocab || a->k > TL_TOP_K_MAX || a->n_ids < 0 ||
        a->n_ids > TL_TOP_K_MAX || !a->stats || !a->cand || (a->n_ids > 0 && (!a->ids || !a->at_ids)))
        return tl_set_error(TL_ERR_INVALID, "top_k: bad arguments (rows %d, n_vocab %d, k %d, %d ids)", (int)rows,
                            (int)n_vocab, (int)a->k, (int)a->n_ids);
    candidate *c = malloc((size_t)n_vocab * sizeof *c);
    if (!c) return tl_set_error(TL_ERR_NOMEM, "top_k: out of memory");
    for (int32_t r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * n_vocab;
        row_stats(l, n_vocab, true, &a->stats[r]);
        for (int32_t i = 0; i < n_vocab; i++) c[i] = (candidate){l[i], i, 0};
        select_best(c, n_vocab, a->k);
        for (int32_t i = 0; i < a->k; i++) a->cand[(size_t)r * a->k + i] = (tl_top_k_cand){c[i].logit, c[i].id};
        for (int32_t j = 0; j < a->n_ids; j++) {
            const int32_t id = a->ids[(size_t)r * a->n_ids + j];
            a->at_ids[(size_t)r * a->n_ids + j] = id >= 0 && id < n_vocab ? l[id] : NAN;
        }
    }
    free(c);
    return TL_OK;
}
