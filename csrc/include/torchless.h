/* torchless public C API.
 *
 * Opaque handles, status codes, no globals visible to the caller. Every fallible
 * function returns tl_status (TL_OK == 0) and, on failure, leaves a message for
 * this thread in tl_last_error(). The library never prints and never exits.
 */
#ifndef TORCHLESS_H
#define TORCHLESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum tl_status {
    TL_OK = 0,
    TL_ERR_INVALID = 1,     /* bad argument from the caller */
    TL_ERR_IO = 2,          /* open/read/write/mmap failed (errno in the message) */
    TL_ERR_FORMAT = 3,      /* file content is corrupt or not what it claims */
    TL_ERR_NOMEM = 4,       /* allocation failed */
    TL_ERR_UNSUPPORTED = 5, /* well-formed but not supported (unknown dtype, version) */
    TL_ERR_NOT_FOUND = 6,   /* no such file, key or tensor */
} tl_status;

/* The message of the last failure on this thread ("" if none). */
const char *tl_last_error(void);
/* A short name for a status code ("format error", ...). */
const char *tl_status_name(tl_status s);

/* ---------------------------------------------------------------- dtypes */

/* Numbering is GGML's (ggml_type), so a GGUF tensor type is a tl_dtype as it is.
 * Ids 64+ are ours (safetensors-only element types). */
typedef enum tl_dtype {
    TL_F32 = 0,
    TL_F16 = 1,
    TL_Q4_0 = 2,
    TL_Q4_1 = 3,
    TL_Q5_0 = 6,
    TL_Q5_1 = 7,
    TL_Q8_0 = 8,
    TL_Q8_1 = 9,
    TL_Q2_K = 10,
    TL_Q3_K = 11,
    TL_Q4_K = 12,
    TL_Q5_K = 13,
    TL_Q6_K = 14,
    TL_Q8_K = 15,
    TL_I8 = 24,
    TL_I16 = 25,
    TL_I32 = 26,
    TL_I64 = 27,
    TL_F64 = 28,
    TL_BF16 = 30,
    TL_TQ1_0 = 34,
    TL_TQ2_0 = 35,
    TL_U8 = 64,
    TL_BOOL = 65,
    TL_DTYPE_COUNT = 66
} tl_dtype;

/* Properties of a dtype. Unknown or unsupported ids: NULL name / 0 sizes. */
const char *tl_dtype_name(tl_dtype t);                 /* "q4_k", "f32", ... */
bool tl_dtype_from_name(const char *name, tl_dtype *out);
bool tl_dtype_is_valid(int t);
int64_t tl_dtype_block_size(tl_dtype t);               /* elements per block (1 for plain types) */
size_t tl_dtype_type_size(tl_dtype t);                 /* bytes per block */
bool tl_dtype_is_quantized(tl_dtype t);
/* Bytes of one row of n elements; 0 when n is not a whole number of blocks. */
size_t tl_dtype_row_size(tl_dtype t, int64_t n);

/* Convert n elements (a whole number of blocks) between a dtype and float32.
 * TL_ERR_UNSUPPORTED where the dtype has no such conversion. */
tl_status tl_dequantize(tl_dtype t, const void *src, float *dst, int64_t n);
tl_status tl_quantize(tl_dtype t, const float *src, void *dst, int64_t n);

/* ---------------------------------------------------------------- mapped files */

typedef struct tl_mapping tl_mapping; /* a read-only mmap of a whole file, reference counted */

tl_status tl_mapping_open(const char *path, tl_mapping **out);
void tl_mapping_retain(tl_mapping *m);
void tl_mapping_release(tl_mapping *m); /* unmaps when the last reference goes */
const uint8_t *tl_mapping_data(const tl_mapping *m);
size_t tl_mapping_size(const tl_mapping *m);
const char *tl_mapping_path(const tl_mapping *m);

/* ---------------------------------------------------------------- tensors */

#define TL_MAX_DIMS 4

/* A view of tensor data that lives elsewhere (a mapping, an arena, a device).
 * ne[] is GGML order: ne[0] is the fastest-moving dimension (columns). */
typedef struct tl_tensor {
    tl_dtype dtype;
    int n_dims;
    int64_t ne[TL_MAX_DIMS];
    size_t nbytes;
    const void *data;
    tl_mapping *owner; /* NULL when not backed by a mapping (not retained by the struct) */
} tl_tensor;

int64_t tl_tensor_nelements(const tl_tensor *t);
int64_t tl_tensor_nrows(const tl_tensor *t); /* product of ne[1..] */

/* ---------------------------------------------------------------- metadata values */

/* GGUF metadata value types, numbered as in the GGUF spec. */
typedef enum tl_value_type {
    TL_VAL_UINT8 = 0,
    TL_VAL_INT8 = 1,
    TL_VAL_UINT16 = 2,
    TL_VAL_INT16 = 3,
    TL_VAL_UINT32 = 4,
    TL_VAL_INT32 = 5,
    TL_VAL_FLOAT32 = 6,
    TL_VAL_BOOL = 7,
    TL_VAL_STRING = 8,
    TL_VAL_ARRAY = 9,
    TL_VAL_UINT64 = 10,
    TL_VAL_INT64 = 11,
    TL_VAL_FLOAT64 = 12,
    TL_VAL_TYPE_COUNT = 13
} tl_value_type;

typedef struct tl_string {
    const char *ptr; /* not NUL-terminated; may point into a mapping */
    uint64_t len;
} tl_string;

typedef struct tl_value tl_value;
struct tl_value {
    tl_value_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32 (exactly representable) / FLOAT64 */
        bool b;
        tl_string str;
        struct {
            tl_value_type elem_type;
            uint64_t n;
            /* elem_type numeric or BOOL: n packed little-endian elements of their GGUF
             * size, copied to aligned memory; STRING: n tl_string; ARRAY: n tl_value */
            const void *data;
        } arr;
    };
};

size_t tl_value_type_size(tl_value_type t); /* bytes of a scalar element; 0 for STRING/ARRAY */
const char *tl_value_type_name(tl_value_type t);

typedef struct tl_kv {
    tl_string key;
    tl_value value;
} tl_kv;

/* ---------------------------------------------------------------- weight files */

typedef enum tl_format {
    TL_FORMAT_GGUF = 1,
    TL_FORMAT_SAFETENSORS = 2,
} tl_format;

typedef struct tl_named_tensor {
    tl_string name;
    tl_tensor tensor;
} tl_named_tensor;

/* The one table every reader produces: metadata, named tensors and the mappings
 * the tensors point into. Read-only once built; safe to share between threads. */
typedef struct tl_weights tl_weights;

/* Opens a file by content (GGUF magic, else safetensors header), or a safetensors
 * index (*.index.json) with all of its shards. */
tl_status tl_weights_open(const char *path, tl_weights **out);
tl_status tl_gguf_open(const char *path, tl_weights **out);
tl_status tl_safetensors_open(const char *path, tl_weights **out);
tl_status tl_safetensors_open_index(const char *index_path, tl_weights **out);
void tl_weights_free(tl_weights *w);

tl_format tl_weights_format(const tl_weights *w);
uint32_t tl_weights_version(const tl_weights *w);   /* GGUF version; 0 for safetensors */
uint64_t tl_weights_alignment(const tl_weights *w); /* GGUF general.alignment; 0 for safetensors */
int64_t tl_weights_n_kv(const tl_weights *w);
const tl_kv *tl_weights_kv(const tl_weights *w, int64_t i);
const tl_kv *tl_weights_find_kv(const tl_weights *w, const char *key); /* NULL if absent */
int64_t tl_weights_n_tensors(const tl_weights *w);
const tl_named_tensor *tl_weights_tensor(const tl_weights *w, int64_t i);
const tl_named_tensor *tl_weights_find_tensor(const tl_weights *w, const char *name);
size_t tl_weights_file_size(const tl_weights *w); /* bytes of all mapped files together */
int tl_weights_n_mappings(const tl_weights *w);   /* one per file (shards of an index) */
tl_mapping *tl_weights_mapping(const tl_weights *w, int i); /* borrowed; retain to keep */

/* ---------------------------------------------------------------- GGUF writer */

typedef struct tl_gguf_tensor_desc {
    const char *name;
    tl_dtype dtype;
    int n_dims;
    int64_t ne[TL_MAX_DIMS]; /* GGML order */
    const void *data;        /* tl_dtype_row_size(dtype, ne[0]) * rows bytes */
} tl_gguf_tensor_desc;

/* Writes a GGUF v3 file in one go. Keys and tensor names must be unique; data is
 * aligned to `alignment` (0 = general.alignment from kvs if present, else 32). */
tl_status tl_gguf_write(const char *path, uint32_t version, const tl_kv *kvs, int64_t n_kv,
                        const tl_gguf_tensor_desc *tensors, int64_t n_tensors);

#ifdef __cplusplus
}
#endif
#endif /* TORCHLESS_H */
