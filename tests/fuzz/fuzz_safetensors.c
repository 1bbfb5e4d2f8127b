/* libFuzzer target: the safetensors reader (csrc/formats/safetensors.c) on arbitrary bytes. */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_open_and_walk(data, size, tl_safetensors_open, NULL);
    return 0;
}
