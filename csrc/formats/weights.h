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
};

tl_weights *tl_weights_new(tl_format format);
/* Takes over the caller's reference to m. */
tl_status tl_weights_add_mapping(tl_weights *w, tl_mapping *m);
/* Sorts the lookup indices; a duplicate key or tensor name is a format error
 * naming `what` (the file) in the message. */
tl_status tl_weights_finish(tl_weights *w, const char *what);

/* Copy of s into the arena, NUL-terminated (ptr is also a C string). */
tl_status tl_weights_strdup(tl_weights *w, const char *s, size_t len, tl_string *out);

int tl_string_cmp(tl_string a, tl_string b);
bool tl_string_eq_cstr(tl_string a, const char *s);

#endif
