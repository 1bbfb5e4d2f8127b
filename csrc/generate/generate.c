/* The generation loop as a state machine: prompt, then sample -> forward one token
 * at a time; stop tokens, stop strings (held back until they can no longer match),
 * whole UTF-8 characters only, max_new_tokens. Python's stream iterator calls
 * tl_generation_next once per token with the GIL released.
 *
 * On a backend with a top_k op (a GPU) the logits stay on the device whenever the sampler can
 * do with a row's best candidates (generate/sampling.h: greedy, or top_k on): only those
 * cross to the host. TORCHLESS_DEVICE_SAMPLING=0 downloads every row instead (the same
 * tokens and logprobs, for comparing). */
#include "generate/sampling.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct tl_generation {
    tl_context *ctx;
    tl_sampler *sampler;
    const tl_tokenizer *tok;
    int32_t seq, n_vocab;
    int32_t *prompt;
    size_t n_prompt;
    int32_t max_new, n_new;
    bool ignore_eog, special, started;
    tl_finish_reason finish;
    char **stop;
    size_t *stop_len;
    int32_t n_stop;
    size_t max_stop;
    float *logits;
    bool on_device;        /* the backend picks candidates where the logits are */
    int32_t *ids;          /* TL_TOP_K_MAX each: the sampler's plan, and what the op returns */
    tl_top_k_cand *cand;
    float *at_ids;
    tl_top_k_stats stats;
    int32_t last; /* the token to feed next (after the first step) */
    int32_t prev; /* the one before it */
    char *held;   /* text not yet released */
    size_t n_held, cap_held;
    char *out;    /* what the last step released */
    size_t cap_out;
};

void tl_generation_free(tl_generation *g) {
    if (!g) return;
    for (int32_t i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->stop);
    free(g->stop_len);
    free(g->prompt);
    free(g->logits);
    free(g->ids);
    free(g->cand);
    free(g->at_ids);
    free(g->held);
    free(g->out);
    free(g);
}

tl_status tl_generation_new(tl_context *c, int32_t seq, const int32_t *prompt, size_t n_prompt, tl_sampler *sampler,
                            const tl_generate_params *p, tl_generation **out) {
    *out = NULL;
    if (!c || !sampler || !p) return tl_set_error(TL_ERR_INVALID, "generate: missing context, sampler or parameters");
    if (n_prompt == 0 || !prompt) return tl_set_error(TL_ERR_INVALID, "generate: the prompt is empty");
    if (!c->model->tokenizer)
        return tl_set_error(TL_ERR_INVALID, "generate: the model has no tokenizer (its file has no tokenizer.ggml.* metadata)");
    if (seq < 0 || seq >= c->max_batch_size)
        return tl_set_error(TL_ERR_INVALID, "generate: sequence %d is out of range [0, %d)", seq, c->max_batch_size);
    if (p->max_new_tokens < 0) return tl_set_error(TL_ERR_INVALID, "generate: max_new_tokens must be >= 0, got %d", p->max_new_tokens);
    if ((uint64_t)n_prompt + (uint64_t)p->max_new_tokens > (uint64_t)c->max_seq_len)
        return tl_set_error(TL_ERR_INVALID,
                            "generate: prompt of %zu tokens + max_new_tokens %d exceeds the context of %d positions",
                            n_prompt, p->max_new_tokens, c->max_seq_len);
    const int32_t n_vocab = c->model->config.n_vocab;
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= n_vocab)
            return tl_set_error(TL_ERR_INVALID, "generate: prompt token %d at index %zu is out of range [0, %d)", prompt[i], i,
                                n_vocab);
    if (p->n_stop < 0 || (p->n_stop && !p->stop)) return tl_set_error(TL_ERR_INVALID, "generate: bad stop strings");
    tl_generation *g = calloc(1, sizeof *g);
    if (!g) return tl_set_error(TL_ERR_NOMEM, "generate: out of memory");
    g->ctx = c;
    g->sampler = sampler;
    g->tok = c->model->tokenizer;
    g->seq = seq;
    g->n_vocab = n_vocab;
    g->max_new = p->max_new_tokens;
    g->ignore_eog = p->ignore_eog;
    g->special = p->special;
    g->n_prompt = n_prompt;
    g->prompt = malloc(n_prompt * sizeof *g->prompt);
    g->logits = malloc((size_t)n_vocab * sizeof *g->logits);
    g->stop = calloc((size_t)(p->n_stop ? p->n_stop : 1), sizeof *g->stop);
    g->stop_len = calloc((size_t)(p->n_stop ? p->n_stop : 1), sizeof *g->stop_len);
    if (!g->prompt || !g->logits || !g->stop || !g->stop_len) goto nomem;
    const char *dev = getenv("TORCHLESS_DEVICE_SAMPLING");
    g->on_device = c->stream->ops->top_k && !(dev && strcmp(dev, "0") == 0);
    if (g->on_device) {
        g->ids = malloc(TL_TOP_K_MAX * sizeof *g->ids);
        g->cand = malloc(TL_TOP_K_MAX * sizeof *g->cand);
        g->at_ids = malloc(TL_TOP_K_MAX * sizeof *g->at_ids);
        if (!g->ids || !g->cand || !g->at_ids) goto nomem;
    }
    memcpy(g->prompt, prompt, n_prompt * sizeof *prompt);
    for (int32_t i = 0; i < p->n_stop; i++) {
        if (!p->stop[i] || !p->stop[i][0]) {
            tl_generation_free(g);
            return tl_set_error(TL_ERR_INVALID, "generate: stop string %d is empty", i);
        }
        g->stop[i] = strdup(p->stop[i]);
        if (!g->stop[i]) goto nomem;
        g->stop_len[i] = strlen(p->stop[i]);
        if (g->stop_len[i] > g->max_stop) g->max_stop = g->stop_len[i];
        g->n_stop++;
    }
    *out = g;
    return TL_OK;
nomem:
    tl_generation_free(g);
    return tl_set_error(TL_ERR_NOMEM, "generate: out of memory");
}

static tl_status grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return TL_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return tl_set_error(TL_ERR_NOMEM, "generate: out of memory");
    *buf = p;
    *cap = n;
    return TL_OK;
}

/* Bytes at the end of s[0..n) that start a UTF-8 character not yet complete. */
static size_t incomplete_utf8_tail(const char *s, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Release what can no longer be part of a stop string or a split character. Sets
 * finish when a stop string is complete (the text from it on is dropped). */
static tl_status release(tl_generation *g, bool final, tl_generated *out) {
    size_t keep = 0, cut = g->n_held;
    /* a complete stop string: everything before its first occurrence goes out */
    for (int32_t i = 0; i < g->n_stop; i++) {
        for (size_t at = 0; at + g->stop_len[i] <= g->n_held; at++)
            if (memcmp(g->held + at, g->stop[i], g->stop_len[i]) == 0) {
                if (at < cut) cut = at;
                break;
            }
    }
    if (cut < g->n_held) {
        g->finish = TL_FINISH_STOP;
        final = true;
        g->n_held = cut;
    }
    if (!final) {
        /* hold back the longest tail that is a proper prefix of a stop string */
        for (int32_t i = 0; i < g->n_stop; i++)
            for (size_t k = g->stop_len[i] - 1; k > keep; k--)
                if (k <= g->n_held && memcmp(g->held + g->n_held - k, g->stop[i], k) == 0) {
                    keep = k;
                    break;
                }
        size_t partial = incomplete_utf8_tail(g->held, g->n_held - keep);
        keep += partial;
    }
    size_t n = g->n_held - keep;
    tl_status s = grow(&g->out, &g->cap_out, n + 1);
    if (s) return s;
    memcpy(g->out, g->held, n);
    g->out[n] = '\0';
    memmove(g->held, g->held + n, keep);
    g->n_held = keep;
    out->text = g->out;
    out->text_len = n;
    return TL_OK;
}

tl_status tl_generation_next(tl_generation *g, tl_generated *out) {
    memset(out, 0, sizeof *out);
    out->token = -1;
    if (g->finish) return tl_set_error(TL_ERR_INVALID, "generate: the generation has finished");
    tl_status s;
    /* candidates from the device when the sampler can do with them; the prompt's tokens count
     * for the penalties of the first sample */
    int32_t k = 0, n_ids = 0;
    const bool on_device = g->on_device && g->max_new > 0 &&
                           tl_sampler_plan(g->sampler, g->started ? NULL : g->prompt, g->started ? 0 : g->n_prompt,
                                           TL_TOP_K_MAX, &k, g->ids, &n_ids) &&
                           k <= g->n_vocab;
    const tl_top_k_args top_k = {k, g->ids, n_ids, &g->stats, g->cand, g->at_ids};
    if (!g->started) {
        /* the prompt: cache cleared, positions 0..n-1, logits of the last one */
        tl_context_clear(g->ctx, g->seq);
        int32_t n = (int32_t)g->n_prompt;
        int32_t *pos = malloc((size_t)n * 2 * sizeof(int32_t));
        if (!pos) return tl_set_error(TL_ERR_NOMEM, "generate: out of memory");
        int32_t *seqs = pos + n;
        for (int32_t i = 0; i < n; i++) {
            pos[i] = i;
            seqs[i] = g->seq;
        }
        tl_batch b = {n, g->prompt, pos, seqs, NULL};
        s = on_device ? tl_forward_top_k(g->ctx, &b, &top_k) : tl_forward(g->ctx, &b, g->logits);
        free(pos);
        if (s) return s;
        for (int32_t i = 0; i < n; i++) tl_sampler_accept(g->sampler, g->prompt[i]);
        g->started = true;
    } else {
        int32_t pos = (int32_t)g->n_prompt + g->n_new - 1;
        tl_batch b = {1, &g->last, &pos, &g->seq, NULL};
        s = on_device ? tl_forward_top_k(g->ctx, &b, &top_k) : tl_forward(g->ctx, &b, g->logits);
        if (s) return s;
    }
    if (g->max_new == 0) {
        g->finish = TL_FINISH_LENGTH;
        out->finish = g->finish;
        return release(g, true, out);
    }
    int32_t token;
    float logprob;
    s = on_device ? tl_sampler_sample_top_k(g->sampler, &g->stats, g->cand, k, g->ids, g->at_ids, n_ids, &token, &logprob)
                  : tl_sampler_sample(g->sampler, g->logits, &token, &logprob, NULL, 0);
    if (s) return s;
    tl_sampler_accept(g->sampler, token);
    g->n_new++;
    g->prev = g->last;
    g->last = token;
    out->token = token;
    out->logprob = logprob;
    bool eog = !g->ignore_eog && tl_tokenizer_is_eog(g->tok, token);
    if (!eog) {
        size_t need = 0;
        char small[64];
        if ((s = tl_token_to_piece(g->tok, token, g->special, small, sizeof small, &need))) return s;
        if ((s = grow(&g->held, &g->cap_held, g->n_held + need + 1))) return s;
        if (need <= sizeof small) memcpy(g->held + g->n_held, small, need);
        else if ((s = tl_token_to_piece(g->tok, token, g->special, g->held + g->n_held, need, &need))) return s;
        /* SentencePiece: the dummy-prefix space of a word right after BOS is not text
         * (llama2.c and sentencepiece drop it too) */
        int32_t prev = g->n_new >= 2 ? g->prev : g->prompt[g->n_prompt - 1];
        if (g->tok->kind == TL_TOKENIZER_SPM && g->tok->add_space_prefix && prev == g->tok->bos && need > 0 &&
            g->held[g->n_held] == ' ') {
            memmove(g->held + g->n_held, g->held + g->n_held + 1, need - 1);
            need--;
        }
        g->n_held += need;
    }
    if (eog) g->finish = TL_FINISH_STOP;
    else if (g->n_new >= g->max_new) g->finish = TL_FINISH_LENGTH;
    s = release(g, g->finish != TL_FINISH_NONE, out);
    out->finish = g->finish;
    return s;
}

tl_status tl_generate_stream(tl_generation *g, bool (*on_step)(const tl_generated *step, void *user), void *user) {
    if (!on_step) return tl_set_error(TL_ERR_INVALID, "generate: no callback");
    tl_generated step;
    do {
        if (g->ctx->cancel) {
            g->ctx->cancel = 0;
            return tl_set_error(TL_ERR_CANCELLED, "generate: cancelled");
        }
        tl_status s = tl_generation_next(g, &step);
        if (s) return s;
        if (!on_step(&step, user)) break;
    } while (!step.finish);
    return TL_OK;
}
