/* The sampler from a row's candidates instead of the row: for a backend whose top_k op
 * (backends/backend.h) picks them where the logits are, so that only they cross to the host.
 * tl_sampler_sample_top_k gives the same token and logprob, bit for bit, as tl_sampler_sample
 * on the whole row.
 *
 *   tl_sampler_plan          what the op must return for the next token: k candidates, and
 *                            the logits of the tokens that logit bias and penalties change
 *   backend top_k            (or tl_top_k_reference on the host)
 *   tl_sampler_sample_top_k  bias and penalties on those tokens, then steps 3-8 (sampling.c)
 *
 * Why it is exact: the tokens bias and penalties leave alone keep their raw logits, so the best
 * k - n_ids of them by raw logit, with the changed ones, hold the best of the changed row. */
#ifndef TL_SAMPLING_H
#define TL_SAMPLING_H

#include "backends/backend.h"

/* Whether the next token can come from candidates (false: the sampler needs the whole row:
 * temperature > 0 with top_k off, or more than max_k candidates). If so, *k candidates and the
 * logits of ids[0..*n_ids) (ids has room for max_k). pending: tokens to be accepted before the
 * sample (a prompt): the ids cover them. */
bool tl_sampler_plan(tl_sampler *s, const int32_t *pending, size_t n_pending, int32_t max_k, int32_t *k, int32_t *ids,
                     int32_t *n_ids);

/* tl_sampler_sample (no top list) from one row's stats, its k candidates and the logits of the
 * ids tl_sampler_plan named. */
tl_status tl_sampler_sample_top_k(tl_sampler *s, const tl_top_k_stats *stats, const tl_top_k_cand *cand, int32_t k,
                                  const int32_t *ids, const float *at_ids, int32_t n_ids, int32_t *token, float *logprob);

/* What a backend's top_k op writes into a's arrays, computed on the host from host logits:
 * the definition the device kernels are tested against. */
tl_status tl_top_k_reference(const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a);

/* floor(2^63 exp(x)) for x <= 0 (0 below -64, for -inf and NaN), with exp evaluated by fixed
 * float32 operations (Cody-Waite reduction, Cephes' polynomial, no fused multiply-add) so that
 * the kernels of every backend repeat it bit for bit: a term of tl_top_k_stats' sum. */
uint64_t tl_exp_fixed(float x);

#endif
