/* Shared declarations of the torchless._C extension (one file per Python type). */
#ifndef TLPY_COMMON_H
#define TLPY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL torchless_ARRAY_API
#ifndef TLPY_MODULE_C
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
#include <pythread.h>

#include "torchless.h"

extern PyTypeObject *TensorView_Type;
extern PyTypeObject *WeightsFile_Type;
extern PyTypeObject *StringArray_Type;

/* Raises the Python exception matching a failed status, with tl_last_error():
 * format/unsupported/invalid -> ValueError, not found -> FileNotFoundError,
 * io -> OSError, nomem -> MemoryError. Returns NULL. */
PyObject *tlpy_raise(tl_status s);

/* Parses a dtype name ("q4_k", "F16", ...) into *out; raises ValueError. */
int tlpy_dtype_from_object(PyObject *o, tl_dtype *out);

/* A new TensorView over t (t.owner is retained, `base` kept alive if not NULL). */
PyObject *tlpy_tensorview_new(const tl_tensor *t, const char *name, size_t name_len, PyObject *base);
/* The tensor inside a TensorView, or NULL if o is not one (no exception set). */
const tl_tensor *tlpy_tensorview_tensor(PyObject *o);

/* A str from a file string (UTF-8, undecodable bytes kept with surrogateescape). */
PyObject *tlpy_string_to_python(tl_string s);
/* A StringArray over n strings that point into `owner` (retained). */
PyObject *tlpy_stringarray_new(const tl_string *items, uint64_t n, tl_mapping *owner);

/* A weights table's metadata as a dict (values, or their type names), its tensor names,
 * and a TensorView of one tensor (KeyError when absent). */
PyObject *tlpy_metadata(const tl_weights *w, bool types);
PyObject *tlpy_tensor_names(const tl_weights *w);
PyObject *tlpy_tensor(const tl_weights *w, PyObject *name);

/* Metadata value -> Python (int, float, bool, str, numpy array, list). */
PyObject *tlpy_value_to_python(const tl_value *v, tl_mapping *owner);

int tlpy_tensorview_init_type(PyObject *module);
int tlpy_weightsfile_init_type(PyObject *module);
int tlpy_stringarray_init_type(PyObject *module);
/* Each adds its types and functions to the module (one file per Python type). */
int tlpy_tokenizer_init(PyObject *module);   /* tokenizer.c: Tokenizer */
int tlpy_pretokenize_init(PyObject *module); /* pretokenize.c: pretokenize() for tests */
int tlpy_sampler_init(PyObject *module);     /* sampler.c: Sampler */
int tlpy_model_init(PyObject *module);       /* model.c: Model */
int tlpy_generation_init(PyObject *module);  /* generation.c: Generation */

/* The engine model inside a Model object (borrowed). */
const tl_model *tlpy_model_of(PyObject *model);
/* generation.c: an abort callback for tl_forward that runs pending signal handlers (takes
 * the GIL); true (cancel) when one raised, the exception left set for the caller. */
bool tlpy_check_signals(void *user);
/* A Generation iterator over sequence seq of ctx; the model object is kept alive. */
PyObject *tlpy_generation_new(PyObject *model, tl_context *ctx, PyThread_type_lock lock, const int32_t *prompt,
                              size_t n_prompt, const tl_sampler_params *sp, const tl_generate_params *gp, int32_t seq);

PyObject *tlpy_gguf_write(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *tlpy_write_model(PyObject *self, PyObject *args, PyObject *kwargs);

#endif
