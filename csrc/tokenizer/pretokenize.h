/* Byte-level BPE pre-tokenizers: the text is cut into pieces ("pre-tokens") by the
 * regexes llama.cpp selects with tokenizer.ggml.pre, before BPE merges each piece.
 * Each regex is a hand-written matcher with the regex's exact semantics (leftmost
 * match, alternatives tried in order, greedy quantifiers with backtracking, the text
 * between matches kept as pieces of its own: HF tokenizers' Split(..., "isolated")).
 * A name may apply several regexes in turn, each splitting the previous pieces. */
#ifndef TL_PRETOKENIZE_H
#define TL_PRETOKENIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct tl_pretokenizer tl_pretokenizer;

/* The pre-tokenizer llama.cpp uses for tokenizer.ggml.pre = name (NULL or "" =
 * "default"); TL_ERR_UNSUPPORTED naming the known names otherwise. */
tl_status tl_pretokenizer_lookup(const char *name, const tl_pretokenizer **out);
/* The canonical name (first of its aliases: "llama-bpe" for "llama3"). */
const char *tl_pretokenizer_name(const tl_pretokenizer *p);
/* llama.cpp's per-name switches: a piece that is itself a vocabulary entry is emitted
 * whole (LLaMA-3), and whether BOS is added by default. */
bool tl_pretokenizer_ignore_merges(const tl_pretokenizer *p);
bool tl_pretokenizer_add_bos(const tl_pretokenizer *p);

/* The pieces of one text. text is the input as valid UTF-8: each byte that does not
 * start a valid sequence became U+FFFD (EF BF BD), as llama.cpp does; piece i is
 * text[i ? end[i - 1] : 0 .. end[i]). Reuse one across calls; free with
 * tl_pretokens_free. */
typedef struct tl_pretokens {
    char *text;
    size_t len;
    size_t *end;
    size_t n;
    /* scratch kept between calls */
    uint32_t *cpts;
    uint8_t *flags; /* TL_U_* of each code point */
    size_t cpts_cap, text_cap;
    size_t *ends_a, *ends_b;
    size_t ends_cap;
} tl_pretokens;

tl_status tl_pretokenize(const tl_pretokenizer *p, const char *text, size_t len, tl_pretokens *out);
void tl_pretokens_free(tl_pretokens *pt);

#endif
