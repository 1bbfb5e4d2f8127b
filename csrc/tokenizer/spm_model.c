/* SentencePiece .model files: a serialized sentencepiece.ModelProto (protobuf 2).
 *
 * Only what tokenization needs is read (field numbers from sentencepiece_model.proto):
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL)
 *   TrainerSpec     3 model_type (default UNIGRAM; BPE = 2), 35 byte_fallback,
 *                   40 unk_id (0), 41 bos_id (1), 42 eos_id (2), 43 pad_id (-1)
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true),
 *                   4 remove_extra_whitespaces (true), 5 escape_whitespaces (true)
 * Every other field is skipped by its wire type. Every length is checked against the
 * bytes that remain before it is used. */
#include "tokenizer/tokenizer.h"

#include <string.h>

typedef struct pb {
    const uint8_t *p, *end;
    const char *what;
} pb;

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

typedef struct pb_field {
    uint32_t number;
    uint32_t wire;
    uint64_t varint;        /* WIRE_VARINT */
    const uint8_t *data;    /* WIRE_LEN, WIRE_I32, WIRE_I64 */
    size_t len;
} pb_field;

static tl_status pb_varint(pb *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return tl_set_error(TL_ERR_FORMAT, "%s: truncated varint", r->what);
        uint8_t c = *r->p++;
        if (shift == 63 && c > 1) break;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return TL_OK;
        }
    }
    return tl_set_error(TL_ERR_FORMAT, "%s: varint longer than 64 bits", r->what);
}

/* Reads the next field of the message in r. */
static tl_status pb_next(pb *r, pb_field *f) {
    uint64_t key = 0;
    tl_status s = pb_varint(r, &key);
    if (s) return s;
    f->number = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    if (f->number == 0 || key >> 3 > 0x1fffffff) return tl_set_error(TL_ERR_FORMAT, "%s: bad field number", r->what);
    size_t left = (size_t)(r->end - r->p);
    switch (f->wire) {
    case WIRE_VARINT: return pb_varint(r, &f->varint);
    case WIRE_I64:
    case WIRE_I32:
        f->len = f->wire == WIRE_I64 ? 8 : 4;
        if (left < f->len) return tl_set_error(TL_ERR_FORMAT, "%s: truncated fixed-size field %u", r->what, f->number);
        f->data = r->p;
        r->p += f->len;
        return TL_OK;
    case WIRE_LEN: {
        uint64_t n = 0;
        if ((s = pb_varint(r, &n))) return s;
        left = (size_t)(r->end - r->p);
        if (n > left)
            return tl_set_error(TL_ERR_FORMAT, "%s: field %u claims %llu bytes, %zu remain", r->what, f->number,
                                (unsigned long long)n, left);
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return TL_OK;
    }
    default:
        return tl_set_error(TL_ERR_FORMAT, "%s: field %u has unsupported wire type %u", r->what, f->number, f->wire);
    }
}

static float pb_float(const pb_field *f) {
    uint32_t u = (uint32_t)f->data[0] | (uint32_t)f->data[1] << 8 | (uint32_t)f->data[2] << 16 |
                 (uint32_t)f->data[3] << 24;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

typedef struct spm_spec {
    uint64_t model_type;
    bool byte_fallback;
    int64_t unk, bos, eos, pad;
    const uint8_t *norm_name;
    size_t norm_name_len;
    size_t charsmap_len;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} spm_spec;

static tl_status expect_wire(const pb *r, const pb_field *f, uint32_t wire, const char *msg) {
    if (f->wire != wire) return tl_set_error(TL_ERR_FORMAT, "%s: %s has wire type %u", r->what, msg, f->wire);
    return TL_OK;
}

static tl_status read_trainer_spec(const pb_field *msg, const char *what, spm_spec *spec) {
    pb r = {msg->data, msg->data + msg->len, what};
    pb_field f;
    tl_status s;
    while (r.p < r.end) {
        if ((s = pb_next(&r, &f))) return s;
        int64_t *id = f.number == 40 ? &spec->unk : f.number == 41 ? &spec->bos : f.number == 42 ? &spec->eos
                    : f.number == 43 ? &spec->pad : NULL;
        if (f.number == 3) {
            if ((s = expect_wire(&r, &f, WIRE_VARINT, "trainer_spec.model_type"))) return s;
            spec->model_type = f.varint;
        } else if (f.number == 35) {
            if ((s = expect_wire(&r, &f, WIRE_VARINT, "trainer_spec.byte_fallback"))) return s;
            spec->byte_fallback = f.varint != 0;
        } else if (id) {
            if ((s = expect_wire(&r, &f, WIRE_VARINT, "trainer_spec special id"))) return s;
            *id = (int32_t)(uint32_t)f.varint; /* int32 fields: negative values are sign-extended varints */
        }
    }
    return TL_OK;
}

static tl_status read_normalizer_spec(const pb_field *msg, const char *what, spm_spec *spec) {
    pb r = {msg->data, msg->data + msg->len, what};
    pb_field f;
    tl_status s;
    while (r.p < r.end) {
        if ((s = pb_next(&r, &f))) return s;
        bool *flag = f.number == 3 ? &spec->add_dummy_prefix : f.number == 4 ? &spec->remove_extra_whitespaces
                   : f.number == 5 ? &spec->escape_whitespaces : NULL;
        if (f.number == 1) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "normalizer_spec.name"))) return s;
            spec->norm_name = f.data;
            spec->norm_name_len = f.len;
        } else if (f.number == 2) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "normalizer_spec.precompiled_charsmap"))) return s;
            spec->charsmap_len = f.len;
        } else if (flag) {
            if ((s = expect_wire(&r, &f, WIRE_VARINT, "normalizer_spec flag"))) return s;
            *flag = f.varint != 0;
        }
    }
    return TL_OK;
}

static tl_status read_piece(const pb_field *msg, const char *what, int32_t id, tl_tokenizer *t) {
    pb r = {msg->data, msg->data + msg->len, what};
    pb_field f;
    tl_status s;
    const uint8_t *text = NULL;
    size_t len = 0;
    float score = 0.0f;
    uint64_t type = TL_TOKEN_NORMAL;
    while (r.p < r.end) {
        if ((s = pb_next(&r, &f))) return s;
        if (f.number == 1) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "piece.piece"))) return s;
            text = f.data;
            len = f.len;
        } else if (f.number == 2) {
            if ((s = expect_wire(&r, &f, WIRE_I32, "piece.score"))) return s;
            score = pb_float(&f);
        } else if (f.number == 3) {
            if ((s = expect_wire(&r, &f, WIRE_VARINT, "piece.type"))) return s;
            type = f.varint;
        }
    }
    if (!text || len == 0) return tl_set_error(TL_ERR_FORMAT, "%s: piece %d is empty", what, id);
    if (type < TL_TOKEN_NORMAL || type > TL_TOKEN_BYTE)
        return tl_set_error(TL_ERR_FORMAT, "%s: piece %d has unknown type %llu", what, id, (unsigned long long)type);
    return tl_tokenizer_set_token(t, id, (const char *)text, len, score, (tl_token_type)type);
}

tl_status tl_spm_model_load(const uint8_t *data, size_t size, const char *what, tl_tokenizer **out) {
    *out = NULL;
    spm_spec spec = {.model_type = 1, .unk = 0, .bos = 1, .eos = 2, .pad = -1,
                     .add_dummy_prefix = true, .remove_extra_whitespaces = true, .escape_whitespaces = true};
    pb r = {data, data + size, what};
    pb_field f;
    tl_status s;
    size_t n_pieces = 0;
    while (r.p < r.end) {
        if ((s = pb_next(&r, &f))) return s;
        if (f.number == 1) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "pieces"))) return s;
            n_pieces++;
        } else if (f.number == 2) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "trainer_spec"))) return s;
            if ((s = read_trainer_spec(&f, what, &spec))) return s;
        } else if (f.number == 3) {
            if ((s = expect_wire(&r, &f, WIRE_LEN, "normalizer_spec"))) return s;
            if ((s = read_normalizer_spec(&f, what, &spec))) return s;
        }
    }
    if (n_pieces == 0) return tl_set_error(TL_ERR_FORMAT, "%s: no pieces (not a SentencePiece model)", what);
    if (n_pieces > INT32_MAX / 2) return tl_set_error(TL_ERR_FORMAT, "%s: %zu pieces", what, n_pieces);
    if (spec.model_type != 2) {
        static const char *const names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        return tl_set_error(TL_ERR_UNSUPPORTED, "%s: SentencePiece model_type %s is not supported (only BPE)", what,
                            spec.model_type < 5 ? names[spec.model_type] : "?");
    }
    if (spec.charsmap_len > 0) {
        int n = spec.norm_name_len > 64 ? 64 : (int)spec.norm_name_len;
        return tl_set_error(TL_ERR_UNSUPPORTED,
                            "%s: normalizer '%.*s' with a precompiled character map is not supported (only identity)",
                            what, n, spec.norm_name ? (const char *)spec.norm_name : "");
    }
    if (!spec.escape_whitespaces)
        return tl_set_error(TL_ERR_UNSUPPORTED, "%s: escape_whitespaces=false is not supported", what);

    tl_tokenizer *t;
    if ((s = tl_tokenizer_new(TL_TOKENIZER_SPM, (int32_t)n_pieces, &t))) return s;
    r = (pb){data, data + size, what};
    int32_t id = 0;
    while (r.p < r.end && !s) {
        if ((s = pb_next(&r, &f))) break;
        if (f.number == 1) s = read_piece(&f, what, id++, t);
    }
    if (s) goto fail;
    int64_t n = (int64_t)n_pieces;
    t->unk = spec.unk >= 0 && spec.unk < n ? (int32_t)spec.unk : -1;
    t->bos = spec.bos >= 0 && spec.bos < n ? (int32_t)spec.bos : -1;
    t->eos = spec.eos >= 0 && spec.eos < n ? (int32_t)spec.eos : -1;
    t->pad = spec.pad >= 0 && spec.pad < n ? (int32_t)spec.pad : -1;
    t->add_bos = t->bos >= 0;
    t->add_eos = false;
    t->add_space_prefix = spec.add_dummy_prefix;
    t->remove_extra_whitespaces = spec.remove_extra_whitespaces;
    if ((s = tl_tokenizer_finish(t))) goto fail;
    *out = t;
    return TL_OK;
fail:
    tl_tokenizer_free(t);
    return s;
}
