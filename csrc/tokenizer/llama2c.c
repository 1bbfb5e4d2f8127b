/* llama2.c tokenizer.bin (karpathy/llama2.c tokenizer.py export, run.c build_tokenizer):
 *   int32 max_token_length
 *   per token, until the end of the file: float32 score, int32 len, len bytes of text
 * all little-endian. The export wrote a SentencePiece vocabulary with U+2581 replaced by
 * ' ' and BOS/EOS as "\n<s>\n" / "\n</s>\n"; we undo both so the vocabulary is the
 * SentencePiece one again and the SPM encoder serves it. Ids are SentencePiece's: 0 unk,
 * 1 BOS, 2 EOS, <0xNN> byte tokens. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool is_byte_piece(const uint8_t *s, uint32_t len) {
    static const char hex[] = "0123456789ABCDEF";
    return len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && memchr(hex, s[3], 16) && memchr(hex, s[4], 16);
}

/* Walks the records; counts them, and when t is given, stores them. */
static tl_status walk(const uint8_t *data, size_t size, const char *what, uint32_t max_len, tl_tokenizer *t,
                      int32_t *n_out) {
    size_t off = 4;
    int32_t n = 0;
    char *buf = NULL;
    size_t buf_cap = 0;
    tl_status s = TL_OK;
    while (off < size) {
        if (size - off < 8) {
            s = tl_set_error(TL_ERR_FORMAT, "%s: token %d: record header truncated at byte %zu", what, n, off);
            break;
        }
        float score;
        uint32_t u = read_u32(data + off);
        memcpy(&score, &u, sizeof score);
        uint32_t len = read_u32(data + off + 4);
        off += 8;
        if (len > size - off) {
            s = tl_set_error(TL_ERR_FORMAT, "%s: token %d claims %u bytes, %zu remain", what, n, len, size - off);
            break;
        }
        if (len > max_len) {
            s = tl_set_error(TL_ERR_FORMAT, "%s: token %d is %u bytes, longer than max_token_length %u", what, n, len,
                             max_len);
            break;
        }
        if (score != score) {
            s = tl_set_error(TL_ERR_FORMAT, "%s: token %d has a NaN score", what, n);
            break;
        }
        if (n == INT32_MAX / 2) {
            s = tl_set_error(TL_ERR_FORMAT, "%s: too many tokens", what);
            break;
        }
        if (t) {
            const uint8_t *text = data + off;
            uint32_t text_len = len;
            tl_token_type type = TL_TOKEN_NORMAL;
            if (n == 0) type = TL_TOKEN_UNKNOWN;
            if (n == 1 || n == 2) {
                type = TL_TOKEN_CONTROL;
                if (len == 5 && memcmp(text, "\n<s>\n", 5) == 0) text += 1, text_len = 3;
                if (len == 6 && memcmp(text, "\n</s>\n", 6) == 0) text += 1, text_len = 4;
            }
            if (is_byte_piece(text, text_len)) type = TL_TOKEN_BYTE;
            /* ' ' back to U+2581 (3 bytes each) */
            size_t need = (size_t)text_len * 3 + 1;
            if (need > buf_cap) {
                char *nb = realloc(buf, need);
                if (!nb) {
                    s = tl_set_error(TL_ERR_NOMEM, "%s: out of memory", what);
                    break;
                }
                buf = nb;
                buf_cap = need;
            }
            size_t m = 0;
            for (uint32_t i = 0; i < text_len; i++) {
                if (text[i] == ' ') {
                    memcpy(buf + m, "\xe2\x96\x81", 3);
                    m += 3;
                } else {
                    buf[m++] = (char)text[i];
                }
            }
            if ((s = tl_tokenizer_set_token(t, n, buf, m, score, type))) break;
        }
        off += len;
        n++;
    }
    free(buf);
    *n_out = n;
    return s;
}

tl_status tl_llama2c_tokenizer_load(const uint8_t *data, size_t size, const char *what, tl_tokenizer **out) {
    *out = NULL;
    if (size < 4) return tl_set_error(TL_ERR_FORMAT, "%s: %zu bytes is too short for a tokenizer", what, size);
    uint32_t max_len = read_u32(data);
    if (max_len == 0 || max_len > (1u << 20))
        return tl_set_error(TL_ERR_FORMAT, "%s: not a tokenizer (max_token_length %u)", what, max_len);
    int32_t n;
    tl_status s = walk(data, size, what, max_len, NULL, &n);
    if (s) return s;
    if (n < 3) return tl_set_error(TL_ERR_FORMAT, "%s: %d tokens; a llama2.c vocabulary has <unk>, <s>, </s> first", what, n);
    tl_tokenizer *t;
    if ((s = tl_tokenizer_new(TL_TOKENIZER_SPM, n, &t))) return s;
    if ((s = walk(data, size, what, max_len, t, &n))) goto fail;
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    t->add_bos = true;
    t->add_space_prefix = true;
    if ((s = tl_tokenizer_finish(t))) goto fail;
    *out = t;
    return TL_OK;
fail:
    tl_tokenizer_free(t);
    return s;
}
