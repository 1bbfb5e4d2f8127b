/* TensorView: a zero-copy view of one tensor where it lies (a mapped file).
 *
 * Exports the buffer protocol, read-only: plain types with their NumPy shape and
 * element code (F32 "f", F16 "e", BF16 "H", ...); quantized types as raw blocks,
 * uint8 (rows, bytes_per_row). The view keeps the file mapping alive, so it
 * outlives the file object it came from. */
#include "common.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    tl_tensor t;
    PyObject *name;
    PyObject *base; /* keeps non-mapped memory alive, or NULL */
    int export_ndim;
    Py_ssize_t shape[TL_MAX_DIMS];
    Py_ssize_t strides[TL_MAX_DIMS];
    Py_ssize_t itemsize;
    const char *format;
    Py_ssize_t exports;
} TensorView;

PyTypeObject *TensorView_Type;

const tl_tensor *tlpy_tensorview_tensor(PyObject *o) {
    if (!TensorView_Type || !PyObject_TypeCheck(o, TensorView_Type)) return NULL;
    return &((TensorView *)o)->t;
}

PyObject *tlpy_tensorview_new(const tl_tensor *t, const char *name, size_t name_len, PyObject *base) {
    TensorView *v = PyObject_New(TensorView, TensorView_Type);
    if (!v) return NULL;
    v->t = *t;
    v->base = NULL;
    v->exports = 0;
    v->name = PyUnicode_DecodeUTF8(name, (Py_ssize_t)name_len, "surrogateescape");
    if (!v->name) {
        v->t.owner = NULL;
        Py_DECREF(v);
        return NULL;
    }
    tl_mapping_retain(v->t.owner);
    v->base = Py_XNewRef(base);

    /* the exported layout */
    if (tl_dtype_is_quantized(t->dtype)) {
        v->export_ndim = 2;
        v->shape[0] = (Py_ssize_t)tl_tensor_nrows(t);
        v->shape[1] = (Py_ssize_t)tl_dtype_row_size(t->dtype, t->ne[0]);
        v->itemsize = 1;
        v->format = "B";
    } else {
        v->export_ndim = t->n_dims;
        for (int i = 0; i < t->n_dims; i++) v->shape[i] = (Py_ssize_t)t->ne[t->n_dims - 1 - i];
        v->itemsize = (Py_ssize_t)tl_dtype_type_size(t->dtype);
        static const char *codes[TL_DTYPE_COUNT] = {
            [TL_F32] = "f", [TL_F16] = "e", [TL_BF16] = "H", [TL_F64] = "d", [TL_I8] = "b", [TL_I16] = "h",
            [TL_I32] = "i", [TL_I64] = "q", [TL_U8] = "B", [TL_BOOL] = "?",
        };
        v->format = codes[t->dtype] ? codes[t->dtype] : "B";
    }
    Py_ssize_t stride = v->itemsize;
    for (int i = v->export_ndim - 1; i >= 0; i--) {
        v->strides[i] = stride;
        stride *= v->shape[i];
    }
    return (PyObject *)v;
}

static void TensorView_dealloc(TensorView *v) {
    PyTypeObject *tp = Py_TYPE(v);
    tl_mapping_release(v->t.owner);
    Py_XDECREF(v->name);
    Py_XDECREF(v->base);
    tp->tp_free((PyObject *)v);
    Py_DECREF(tp);
}

static int TensorView_getbuffer(TensorView *v, Py_buffer *view, int flags) {
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "TensorView is read-only (it maps the model file)");
        view->obj = NULL;
        return -1;
    }
    view->buf = (void *)v->t.data;
    view->obj = Py_NewRef(v);
    view->len = (Py_ssize_t)v->t.nbytes;
    view->readonly = 1;
    view->itemsize = v->itemsize;
    view->format = (flags & PyBUF_FORMAT) ? (char *)v->format : NULL;
    view->ndim = v->export_ndim;
    view->shape = (flags & PyBUF_ND) ? v->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? v->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    v->exports++;
    return 0;
}

static void TensorView_releasebuffer(TensorView *v, Py_buffer *view) {
    (void)view;
    v->exports--;
}

static PyObject *TensorView_dequantize(TensorView *v, PyObject *unused) {
    (void)unused;
    npy_intp dims[TL_MAX_DIMS];
    for (int i = 0; i < v->t.n_dims; i++) dims[i] = (npy_intp)v->t.ne[v->t.n_dims - 1 - i];
    PyObject *out = PyArray_SimpleNew(v->t.n_dims, dims, NPY_FLOAT32);
    if (!out) return NULL;
    tl_status s;
    Py_BEGIN_ALLOW_THREADS
    s = tl_dequantize(v->t.dtype, v->t.data, PyArray_DATA((PyArrayObject *)out), tl_tensor_nelements(&v->t));
    Py_END_ALLOW_THREADS
    if (s) {
        Py_DECREF(out);
        return tlpy_raise(s);
    }
    return out;
}

static PyObject *TensorView_repr(TensorView *v) {
    PyObject *shape = PyObject_GetAttrString((PyObject *)v, "shape");
    if (!shape) return NULL;
    PyObject *r = PyUnicode_FromFormat("TensorView(name=%R, dtype='%s', shape=%R, nbytes=%zu)", v->name,
                                       tl_dtype_name(v->t.dtype), shape, v->t.nbytes);
    Py_DECREF(shape);
    return r;
}

static PyObject *get_name(TensorView *v, void *c) { (void)c; return Py_NewRef(v->name); }
static PyObject *get_dtype(TensorView *v, void *c) { (void)c; return PyUnicode_FromString(tl_dtype_name(v->t.dtype)); }
static PyObject *get_nbytes(TensorView *v, void *c) { (void)c; return PyLong_FromSize_t(v->t.nbytes); }
static PyObject *get_ndim(TensorView *v, void *c) { (void)c; return PyLong_FromLong(v->t.n_dims); }
static PyObject *get_size(TensorView *v, void *c) { (void)c; return PyLong_FromLongLong(tl_tensor_nelements(&v->t)); }
static PyObject *get_quantized(TensorView *v, void *c) { (void)c; return PyBool_FromLong(tl_dtype_is_quantized(v->t.dtype)); }
static PyObject *get_block_size(TensorView *v, void *c) { (void)c; return PyLong_FromLongLong(tl_dtype_block_size(v->t.dtype)); }

static PyObject *get_shape(TensorView *v, void *c) {
    (void)c;
    PyObject *t = PyTuple_New(v->t.n_dims);
    if (!t) return NULL;
    for (int i = 0; i < v->t.n_dims; i++) {
        PyObject *d = PyLong_FromLongLong(v->t.ne[v->t.n_dims - 1 - i]);
        if (!d) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, d);
    }
    return t;
}

static PyObject *get_ne(TensorView *v, void *c) {
    (void)c;
    PyObject *t = PyTuple_New(v->t.n_dims);
    if (!t) return NULL;
    for (int i = 0; i < v->t.n_dims; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLongLong(v->t.ne[i]));
    return t;
}

/* byte offset of the data in its file (None when not file-backed) */
static PyObject *get_offset(TensorView *v, void *c) {
    (void)c;
    if (!v->t.owner) Py_RETURN_NONE;
    return PyLong_FromSize_t((size_t)((const uint8_t *)v->t.data - tl_mapping_data(v->t.owner)));
}

static PyObject *get_path(TensorView *v, void *c) {
    (void)c;
    if (!v->t.owner) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(tl_mapping_path(v->t.owner));
}

static PyGetSetDef TensorView_getset[] = {
    {"name", (getter)get_name, NULL, "tensor name as stored in the file", NULL},
    {"dtype", (getter)get_dtype, NULL, "element type name: 'f32', 'f16', 'bf16', 'q4_k', ...", NULL},
    {"shape", (getter)get_shape, NULL, "shape in NumPy order (rows, cols)", NULL},
    {"ne", (getter)get_ne, NULL, "shape in GGML order (cols first)", NULL},
    {"ndim", (getter)get_ndim, NULL, "number of dimensions", NULL},
    {"size", (getter)get_size, NULL, "number of elements", NULL},
    {"nbytes", (getter)get_nbytes, NULL, "bytes of data", NULL},
    {"quantized", (getter)get_quantized, NULL, "True for block-quantized dtypes", NULL},
    {"block_size", (getter)get_block_size, NULL, "elements per quantization block (1 for plain types)", NULL},
    {"offset", (getter)get_offset, NULL, "byte offset of the data in its file", NULL},
    {"path", (getter)get_path, NULL, "the file the data lies in", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef TensorView_methods[] = {
    {"dequantize", (PyCFunction)TensorView_dequantize, METH_NOARGS,
     "dequantize() -> float32 ndarray of self.shape (a new array; the GIL is released while converting)"},
    {NULL, NULL, 0, NULL},
};

static PyObject *TensorView_new(PyTypeObject *tp, PyObject *a, PyObject *k) {
    (void)tp; (void)a; (void)k;
    PyErr_SetString(PyExc_TypeError, "TensorView objects come from torchless.load(...).tensors");
    return NULL;
}

static PyType_Slot TensorView_slots[] = {
    {Py_tp_dealloc, TensorView_dealloc},
    {Py_tp_repr, TensorView_repr},
    {Py_tp_getset, TensorView_getset},
    {Py_tp_methods, TensorView_methods},
    {Py_tp_new, TensorView_new},
    {Py_bf_getbuffer, TensorView_getbuffer},
    {Py_bf_releasebuffer, TensorView_releasebuffer},
    {Py_tp_doc, "A zero-copy, read-only view of a tensor in a model file."},
    {0, NULL},
};

static PyType_Spec TensorView_spec = {
    "torchless.TensorView", sizeof(TensorView), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, TensorView_slots,
};

int tlpy_tensorview_init_type(PyObject *module) {
    TensorView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &TensorView_spec, NULL);
    if (!TensorView_Type) return -1;
    return PyModule_AddObjectRef(module, "TensorView", (PyObject *)TensorView_Type);
}
