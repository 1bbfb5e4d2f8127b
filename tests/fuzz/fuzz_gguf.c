/* libFuzzer target: the GGUF reader (csrc/formats/gguf.c) on arbitrary bytes. */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_walk(data, size, tl_gguf_open);
    return 0;
}
