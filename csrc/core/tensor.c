#include "torchless.h"

int64_t tl_tensor_nelements(const tl_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}

int64_t tl_tensor_nrows(const tl_tensor *t) {
    int64_t n = 1;
    for (int i = 1; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}
