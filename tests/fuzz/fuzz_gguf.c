/* libFuzzer target: the GGUF reader (csrc/formats/gguf.c) on arbitrary bytes.
 *
 * Whatever opens is walked (fuzz_walk.h), then written back with tl_gguf_write and
 * read again: the copy must hold the same metadata and tensors, byte for byte. */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes w as GGUF into a fresh memfd, reopens it and compares. */
static void check_round_trip(const tl_weights *w) {
    int64_t n_kv = tl_weights_n_kv(w), n_t = tl_weights_n_tensors(w);
    tl_kv *kvs = malloc((size_t)(n_kv ? n_kv : 1) * sizeof *kvs);
    tl_gguf_tensor_desc *ts = malloc((size_t)(n_t ? n_t : 1) * sizeof *ts);
    char path[64];
    int fd = fuzz_memfd(NULL, 0, path, sizeof path);
    if (!kvs || !ts || fd < 0) goto out;
    for (int64_t i = 0; i < n_kv; i++) kvs[i] = *tl_weights_kv(w, i);
    for (int64_t i = 0; i < n_t; i++) {
        const tl_named_tensor *nt = tl_weights_tensor(w, i);
        ts[i] = (tl_gguf_tensor_desc){nt->name.ptr, nt->tensor.dtype, nt->tensor.n_dims, {0}, nt->tensor.data};
        memcpy(ts[i].ne, nt->tensor.ne, sizeof ts[i].ne);
    }
    if (tl_gguf_write(path, tl_weights_version(w), kvs, n_kv, ts, n_t) != TL_OK) {
        fprintf(stderr, "round trip: write failed: %s\n", tl_last_error());
        __builtin_trap(); /* everything the reader accepts can be written */
    }
    tl_weights *c = NULL;
    if (tl_gguf_open(path, &c) != TL_OK) {
        fprintf(stderr, "round trip: reopen failed: %s\n", tl_last_error());
        __builtin_trap();
    }
    if (tl_weights_n_kv(c) != n_kv || tl_weights_n_tensors(c) != n_t || tl_weights_alignment(c) != tl_weights_alignment(w))
        __builtin_trap();
    for (int64_t i = 0; i < n_kv; i++) {
        const tl_kv *a = tl_weights_kv(w, i), *b = tl_weights_kv(c, i);
        if (a->key.len != b->key.len || memcmp(a->key.ptr, b->key.ptr, a->key.len) || !fuzz_same_value(&a->value, &b->value))
            __builtin_trap();
    }
    for (int64_t i = 0; i < n_t; i++) {
        const tl_tensor *a = &tl_weights_tensor(w, i)->tensor, *b = &tl_weights_tensor(c, i)->tensor;
        if (strcmp(tl_weights_tensor(w, i)->name.ptr, tl_weights_tensor(c, i)->name.ptr) || a->dtype != b->dtype ||
            a->n_dims != b->n_dims || memcmp(a->ne, b->ne, sizeof a->ne) || a->nbytes != b->nbytes ||
            (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
            __builtin_trap();
    }
    tl_weights_free(c);
out:
    if (fd >= 0) close(fd);
    free(kvs);
    free(ts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_walk(data, size, tl_gguf_open, check_round_trip);
    return 0;
}
