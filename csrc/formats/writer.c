/* Shared pieces of the GGUF and .tl writers (see writer.h). */
#include "writer.h"

#include "core/dtype.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tl_status tl_writer_check_tensors(const tl_gguf_tensor_desc *t, int64_t n, bool ggml_only, bool need_data,
                                  size_t *sizes, const char *who) {
    for (int64_t i = 0; i < n; i++) {
        const tl_gguf_tensor_desc *d = &t[i];
        if (!d->name) return tl_set_error(TL_ERR_INVALID, "%s: tensor %lld has no name", who, (long long)i);
        const tl_dtype_traits *tr = tl_dtype_traits_of(d->dtype);
        if (!tr || (ggml_only && d->dtype >= TL_U8))
            return tl_set_error(TL_ERR_INVALID, "%s: tensor '%s': dtype %d cannot be stored%s", who, d->name, d->dtype,
                                ggml_only ? " in GGUF" : "");
        if (d->n_dims < 1 || d->n_dims > TL_MAX_DIMS)
            return tl_set_error(TL_ERR_INVALID, "%s: tensor '%s' has %d dimensions (1 to %d)", who, d->name, d->n_dims,
                                TL_MAX_DIMS);
        if (d->ne[0] < 0 || d->ne[0] % tr->block_size)
            return tl_set_error(TL_ERR_INVALID, "%s: tensor '%s' row of %lld is not a whole number of %s blocks", who,
                                d->name, (long long)d->ne[0], tl_dtype_name(d->dtype));
        size_t bytes = tl_dtype_row_size(d->dtype, d->ne[0]);
        for (int k = 1; k < d->n_dims; k++)
            if (d->ne[k] < 0 || tl_mul_overflows(bytes, (size_t)d->ne[k], &bytes))
                return tl_set_error(TL_ERR_INVALID, "%s: tensor '%s' has a bad shape", who, d->name);
        if (need_data && bytes && !d->data) return tl_set_error(TL_ERR_INVALID, "%s: tensor '%s' has no data", who, d->name);
        for (int64_t j = 0; j < i; j++)
            if (strcmp(t[j].name, d->name) == 0)
                return tl_set_error(TL_ERR_INVALID, "%s: duplicate tensor name '%s'", who, d->name);
        sizes[i] = bytes;
    }
    return TL_OK;
}

tl_status tl_file_writer_open(tl_file_writer *wr, const char *path, const char *who) {
    *wr = (tl_file_writer){NULL, path, who, 0, 0};
    wr->f = fopen(path, "wb");
    if (!wr->f) {
        int e = errno;
        return tl_set_error(TL_ERR_IO, "%s: %s: %s", who, path, strerror(e));
    }
    return TL_OK;
}

void tl_file_put(tl_file_writer *wr, const void *p, size_t n) {
    if (wr->err || n == 0) return;
    if (fwrite(p, 1, n, wr->f) != n) wr->err = errno ? errno : EIO;
    wr->pos += n;
}

void tl_file_put_zeros(tl_file_writer *wr, size_t n) {
    static const uint8_t zeros[64];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        tl_file_put(wr, zeros, k);
        n -= k;
    }
}

tl_status tl_file_put_tensors(tl_file_writer *wr, int64_t n, const size_t *sizes, uint64_t alignment,
                              tl_tensor_data_fn data, void *user) {
    for (int64_t i = 0; i < n && !wr->err; i++) {
        const void *p = NULL;
        tl_status s = data(user, i, sizes[i], &p);
        if (s) return s;
        if (!p && sizes[i]) return tl_set_error(TL_ERR_INVALID, "%s: no data for tensor %lld", wr->who, (long long)i);
        tl_file_put(wr, p, sizes[i]);
        tl_file_put_zeros(wr, (size_t)((alignment - sizes[i] % alignment) % alignment));
    }
    return TL_OK;
}

tl_status tl_file_writer_close(tl_file_writer *wr, tl_status failed) {
    int e = wr->err;
    if (!e && fflush(wr->f) != 0) e = errno ? errno : EIO;
    if (fclose(wr->f) != 0 && !e) e = errno ? errno : EIO;
    wr->f = NULL;
    if (failed || e) {
        unlink(wr->path);
        if (failed) return failed;
        return tl_set_error(TL_ERR_IO, "%s: %s: %s", wr->who, wr->path, strerror(e));
    }
    return TL_OK;
}
