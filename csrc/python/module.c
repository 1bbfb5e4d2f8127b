/* torchless._C: module init, error mapping, and the free functions
 * (quantize / dequantize / dtype facts). */
#define TLPY_MODULE_C
#include "common.h"

#include <string.h>

PyObject *tlpy_raise(tl_status s) {
    const char *msg = tl_last_error();
    if (!msg || !*msg) msg = tl_status_name(s);
    PyObject *exc;
    switch (s) {
    case TL_ERR_NOT_FOUND: exc = PyExc_FileNotFoundError; break;
    case TL_ERR_IO: exc = PyExc_OSError; break;
    case TL_ERR_NOMEM: exc = PyExc_MemoryError; break;
    case TL_ERR_CANCELLED: exc = PyExc_KeyboardInterrupt; break;
    case TL_ERR_DEVICE: exc = PyExc_RuntimeError; break;
    default: exc = PyExc_ValueError; break;
    }
    /* messages quote names from the file, which need not be UTF-8 */
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (text) {
        PyErr_SetObject(exc, text);
        Py_DECREF(text);
    }
    return NULL;
}

int tlpy_dtype_from_object(PyObject *o, tl_dtype *out) {
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "dtype must be a str such as 'q4_k' or 'f16', not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    const char *name = PyUnicode_AsUTF8(o);
    if (!name) return -1;
    if (!tl_dtype_from_name(name, out)) {
        PyErr_Format(PyExc_ValueError, "unknown dtype '%.100s'", name);
        return -1;
    }
    return 0;
}

/* quantize(array, dtype) -> uint8 ndarray of shape array.shape[:-1] + (bytes_per_row,) */
static PyObject *py_quantize(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"array", "dtype", NULL};
    PyObject *obj, *dtype_obj;
    tl_dtype dt;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:quantize", kwlist, &obj, &dtype_obj)) return NULL;
    if (tlpy_dtype_from_object(dtype_obj, &dt)) return NULL;
    PyArrayObject *src = (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT32, 1, NPY_MAXDIMS, NPY_ARRAY_IN_ARRAY);
    if (!src) return NULL;
    int nd = PyArray_NDIM(src);
    npy_intp *shape = PyArray_DIMS(src);
    int64_t cols = shape[nd - 1];
    int64_t bs = tl_dtype_block_size(dt);
    if (cols % bs != 0) {
        PyErr_Format(PyExc_ValueError, "quantize: last dimension %lld is not a multiple of the %s block size %lld",
                     (long long)cols, tl_dtype_name(dt), (long long)bs);
        Py_DECREF(src);
        return NULL;
    }
    npy_intp out_shape[NPY_MAXDIMS];
    memcpy(out_shape, shape, (size_t)nd * sizeof(npy_intp));
    out_shape[nd - 1] = (npy_intp)tl_dtype_row_size(dt, cols);
    PyArrayObject *dst = (PyArrayObject *)PyArray_SimpleNew(nd, out_shape, NPY_UINT8);
    if (!dst) {
        Py_DECREF(src);
        return NULL;
    }
    int64_t n = (int64_t)PyArray_SIZE(src);
    tl_status s;
    Py_BEGIN_ALLOW_THREADS
    s = tl_quantize(dt, PyArray_DATA(src), PyArray_DATA(dst), n);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    if (s) {
        Py_DECREF(dst);
        return tlpy_raise(s);
    }
    return (PyObject *)dst;
}

/* dequantize(data, dtype, shape, out=None) -> float32 ndarray of `shape` (NumPy order);
 * `out`, when given, is a C-contiguous float32 array of that many elements, filled and returned. */
static PyObject *py_dequantize(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"data", "dtype", "shape", "out", NULL};
    PyObject *obj, *dtype_obj, *shape_obj, *out = Py_None;
    tl_dtype dt;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:dequantize", kwlist, &obj, &dtype_obj, &shape_obj, &out))
        return NULL;
    if (tlpy_dtype_from_object(dtype_obj, &dt)) return NULL;
    PyArray_Dims dims = {NULL, 0};
    if (!PyArray_IntpConverter(shape_obj, &dims)) return NULL;
    PyObject *result = NULL;
    Py_buffer buf = {0};
    if (dims.len < 1) {
        PyErr_SetString(PyExc_ValueError, "dequantize: shape needs at least one dimension");
        goto done;
    }
    int64_t cols = dims.ptr[dims.len - 1], rows = 1;
    for (int i = 0; i < dims.len; i++) {
        if (dims.ptr[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "dequantize: negative dimension in shape");
            goto done;
        }
        if (i < dims.len - 1 && __builtin_mul_overflow(rows, (int64_t)dims.ptr[i], &rows)) {
            PyErr_SetString(PyExc_ValueError, "dequantize: shape too large");
            goto done;
        }
    }
    if (cols % tl_dtype_block_size(dt) != 0) {
        PyErr_Format(PyExc_ValueError, "dequantize: last dimension %lld is not a multiple of the %s block size %lld",
                     (long long)cols, tl_dtype_name(dt), (long long)tl_dtype_block_size(dt));
        goto done;
    }
    if (PyObject_GetBuffer(obj, &buf, PyBUF_C_CONTIGUOUS) < 0) goto done;
    size_t row_bytes = tl_dtype_row_size(dt, cols), need;
    if (__builtin_mul_overflow(row_bytes, (size_t)rows, &need) || (size_t)buf.len != need) {
        PyErr_Format(PyExc_ValueError, "dequantize: %zd bytes of data, but shape needs %zu bytes of %s",
                     buf.len, row_bytes * (size_t)rows, tl_dtype_name(dt));
        goto done;
    }
    if (out == Py_None) {
        result = PyArray_SimpleNew(dims.len, dims.ptr, NPY_FLOAT32);
        if (!result) goto done;
    } else {
        if (!PyArray_Check(out) || PyArray_TYPE((PyArrayObject *)out) != NPY_FLOAT32 ||
            !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)out) || !PyArray_ISWRITEABLE((PyArrayObject *)out) ||
            PyArray_SIZE((PyArrayObject *)out) != (npy_intp)(rows * cols)) {
            PyErr_Format(PyExc_ValueError, "dequantize: out must be a writable C-contiguous float32 array of %lld elements",
                         (long long)(rows * cols));
            goto done;
        }
        result = Py_NewRef(out);
    }
    tl_status s;
    Py_BEGIN_ALLOW_THREADS
    s = tl_dequantize(dt, buf.buf, PyArray_DATA((PyArrayObject *)result), rows * cols);
    Py_END_ALLOW_THREADS
    if (s) {
        Py_CLEAR(result);
        tlpy_raise(s);
    }
done:
    if (buf.obj) PyBuffer_Release(&buf);
    PyDimMem_FREE(dims.ptr);
    return result;
}

/* dtype_info(name) -> dict of the dtype's table row */
static PyObject *py_dtype_info(PyObject *self, PyObject *arg) {
    (void)self;
    tl_dtype dt;
    if (tlpy_dtype_from_object(arg, &dt)) return NULL;
    return Py_BuildValue("{s:s,s:i,s:L,s:n,s:O}", "name", tl_dtype_name(dt), "id", (int)dt, "block_size",
                         (long long)tl_dtype_block_size(dt), "type_size", (Py_ssize_t)tl_dtype_type_size(dt),
                         "quantized", tl_dtype_is_quantized(dt) ? Py_True : Py_False);
}

static PyObject *py_dtypes(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int t = 0; t < TL_DTYPE_COUNT; t++) {
        if (!tl_dtype_is_valid(t)) continue;
        PyObject *name = PyUnicode_FromString(tl_dtype_name((tl_dtype)t));
        if (!name || PyList_Append(list, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(name);
    }
    return list;
}

static PyObject *py_cpu_isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(tl_cpu_isa());
}

static PyObject *py_devices(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    tl_device_info info[64];
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = tl_devices(info, 64);
    Py_END_ALLOW_THREADS
    if (n > 64) n = 64;
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < n; i++) {
        PyObject *d = Py_BuildValue("{s:s,s:i,s:s,s:n,s:n,s:O}", "backend", info[i].backend, "index", info[i].index, "name",
                                    info[i].name, "free_bytes", (Py_ssize_t)info[i].free_bytes, "total_bytes",
                                    (Py_ssize_t)info[i].total_bytes, "auto", info[i].auto_ok ? Py_True : Py_False);
        if (!d || PyList_Append(list, d) < 0) Py_CLEAR(list);
        Py_XDECREF(d);
    }
    return list;
}

/* a NULL-terminated list of C strings as a tuple of str */
static PyObject *string_tuple(const char *const *names) {
    Py_ssize_t n = 0;
    while (names[n]) n++;
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static PyObject *py_backends_built(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return string_tuple(tl_backends_built());
}

static PyObject *py_architectures(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return string_tuple(tl_supported_architectures());
}

static PyMethodDef module_methods[] = {
    {"devices", py_devices, METH_NOARGS,
     "devices() -> list of {backend, index, name, free_bytes, total_bytes}: GPUs first, the CPU last"},
    {"backends_built", py_backends_built, METH_NOARGS, "backends_built() -> tuple of the backends compiled in"},
    {"architectures", py_architectures, METH_NOARGS,
     "architectures() -> tuple of the general.architecture values the engine runs"},
    {"cpu_isa", py_cpu_isa, METH_NOARGS, "cpu_isa() -> the CPU kernel level in use ('scalar', 'avx2', 'avx512', 'neon')"},
    {"quantize", (PyCFunction)(void (*)(void))py_quantize, METH_VARARGS | METH_KEYWORDS,
     "quantize(array, dtype) -> uint8 array of shape array.shape[:-1] + (bytes_per_row,)"},
    {"dequantize", (PyCFunction)(void (*)(void))py_dequantize, METH_VARARGS | METH_KEYWORDS,
     "dequantize(data, dtype, shape) -> float32 array of shape"},
    {"dtype_info", py_dtype_info, METH_O, "dtype_info(name) -> dict: name, id, block_size, type_size, quantized"},
    {"dtypes", py_dtypes, METH_NOARGS, "dtypes() -> list of every dtype name"},
    {"gguf_write", (PyCFunction)(void (*)(void))tlpy_gguf_write, METH_VARARGS | METH_KEYWORDS,
     "gguf_write(path, version, kvs, tensors): write a GGUF file (see torchless.gguf.write)"},
    {"write_model", (PyCFunction)(void (*)(void))tlpy_write_model, METH_VARARGS | METH_KEYWORDS,
     "write_model(path, format, version, kvs, tensors, fill=None): write a GGUF or .tl file, tensor data given "
     "inline or streamed by fill(i) (see torchless.gguf.write_model)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "torchless._C", "The torchless C core.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (tlpy_tensorview_init_type(m) < 0 || tlpy_weightsfile_init_type(m) < 0 ||
        tlpy_stringarray_init_type(m) < 0 || tlpy_tokenizer_init(m) < 0 || tlpy_pretokenize_init(m) < 0 ||
        tlpy_sampler_init(m) < 0 || tlpy_model_init(m) < 0 || tlpy_generation_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
