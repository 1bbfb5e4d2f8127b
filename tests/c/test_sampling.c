/* Sampler: parameter checks, greedy, truncation, penalties, determinism, raw logprobs, and
 * sampling from a row's candidates (the GPU path) giving the same bits as from the row.
 * Runs under ASan/UBSan/LSan in CI; the statistical checks live in tests/test_sampling.py. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "generate/sampling.h"
#include "torchless.h"

#define NV 1000

static uint64_t lcg_state = 12345;
static float rand_logit(void) { /* roughly uniform in [-8, 8) */
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(lcg_state >> 11) * 0x1.0p-53 * 16.0 - 8.0);
}

static tl_sampler *make(tl_sampler_params p, int32_t n_vocab) {
    tl_sampler *s = NULL;
    tl_status st = tl_sampler_new(&p, n_vocab, &s);
    CHECK(st == TL_OK, "tl_sampler_new: %s", tl_last_error());
    return s;
}

static void expect_invalid(tl_sampler_params p, int32_t n_vocab, const char *field) {
    tl_sampler *s = (tl_sampler *)1;
    tl_status st = tl_sampler_new(&p, n_vocab, &s);
    CHECK(st == TL_ERR_INVALID && s == NULL, "%s accepted", field);
    CHECK(strstr(tl_last_error(), field) != NULL, "message '%s' does not name %s", tl_last_error(), field);
}

static void test_bad_params_are_rejected_with_the_field_named(void) {
    tl_sampler_params d = tl_sampler_default_params(), p;
    p = d, p.temperature = -0.5f, expect_invalid(p, NV, "temperature");
    p = d, p.temperature = NAN, expect_invalid(p, NV, "temperature");
    p = d, p.temperature = INFINITY, expect_invalid(p, NV, "temperature");
    p = d, p.top_k = -1, expect_invalid(p, NV, "top_k");
    p = d, p.top_p = 0, expect_invalid(p, NV, "top_p");
    p = d, p.top_p = 1.5f, expect_invalid(p, NV, "top_p");
    p = d, p.top_p = NAN, expect_invalid(p, NV, "top_p");
    p = d, p.min_p = 1, expect_invalid(p, NV, "min_p");
    p = d, p.min_p = -0.1f, expect_invalid(p, NV, "min_p");
    p = d, p.repeat_penalty = 0, expect_invalid(p, NV, "repeat_penalty");
    p = d, p.repeat_penalty = INFINITY, expect_invalid(p, NV, "repeat_penalty");
    p = d, p.presence_penalty = NAN, expect_invalid(p, NV, "presence_penalty");
    p = d, p.frequency_penalty = INFINITY, expect_invalid(p, NV, "frequency_penalty");
    p = d, p.penalty_last_n = -2, expect_invalid(p, NV, "penalty_last_n");
    expect_invalid(d, 0, "n_vocab");
    int32_t ids[1] = {NV};
    float bias[1] = {1};
    p = d, p.n_logit_bias = 1, p.logit_bias_ids = ids, p.logit_bias = bias;
    expect_invalid(p, NV, "logit_bias");
    ids[0] = 3, bias[0] = NAN, expect_invalid(p, NV, "logit_bias");
    bias[0] = INFINITY, expect_invalid(p, NV, "logit_bias");
    bias[0] = -INFINITY; /* allowed: bans the token */
    tl_sampler *s = make(p, NV);
    tl_sampler_free(s);
}

static void test_greedy_picks_the_first_maximum(void) {
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 0;
    tl_sampler *s = make(p, NV);
    float *l = malloc(NV * sizeof *l);
    for (int i = 0; i < NV; i++) l[i] = rand_logit();
    l[700] = 20, l[300] = 20, l[900] = 20;
    int32_t tok = -1;
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK);
    CHECK(tok == 300, "greedy chose %d, want 300", (int)tok);
    free(l);
    tl_sampler_free(s);
}

static void test_top_k_draws_stay_among_the_k_largest(void) {
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 1.5f, p.top_k = 5, p.top_p = 1, p.min_p = 0;
    tl_sampler *s = make(p, NV);
    float *l = malloc(NV * sizeof *l);
    for (int i = 0; i < NV; i++) l[i] = rand_logit();
    int best[5] = {10, 200, 333, 512, 999};
    for (int j = 0; j < 5; j++) l[best[j]] = 9 + 0.1f * (float)j;
    for (int t = 0; t < 2000; t++) {
        int32_t tok;
        CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK);
        bool in = false;
        for (int j = 0; j < 5; j++) in |= tok == best[j];
        if (!in) {
            CHECK(in, "top-k 5 drew %d", (int)tok);
            break;
        }
    }
    free(l);
    tl_sampler_free(s);
}

static void test_same_seed_same_tokens_and_reset_replays(void) {
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 1, p.top_k = 0, p.top_p = 1, p.min_p = 0, p.seed = 42;
    tl_sampler *a = make(p, NV), *b = make(p, NV);
    p.seed = 43;
    tl_sampler *c = make(p, NV);
    float *l = malloc(NV * sizeof *l);
    for (int i = 0; i < NV; i++) l[i] = rand_logit() * 0.25f; /* flat: many choices */
    int32_t ta[64], tb, tc;
    int same_ab = 0, same_ac = 0;
    for (int t = 0; t < 64; t++) {
        tl_sampler_sample(a, l, &ta[t], NULL, NULL, 0);
        tl_sampler_sample(b, l, &tb, NULL, NULL, 0);
        tl_sampler_sample(c, l, &tc, NULL, NULL, 0);
        same_ab += ta[t] == tb;
        same_ac += ta[t] == tc;
    }
    CHECK(same_ab == 64, "same seed: %d of 64 equal", same_ab);
    CHECK(same_ac < 16, "different seeds: %d of 64 equal", same_ac);
    tl_sampler_reset(a, 42);
    int replay = 0;
    for (int t = 0; t < 64; t++) {
        int32_t tok;
        tl_sampler_sample(a, l, &tok, NULL, NULL, 0);
        replay += tok == ta[t];
    }
    CHECK(replay == 64, "reset(42) replayed %d of 64", replay);
    free(l);
    tl_sampler_free(a);
    tl_sampler_free(b);
    tl_sampler_free(c);
}

static void test_repeat_penalty_follows_llama_cpp_rule_within_the_window(void) {
    /* 4 tokens: 0 and 1 are tied at +2, 2 and 3 tied at -1 (all others -inf-free) */
    float l[4] = {2, 2, -1, -1};
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 0, p.repeat_penalty = 2, p.penalty_last_n = 2;
    tl_sampler *s = make(p, 4);
    int32_t tok;
    tl_sampler_accept(s, 0); /* 2 / 2 = 1 < 2: token 1 wins */
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK && tok == 1, "got %d", (int)tok);
    tl_sampler_accept(s, 1); /* both 1: ties go to 0 */
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK && tok == 0, "got %d", (int)tok);
    tl_sampler_accept(s, 5);  /* out of range: ignored */
    tl_sampler_accept(s, -1); /* likewise */
    tl_sampler_accept(s, 3);  /* window {1, 3}: 0 is free again */
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK && tok == 0, "got %d", (int)tok);

    /* negative logits are multiplied: -1 * 2 = -2 < -1 */
    float m[2] = {-1, -1};
    tl_sampler *t = make(p, 2);
    tl_sampler_accept(t, 0);
    CHECK(tl_sampler_sample(t, m, &tok, NULL, NULL, 0) == TL_OK && tok == 1, "got %d", (int)tok);
    tl_sampler_reset(t, 0); /* forgets history */
    CHECK(tl_sampler_sample(t, m, &tok, NULL, NULL, 0) == TL_OK && tok == 0, "got %d", (int)tok);
    tl_sampler_free(s);
    tl_sampler_free(t);
}

static void test_frequency_and_presence_subtract(void) {
    /* token 0 seen 3 times: 5 - 3*0.5 - 1 = 2.5; token 1 seen once: 4.4 - 0.5 - 1 = 2.9 */
    float l[3] = {5, 4.4f, 2.7f};
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 0, p.frequency_penalty = 0.5f, p.presence_penalty = 1, p.penalty_last_n = -1;
    tl_sampler *s = make(p, 3);
    for (int i = 0; i < 3; i++) tl_sampler_accept(s, 0);
    tl_sampler_accept(s, 1);
    int32_t tok;
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK && tok == 1, "got %d", (int)tok);
    tl_sampler_accept(s, 1); /* 4.4 - 1 - 1 = 2.4 < 2.5 */
    CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK && tok == 2, "got %d", (int)tok);
    tl_sampler_free(s);
}

static void test_logprobs_are_log_softmax_of_raw_logits(void) {
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 0.7f, p.repeat_penalty = 1.3f;
    int32_t ids[1] = {1};
    float bias[1] = {-INFINITY};
    p.n_logit_bias = 1, p.logit_bias_ids = ids, p.logit_bias = bias;
    tl_sampler *s = make(p, NV);
    float *l = malloc(NV * sizeof *l);
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < NV; i++) {
        l[i] = rand_logit();
        if (l[i] > mx) mx = l[i];
    }
    l[1] = 30; /* banned by the bias, still the raw favourite */
    mx = 30;
    for (int i = 0; i < NV; i++) sum += exp(l[i] - mx);
    double lse = mx + log(sum);
    tl_token_logprob top[8];
    int32_t tok;
    float lp;
    CHECK(tl_sampler_sample(s, l, &tok, &lp, top, 8) == TL_OK, "%s", tl_last_error());
    CHECK(tok != 1, "banned token drawn");
    CHECK(fabs(lp - (l[tok] - lse)) < 1e-5, "logprob %g, want %g", lp, l[tok] - lse);
    CHECK(top[0].token == 1 && fabs(top[0].logprob - (30 - lse)) < 1e-5);
    for (int i = 1; i < 8; i++) CHECK(top[i].logprob <= top[i - 1].logprob);
    CHECK(tl_sampler_sample(s, l, &tok, &lp, top, NV + 1) == TL_ERR_INVALID);
    free(l);
    tl_sampler_free(s);
}

static void test_bad_logits_are_rejected(void) {
    tl_sampler *s = make(tl_sampler_default_params(), 3);
    int32_t tok;
    float nan_l[3] = {0, NAN, 1}, inf_l[3] = {0, INFINITY, 1}, ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK(tl_sampler_sample(s, nan_l, &tok, NULL, NULL, 0) == TL_ERR_INVALID);
    CHECK(strstr(tl_last_error(), "logits[1]") != NULL, "%s", tl_last_error());
    CHECK(tl_sampler_sample(s, inf_l, &tok, NULL, NULL, 0) == TL_ERR_INVALID);
    CHECK(tl_sampler_sample(s, ninf, &tok, NULL, NULL, 0) == TL_ERR_INVALID);
    float ok[3] = {-INFINITY, 0, -INFINITY};
    CHECK(tl_sampler_sample(s, ok, &tok, NULL, NULL, 0) == TL_OK && tok == 1);
    tl_sampler_free(s);

    /* everything banned by the bias */
    tl_sampler_params p = tl_sampler_default_params();
    int32_t ids[2] = {0, 1};
    float bias[2] = {-INFINITY, -INFINITY};
    p.n_logit_bias = 2, p.logit_bias_ids = ids, p.logit_bias = bias;
    s = make(p, 2);
    float two[2] = {1, 2};
    CHECK(tl_sampler_sample(s, two, &tok, NULL, NULL, 0) == TL_ERR_INVALID);
    tl_sampler_free(s);
}

static void test_top_p_without_top_k_on_a_flat_vocabulary(void) {
    /* flat logits over 50k tokens: top-p 0.9 must grow its sorted prefix past 256 */
    enum { N = 50000 };
    tl_sampler_params p = tl_sampler_default_params();
    p.temperature = 1, p.top_k = 0, p.top_p = 0.9f, p.min_p = 0;
    tl_sampler *s = make(p, N);
    float *l = malloc(N * sizeof *l);
    for (int i = 0; i < N; i++) l[i] = (float)i * 1e-5f; /* increasing: the nucleus is the top ids */
    int bad = 0;
    for (int t = 0; t < 20; t++) {
        int32_t tok;
        CHECK(tl_sampler_sample(s, l, &tok, NULL, NULL, 0) == TL_OK);
        bad += tok < N / 20; /* the lowest 5% are far outside a 90% nucleus */
    }
    CHECK(bad == 0, "%d draws outside the nucleus", bad);
    free(l);
    tl_sampler_free(s);
}

/* ---- candidates (generate/sampling.h) against the whole row */

static int irand(int n) { return (int)(check_urand() * n); }

/* A row of the kind that tests the orders: continuous, on a coarse grid (many ties), partly or
 * mostly -inf, all equal, or with -0 beside +0. */
static void random_row(float *l, int nv, int kind) {
    for (int i = 0; i < nv; i++) {
        double u = check_urand() * 16 - 8;
        l[i] = kind == 1 ? (float)floor(u * 2) / 2 : kind == 3 ? 1.25f : kind == 4 ? (irand(2) ? 0.0f : -0.0f) : (float)u;
        if ((kind == 2 && irand(10) < 9) || (kind == 0 && irand(50) == 0)) l[i] = -INFINITY;
    }
    if (kind == 2) l[irand(nv)] = 0.5f; /* never all -inf */
}

/* Two samplers of the same parameters and seed, one given each row whole, the other the
 * candidates tl_sampler_plan asks for (made by tl_top_k_reference, the definition of a
 * backend's top_k op): the same tokens, logprobs and errors, bit for bit, over a prompt and a
 * run of steps with penalties, logit bias (bans, repeats), ties and every truncation. */
static void test_candidates_sample_as_the_whole_row(void) {
    int from_candidates = 0, steps = 0;
    for (int trial = 0; trial < 300; trial++) {
        const int sizes[] = {3, 7, 100, 1000, 5000};
        const int nv = sizes[irand(5)];
        tl_sampler_params p = tl_sampler_default_params();
        const float temps[] = {0, 0.3f, 1, 1.7f};
        p.temperature = temps[irand(4)];
        const int tks[] = {0, 1, 2, 5, 40, nv - 1, nv, nv + 5, 1023, 1100};
        p.top_k = tks[irand(10)];
        if (p.top_k < 0) p.top_k = 0;
        const float tps[] = {1, 0.95f, 0.5f}, mps[] = {0, 0.05f, 0.3f};
        p.top_p = tps[irand(3)], p.min_p = mps[irand(3)];
        const int wins[] = {0, 4, 64, -1};
        p.penalty_last_n = wins[irand(4)];
        if (irand(2)) p.repeat_penalty = 1.3f;
        if (irand(2)) p.frequency_penalty = 0.4f;
        if (irand(2)) p.presence_penalty = irand(2) ? 0.6f : -0.5f;
        int32_t bias_ids[6];
        float bias[6];
        p.n_logit_bias = irand(7);
        for (int i = 0; i < p.n_logit_bias; i++) {
            bias_ids[i] = i > 0 && irand(3) == 0 ? bias_ids[0] : irand(nv); /* repeats add up */
            bias[i] = irand(4) == 0 ? -INFINITY : (float)(check_urand() * 10 - 5);
        }
        p.logit_bias_ids = bias_ids, p.logit_bias = bias;
        p.seed = (uint64_t)trial * 7919;
        tl_sampler *a = make(p, nv), *b = make(p, nv);
        float *l = malloc((size_t)nv * sizeof *l), *at = malloc(TL_TOP_K_MAX * sizeof *at);
        int32_t *ids = malloc(TL_TOP_K_MAX * sizeof *ids), prompt[20];
        tl_top_k_cand *cand = malloc(TL_TOP_K_MAX * sizeof *cand);
        const int n_prompt = 1 + irand(20), kind = irand(5);
        for (int i = 0; i < n_prompt; i++) prompt[i] = irand(nv);
        for (int step = 0; step < 12; step++) {
            random_row(l, nv, kind);
            if (step == 11 && irand(4) == 0) l[irand(nv)] = irand(2) ? NAN : INFINITY;
            int32_t k = 0, n_ids = 0, ta = -1, tb = -2;
            float la = 0, lb = 1;
            const bool plan = tl_sampler_plan(b, step ? NULL : prompt, step ? 0 : (size_t)n_prompt, TL_TOP_K_MAX, &k, ids,
                                              &n_ids);
            const int64_t m = p.temperature <= 0 ? 1 : (int64_t)p.top_k + 1;
            if (p.temperature > 0 && p.top_k == 0) CHECK(!plan, "trial %d: candidates without top_k", trial);
            if (plan) CHECK(k == (m + n_ids < nv ? m + n_ids : nv) && m + n_ids <= TL_TOP_K_MAX, "trial %d: k %d", trial, (int)k);
            if (m + p.n_logit_bias + (p.penalty_last_n ? nv : 0) <= TL_TOP_K_MAX && (p.temperature <= 0 || p.top_k > 0))
                CHECK(plan, "trial %d step %d: no plan", trial, step);
            if (step == 0)
                for (int i = 0; i < n_prompt; i++) tl_sampler_accept(a, prompt[i]), tl_sampler_accept(b, prompt[i]);
            tl_status sa = tl_sampler_sample(a, l, &ta, &la, NULL, 0), sb;
            char ea[256];
            snprintf(ea, sizeof ea, "%s", sa ? tl_last_error() : "");
            if (plan) {
                tl_top_k_stats st;
                tl_top_k_args args = {k, ids, n_ids, &st, cand, at};
                CHECK(tl_top_k_reference(l, 1, nv, &args) == TL_OK, "%s", tl_last_error());
                sb = tl_sampler_sample_top_k(b, &st, cand, k, ids, at, n_ids, &tb, &lb);
                from_candidates++;
            } else {
                sb = tl_sampler_sample(b, l, &tb, &lb, NULL, 0);
            }
            steps++;
            CHECK(sa == sb, "trial %d step %d: status %d vs %d (%s)", trial, step, (int)sa, (int)sb, ea);
            if (sa || sb) {
                CHECK(strcmp(ea, tl_last_error()) == 0, "trial %d step %d: '%s' vs '%s'", trial, step, ea, tl_last_error());
                break;
            }
            CHECK(ta == tb && memcmp(&la, &lb, sizeof la) == 0,
                  "trial %d step %d (nv %d, T %g, top_k %d, top_p %g, min_p %g, window %d, %d biases, kind %d): "
                  "token %d logprob %.9g vs token %d logprob %.9g",
                  trial, step, nv, (double)p.temperature, (int)p.top_k, (double)p.top_p, (double)p.min_p,
                  (int)p.penalty_last_n, (int)p.n_logit_bias, kind, (int)ta, (double)la, (int)tb, (double)lb);
            if (ta != tb) break;
            tl_sampler_accept(a, ta);
            tl_sampler_accept(b, tb);
        }
        free(l), free(at), free(ids), free(cand);
        tl_sampler_free(a), tl_sampler_free(b);
    }
    CHECK(from_candidates > steps / 3, "only %d of %d steps from candidates", from_candidates, steps);
}

/* The log-partition's terms: exact at 0, monotone, exp within a few float ulp (and the
 * truncation to 2^-63), 0 below -64. */
static void test_fixed_exp_is_exp(void) {
    CHECK(tl_exp_fixed(0.0f) == (uint64_t)1 << 63);
    CHECK(tl_exp_fixed(-INFINITY) == 0 && tl_exp_fixed(NAN) == 0 && tl_exp_fixed(-64.5f) == 0);
    double worst = 0;
    uint64_t prev = (uint64_t)1 << 63;
    for (float x = -0.0f; x >= -40.0f; x -= 0.00137f) {
        const uint64_t f = tl_exp_fixed(x);
        const double e = (double)f * 0x1p-63, want = exp((double)x), rel = (fabs(e - want) - 0x1p-63) / want;
        if (rel > worst) worst = rel;
        CHECK(f <= prev, "not monotone at %g", (double)x);
        prev = f;
    }
    CHECK(worst < 3e-7, "relative error %.3g", worst);
}

/* The row sums of the stats (vectorized at each CPU level: ctest runs this at every one) are
 * the 128-bit sums of tl_exp_fixed's terms, on rows with -inf, NaN, +0 and -0, logits at and
 * far below max - 64, and lengths that leave vector tails. */
static void test_row_sums_are_the_sums_of_the_terms(void) {
    const int sizes[] = {1, 7, 33, 1000, 4099, 262144};
    float *l = malloc(262144 * sizeof *l);
    for (int si = 0; si < 6; si++) {
        const int n = sizes[si];
        for (int i = 0; i < n; i++) {
            const int c = irand(20);
            l[i] = c == 0 ? -INFINITY : c == 1 ? -0.0f : c == 2 ? 0.0f : c == 3 ? -200.0f : c == 4 ? -64.0f : c == 5 ? -43.7f
                                                                                                      : (float)(check_urand() * 60 - 50);
        }
        const bool nan = si % 2 == 1 && n > 2;
        if (nan) l[n / 2] = NAN; /* bad, yet summed as 0 */
        uint64_t lo = 0, hi = 0;
        float max = -INFINITY;
        for (int i = 0; i < n; i++)
            if (l[i] > max) max = l[i];
        for (int i = 0; i < n; i++) {
            const uint64_t t = tl_exp_fixed(l[i] - max);
            lo += t;
            hi += lo < t;
        }
        tl_top_k_stats st;
        tl_top_k_cand c;
        tl_top_k_args a = {1, NULL, 0, &st, &c, NULL};
        CHECK(tl_top_k_reference(l, 1, n, &a) == TL_OK, "%s", tl_last_error());
        CHECK(st.sum_lo == lo && st.sum_hi == hi && st.max == max && st.bad == (nan ? n / 2 : -1),
              "row of %d at %s: sum %llu:%llu, want %llu:%llu", n, tl_cpu_isa(), (unsigned long long)st.sum_hi,
              (unsigned long long)st.sum_lo, (unsigned long long)hi, (unsigned long long)lo);
    }
    free(l);
}

int main(void) {
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    const char *env = getenv("TORCHLESS_SEED");
    *check_rng() = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu, CPU level %s\n", (unsigned long long)*check_rng(), tl_cpu_isa());
    test_bad_params_are_rejected_with_the_field_named();
    test_greedy_picks_the_first_maximum();
    test_top_k_draws_stay_among_the_k_largest();
    test_same_seed_same_tokens_and_reset_replays();
    test_repeat_penalty_follows_llama_cpp_rule_within_the_window();
    test_frequency_and_presence_subtract();
    test_logprobs_are_log_softmax_of_raw_logits();
    test_bad_logits_are_rejected();
    test_top_p_without_top_k_on_a_flat_vocabulary();
    test_fixed_exp_is_exp();
    test_row_sums_are_the_sums_of_the_terms();
    test_candidates_sample_as_the_whole_row();
    tl_sampler_free(NULL);
    return check_summary();
}
