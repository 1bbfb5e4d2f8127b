/* Mappings the library makes itself (torchless.h has the file mappings). */
#ifndef TL_MAPPING_H
#define TL_MAPPING_H

#include "torchless.h"

/* size bytes of zeroed anonymous memory, reference counted like a file mapping so that
 * tensor views of data a reader computed (e.g. dequantized) outlive the table. *data is
 * where the creator writes it; `path` names it (tl_mapping_path). */
/* Whether m maps a file (not tl_mapping_new_anonymous's memory, whose pages hold the only copy) */
bool tl_mapping_from_file(const tl_mapping *m);

/* Give back the resident pages wholly inside [p, p + bytes) of a file mapping (they are read
 * from the file again if touched); false, doing nothing, for an anonymous mapping or a range
 * outside the mapping. */
bool tl_mapping_drop_pages(tl_mapping *m, const void *p, size_t bytes);

tl_status tl_mapping_new_anonymous(size_t size, const char *path, tl_mapping **out, uint8_t **data);

#endif
