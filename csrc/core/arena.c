#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN (64 * 1024)

struct tl_arena_chunk {
    tl_arena_chunk *next;
    size_t size, used;
    _Alignas(64) unsigned char data[];
};

void *tl_arena_alloc(tl_arena *a, size_t size, size_t align) {
    if (align == 0) align = 1;
    tl_arena_chunk *c = a->head;
    if (c) {
        size_t off = (c->used + align - 1) & ~(align - 1);
        if (off <= c->size && size <= c->size - off) {
            c->used = off + size;
            return c->data + off;
        }
    }
    if (size > SIZE_MAX - sizeof(tl_arena_chunk) - 64) return NULL;
    size_t cap = size > CHUNK_MIN ? size : CHUNK_MIN;
    c = calloc(1, sizeof(tl_arena_chunk) + cap);
    if (!c) return NULL;
    c->size = cap;
    c->used = size;
    /* a big chunk goes behind the current one so the current one's space is not lost */
    if (a->head && size > CHUNK_MIN) {
        c->next = a->head->next;
        a->head->next = c;
    } else {
        c->next = a->head;
        a->head = c;
    }
    return c->data;
}

void *tl_arena_alloc_array(tl_arena *a, size_t n, size_t size, size_t align) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) return NULL;
    return tl_arena_alloc(a, total ? total : 1, align);
}

void tl_arena_free_all(tl_arena *a) {
    tl_arena_chunk *c = a->head;
    while (c) {
        tl_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}
