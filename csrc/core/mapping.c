/* Read-only whole-file mappings, shared by reference count between a weights
 * table and every tensor view handed out from it. */
#include "mapping.h"
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct tl_mapping {
    atomic_long refs;
    const uint8_t *data;
    size_t size;
    char *path;
    bool from_file; /* pages dropped from memory come back from the file when touched again */
};

/* An empty file maps to this one byte, so data is never NULL. */
static const uint8_t empty_file[1];

/* The refcounted handle over mapped bytes (size 0: the empty_file byte); on failure the bytes
 * are unmapped. */
static tl_status wrap(const uint8_t *data, size_t size, const char *path, tl_mapping **out) {
    tl_mapping *m = calloc(1, sizeof *m);
    char *copy = strdup(path);
    if (!m || !copy) {
        if (size > 0) munmap((void *)data, size);
        free(m);
        free(copy);
        return tl_set_error(TL_ERR_NOMEM, "%s: out of memory", path);
    }
    atomic_init(&m->refs, 1);
    m->data = data;
    m->size = size;
    m->path = copy;
    *out = m;
    return TL_OK;
}

tl_status tl_mapping_open(const char *path, tl_mapping **out) {
    *out = NULL;
    if (!path) return tl_set_error(TL_ERR_INVALID, "mapping: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return tl_set_error(e == ENOENT ? TL_ERR_NOT_FOUND : TL_ERR_IO, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tl_set_error(TL_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tl_set_error(TL_ERR_IO, "%s: not a regular file", path);
    }
    const uint8_t *data = empty_file;
    size_t size = (size_t)st.st_size;
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return tl_set_error(TL_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        data = p;
    }
    close(fd);
    tl_status s = wrap(data, size, path, out);
    if (!s) (*out)->from_file = size > 0;
    return s;
}

bool tl_mapping_from_file(const tl_mapping *m) { return m && m->from_file; }

bool tl_mapping_drop_pages(tl_mapping *m, const void *p, size_t bytes) {
    if (!m || !m->from_file) return false;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = ((uintptr_t)p + page - 1) & ~(page - 1),
                    hi = ((uintptr_t)p + bytes) & ~(page - 1);
    if ((const uint8_t *)p < m->data || (const uint8_t *)p + bytes > m->data + m->size) return false;
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
    return true;
}

tl_status tl_mapping_new_anonymous(size_t size, const char *path, tl_mapping **out, uint8_t **data) {
    *out = NULL;
    *data = NULL;
    void *p = (void *)empty_file;
    if (size > 0) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return tl_set_error(TL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, size);
    }
    tl_status s = wrap(p, size, path, out);
    if (!s) *data = size > 0 ? p : NULL;
    return s;
}

void tl_mapping_retain(tl_mapping *m) {
    if (m) atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void tl_mapping_release(tl_mapping *m) {
    if (!m) return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    if (m->size > 0) munmap((void *)m->data, m->size);
    free(m->path);
    free(m);
}

const uint8_t *tl_mapping_data(const tl_mapping *m) { return m->data; }
size_t tl_mapping_size(const tl_mapping *m) { return m->size; }
const char *tl_mapping_path(const tl_mapping *m) { return m->path; }
