/* A bump allocator: many small allocations freed together (file tables, strings). */
#ifndef TL_ARENA_H
#define TL_ARENA_H

#include <stddef.h>

typedef struct tl_arena_chunk tl_arena_chunk;
typedef struct tl_arena {
    tl_arena_chunk *head;
} tl_arena;

/* NULL when out of memory. Memory is zeroed. align must be a power of two <= 64. */
void *tl_arena_alloc(tl_arena *a, size_t size, size_t align);
/* n * size bytes; NULL on overflow or out of memory. */
void *tl_arena_alloc_array(tl_arena *a, size_t n, size_t size, size_t align);
void tl_arena_free_all(tl_arena *a);

#endif
