/* Shared by the file-reader fuzz targets: hand libFuzzer's bytes to a reader as a
 * file, then use everything the reader handed back, the way the engine would.
 *
 * The input goes into a memfd and the reader opens /proc/self/fd/N, so the real
 * mmap path runs and nothing touches the disk. On success every metadata value is
 * read, every tensor's first and last byte is touched, the first row of each
 * tensor is dequantized where the dtype converts to float32, and every name is
 * looked up again (it must find itself: duplicates are rejected at open). */
#ifndef TL_FUZZ_WALK_H
#define TL_FUZZ_WALK_H

#include "torchless.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile uint64_t fuzz_sink; /* keeps the touched bytes from being optimised away */

/* Writes data to an anonymous in-memory file; its path goes to path. -1 on failure. */
static int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0) return -1;
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static void fuzz_touch_bytes(const void *p, uint64_t n) {
    const uint8_t *b = p;
    if (n) fuzz_sink += b[0] + b[n - 1];
}

static void fuzz_walk_value(const tl_value *v, int depth) {
    if (depth > 64) __builtin_trap(); /* the reader bounds array nesting */
    switch (v->type) {
    case TL_VAL_STRING: fuzz_touch_bytes(v->str.ptr, v->str.len); break;
    case TL_VAL_BOOL: fuzz_sink += v->b; break;
    case TL_VAL_FLOAT32: case TL_VAL_FLOAT64: fuzz_sink += (uint64_t)(v->f64 == v->f64); break;
    case TL_VAL_ARRAY: {
        size_t esize = tl_value_type_size(v->arr.elem_type);
        if (esize) {
            fuzz_touch_bytes(v->arr.data, v->arr.n * esize);
        } else if (v->arr.elem_type == TL_VAL_STRING) {
            const tl_string *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) fuzz_touch_bytes(s[i].ptr, s[i].len);
        } else if (v->arr.elem_type == TL_VAL_ARRAY) {
            const tl_value *items = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) fuzz_walk_value(&items[i], depth + 1);
        } else {
            __builtin_trap(); /* an element type the reader should have refused */
        }
        break;
    }
    default:
        if ((unsigned)v->type >= TL_VAL_TYPE_COUNT) __builtin_trap();
        fuzz_sink += v->u64;
    }
}

static void fuzz_walk_tensor(const tl_named_tensor *nt) {
    const tl_tensor *t = &nt->tensor;
    if (t->n_dims < 1 || t->n_dims > TL_MAX_DIMS || tl_dtype_name(t->dtype) == NULL) __builtin_trap();
    fuzz_sink += (uint64_t)tl_tensor_nelements(t) + (uint64_t)tl_tensor_nrows(t);
    fuzz_touch_bytes(t->data, t->nbytes);
    size_t row = tl_dtype_row_size(t->dtype, t->ne[0]);
    if (row > 0 && row <= t->nbytes) {
        /* in place, wherever the file put it: tl_dequantize copes with data at any
         * address (GGUF general.alignment 1, safetensors headers of odd length) */
        float *buf = malloc((size_t)t->ne[0] * sizeof *buf);
        if (buf) {
            tl_status s = tl_dequantize(t->dtype, t->data, buf, t->ne[0]);
            if (s == TL_OK) fuzz_sink += (uint64_t)(buf[t->ne[0] - 1] == buf[t->ne[0] - 1]);
            else if (s != TL_ERR_UNSUPPORTED) __builtin_trap();
        }
        free(buf);
    }
}

static void fuzz_walk_weights(const tl_weights *w) {
    fuzz_sink += tl_weights_format(w) + tl_weights_version(w) + tl_weights_alignment(w) + tl_weights_file_size(w);
    for (int64_t i = 0; i < tl_weights_n_kv(w); i++) {
        const tl_kv *kv = tl_weights_kv(w, i);
        fuzz_walk_value(&kv->value, 0);
        /* keys are stored NUL-terminated; one without an inner NUL must find itself */
        if (strlen(kv->key.ptr) == kv->key.len && tl_weights_find_kv(w, kv->key.ptr) != kv) __builtin_trap();
    }
    for (int64_t i = 0; i < tl_weights_n_tensors(w); i++) {
        const tl_named_tensor *nt = tl_weights_tensor(w, i);
        fuzz_walk_tensor(nt);
        if (strlen(nt->name.ptr) == nt->name.len && tl_weights_find_tensor(w, nt->name.ptr) != nt) __builtin_trap();
    }
}

/* Two metadata values hold the same thing (floats compared bit for bit). */
static bool fuzz_same_value(const tl_value *a, const tl_value *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case TL_VAL_STRING: return a->str.len == b->str.len && !memcmp(a->str.ptr, b->str.ptr, a->str.len);
    case TL_VAL_BOOL: return a->b == b->b;
    case TL_VAL_FLOAT32: case TL_VAL_FLOAT64: return !memcmp(&a->f64, &b->f64, sizeof a->f64);
    case TL_VAL_ARRAY: {
        if (a->arr.elem_type != b->arr.elem_type || a->arr.n != b->arr.n) return false;
        size_t esize = tl_value_type_size(a->arr.elem_type);
        if (esize) return !a->arr.n || !memcmp(a->arr.data, b->arr.data, a->arr.n * esize);
        for (uint64_t i = 0; i < a->arr.n; i++) {
            bool same;
            if (a->arr.elem_type == TL_VAL_STRING) {
                const tl_string *x = (const tl_string *)a->arr.data + i, *y = (const tl_string *)b->arr.data + i;
                same = x->len == y->len && !memcmp(x->ptr, y->ptr, x->len);
            } else {
                same = fuzz_same_value((const tl_value *)a->arr.data + i, (const tl_value *)b->arr.data + i);
            }
            if (!same) return false;
        }
        return true;
    }
    default: return a->u64 == b->u64;
    }
}

/* Opens the bytes with `open_fn`, walks what it gives back, then runs `check` on it (if not NULL). */
static void fuzz_open_and_walk(const uint8_t *data, size_t size, tl_status (*open_fn)(const char *, tl_weights **),
                               void (*check)(const tl_weights *)) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return;
    tl_weights *w = NULL;
    tl_status s = open_fn(path, &w);
    close(fd); /* the mapping keeps the data alive */
    if (s == TL_OK) {
        fuzz_walk_weights(w);
        if (check) check(w);
        tl_weights_free(w);
    } else if (w != NULL || tl_last_error()[0] == '\0') {
        __builtin_trap(); /* a failure leaves *out NULL and says why */
    }
}

#endif
