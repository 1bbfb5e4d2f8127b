/* Mappings the library makes itself (torchless.h has the file mappings). */
#ifndef TL_MAPPING_H
#define TL_MAPPING_H

#include "torchless.h"

/* size bytes of zeroed anonymous memory, reference counted like a file mapping so that
 * tensor views of data a reader computed (e.g. dequantized) outlive the table. *data is
 * where the creator writes it; `path` names it (tl_mapping_path). */
tl_status tl_mapping_new_anonymous(size_t size, const char *path, tl_mapping **out, uint8_t **data);

#endif
