/* What the GGUF and .tl writers share: checking tensor descriptors before a file is
 * created, a FILE wrapper that remembers the first failure, and the tensor payload
 * written tensor by tensor from a caller's data source (one-shot or streamed). */
#ifndef TL_WRITER_H
#define TL_WRITER_H

#include <stdio.h>

#include "core/status.h"
#include "torchless.h"

/* Checks names (present, unique, no NUL), dtypes, ranks, block geometry and sizes;
 * fills sizes[i] with each tensor's bytes. `ggml_only`: refuse dtypes GGUF cannot store.
 * `need_data`: a non-empty tensor must have data. Messages start with `who`. */
tl_status tl_writer_check_tensors(const tl_gguf_tensor_desc *t, int64_t n, bool ggml_only, bool need_data,
                                  size_t *sizes, const char *who);

typedef struct tl_file_writer {
    FILE *f;
    const char *path;
    const char *who; /* "gguf write", "tl write" */
    uint64_t pos;
    int err; /* first errno */
} tl_file_writer;

tl_status tl_file_writer_open(tl_file_writer *wr, const char *path, const char *who);
void tl_file_put(tl_file_writer *wr, const void *p, size_t n);
void tl_file_put_zeros(tl_file_writer *wr, size_t n);
/* Every tensor's bytes in order, each followed by zeros up to `alignment`. */
tl_status tl_file_put_tensors(tl_file_writer *wr, int64_t n, const size_t *sizes, uint64_t alignment,
                              tl_tensor_data_fn data, void *user);
/* Closes the file; on any failure (failed = an earlier error) the file is removed and
 * the status returned (an I/O error naming errno, or `failed`). */
tl_status tl_file_writer_close(tl_file_writer *wr, tl_status failed);

#endif
