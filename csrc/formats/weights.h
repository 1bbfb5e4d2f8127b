/* The tl_weights table and the helpers every reader uses to build one. */
#ifndef TL_WEIGHTS_H
#define TL_WEIGHTS_H

#include "core/arena.h"
#include "core/status.h"
#include "torchless.h"

struct tl_weights {
    tl_format format;
    uint32_t version;
    uint64_t alignment;
    int64_t n_kv;
    tl_kv *kv;
    int64_t n_tensors;
    tl_named_tensor *tensors;
    int n_maps;
    tl_mapping **maps;
    tl_arena arena;       /* owns kv, tensors, copied strings and value arrays */
    int64_t *kv_order;    /* indices of kv sorted by key */
    int64_t *tensor_order; /* indices of tensors sorted by name */
    tl_mapping *computed;  /* tensor data a reader computed (llama2.c v2 dequantized), or NULL */
};

tl_weights *tl_weights_new(tl_format format);

/* A reader's body: fills w from the mapped file's bytes (path for messages). */
typedef tl_status (*tl_weights_parse_fn)(tl_weights *w, const char *path, const uint8_t *data, size_t size);

/* Maps path, makes a table of `format` owning the mapping, runs parse and finishes the table
 * (messages prefixed with `what`); on failure nothing is left allocated and *out is NULL. */
tl_status tl_weights_open_mapped(const char *path, tl_format format, const char *what, tl_weights_parse_fn parse,
                                 tl_weights **out);
/* Takes over the caller's reference to m. */
tl_status tl_weights_add_mapping(tl_weights *w, tl_mapping *m);
/* Sorts the lookup indices; a duplicate key or tensor name is a format error
 * naming `what` (the file) in the message. */
tl_status tl_weights_finish(tl_weights *w, const char *what);

/* Copy of s into the arena, NUL-terminated (ptr is also a C string). */
tl_status tl_weights_strdup(tl_weights *w, const char *s, size_t len, tl_string *out);

/* offsets[i] is where tensor i's nbytes begin (in one address space): TL_ERR_FORMAT
 * naming both tensors when two non-empty ones overlap. */
tl_status tl_weights_check_overlaps(const tl_weights *w, const char *who, const char *path, const uint64_t *offsets);

/* llama2.c checkpoint recognition from the first bytes of a file (n of them) and its
 * size: "ak42" magic, or a plausible legacy header whose implied size is the file's
 * (any plausible header when the name ends in .bin, so the reader can say what is wrong). */
bool tl_llama2c_sniff(const uint8_t *head, size_t n, size_t file_size, bool bin_suffix);

/* The .tl magic (docs/format.md): 8 bytes. */
#define TL_NATIVE_MAGIC "TLESS\0\0\0"
#define TL_NATIVE_MAGIC_LEN 8

/* A scalar metadata value of type t (numeric or BOOL) from its packed little-endian GGUF bytes
 * at p (tl_value_type_size(t) of them, any alignment). False when a BOOL byte is not 0 or 1. */
bool tl_value_from_packed(tl_value_type t, const void *p, tl_value *out);

int tl_string_cmp(tl_string a, tl_string b);
bool tl_string_eq_cstr(tl_string a, const char *s);

#endif
