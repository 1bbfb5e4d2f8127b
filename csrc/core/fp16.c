#include "fp16.h"

#include <pthread.h>

static float table[65536];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void) {
    for (uint32_t h = 0; h < 65536; h++) table[h] = tl_f16_to_f32((uint16_t)h);
}

const float *tl_f16_table(void) {
    pthread_once(&once, build);
    return table;
}
