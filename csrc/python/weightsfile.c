/* WeightsFile: an opened model file (GGUF, safetensors, safetensors index):
 * metadata, tensor names and zero-copy TensorViews. The Python class
 * torchless.ModelFile wraps it. */
#include "common.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    tl_weights *w;
    PyObject *path;
} WeightsFile;

PyTypeObject *WeightsFile_Type;

static int check_open(WeightsFile *f) {
    if (f->w) return 0;
    PyErr_SetString(PyExc_ValueError, "I/O operation on a closed model file");
    return -1;
}

/* ---- metadata values -> Python ---- */


static int numpy_type_of(tl_value_type t) {
    switch (t) {
    case TL_VAL_UINT8: return NPY_UINT8;
    case TL_VAL_INT8: return NPY_INT8;
    case TL_VAL_UINT16: return NPY_UINT16;
    case TL_VAL_INT16: return NPY_INT16;
    case TL_VAL_UINT32: return NPY_UINT32;
    case TL_VAL_INT32: return NPY_INT32;
    case TL_VAL_FLOAT32: return NPY_FLOAT32;
    case TL_VAL_BOOL: return NPY_BOOL;
    case TL_VAL_UINT64: return NPY_UINT64;
    case TL_VAL_INT64: return NPY_INT64;
    case TL_VAL_FLOAT64: return NPY_FLOAT64;
    default: return -1;
    }
}

PyObject *tlpy_value_to_python(const tl_value *v, tl_mapping *owner) {
    switch (v->type) {
    case TL_VAL_UINT8: case TL_VAL_UINT16: case TL_VAL_UINT32: case TL_VAL_UINT64:
        return PyLong_FromUnsignedLongLong(v->u64);
    case TL_VAL_INT8: case TL_VAL_INT16: case TL_VAL_INT32: case TL_VAL_INT64:
        return PyLong_FromLongLong(v->i64);
    case TL_VAL_FLOAT32: case TL_VAL_FLOAT64: return PyFloat_FromDouble(v->f64);
    case TL_VAL_BOOL: return PyBool_FromLong(v->b);
    case TL_VAL_STRING: return tlpy_string_to_python(v->str);
    case TL_VAL_ARRAY: break;
    default: PyErr_SetString(PyExc_ValueError, "unknown metadata value type"); return NULL;
    }
    uint64_t n = v->arr.n;
    if (n > (uint64_t)PY_SSIZE_T_MAX) return PyErr_NoMemory();
    int npy = numpy_type_of(v->arr.elem_type);
    if (npy >= 0) {
        /* numbers: one NumPy array, copied out of the table */
        npy_intp dims[1] = {(npy_intp)n};
        PyObject *a = PyArray_SimpleNew(1, dims, npy);
        if (a && n) memcpy(PyArray_DATA((PyArrayObject *)a), v->arr.data, (size_t)n * tl_value_type_size(v->arr.elem_type));
        return a;
    }
    /* strings in a mapping: decoded lazily; strings elsewhere are copied out now */
    if (v->arr.elem_type == TL_VAL_STRING && owner) return tlpy_stringarray_new(v->arr.data, n, owner);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *item = v->arr.elem_type == TL_VAL_STRING ? tlpy_string_to_python(((const tl_string *)v->arr.data)[i])
                                                          : tlpy_value_to_python(&((const tl_value *)v->arr.data)[i], owner);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* "uint32", "array[string]", "array[array[int32]]" */
static PyObject *value_type_name(const tl_value *v) {
    if (v->type != TL_VAL_ARRAY) return PyUnicode_FromString(tl_value_type_name(v->type));
    if (v->arr.elem_type != TL_VAL_ARRAY)
        return PyUnicode_FromFormat("array[%s]", tl_value_type_name(v->arr.elem_type));
    /* arrays of arrays: name by the first element (all GGUF writers keep them uniform) */
    if (v->arr.n == 0) return PyUnicode_FromString("array[array]");
    PyObject *inner = value_type_name(&((const tl_value *)v->arr.data)[0]);
    if (!inner) return NULL;
    PyObject *r = PyUnicode_FromFormat("array[%U]", inner);
    Py_DECREF(inner);
    return r;
}

/* ---- the type ---- */

static PyObject *WeightsFile_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&:WeightsFile", kwlist, PyUnicode_FSDecoder, &path)) return NULL;
    PyObject *bytes = PyUnicode_EncodeFSDefault(path);
    if (!bytes) {
        Py_DECREF(path);
        return NULL;
    }
    const char *cpath = PyBytes_AS_STRING(bytes);
    if (strlen(cpath) != (size_t)PyBytes_GET_SIZE(bytes)) {
        PyErr_SetString(PyExc_ValueError, "path contains a NUL character");
        Py_DECREF(bytes);
        Py_DECREF(path);
        return NULL;
    }
    tl_weights *w = NULL;
    tl_status s;
    Py_BEGIN_ALLOW_THREADS
    s = tl_weights_open(cpath, &w);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    if (s) {
        Py_DECREF(path);
        return tlpy_raise(s);
    }
    WeightsFile *f = (WeightsFile *)tp->tp_alloc(tp, 0);
    if (!f) {
        tl_weights_free(w);
        Py_DECREF(path);
        return NULL;
    }
    f->w = w;
    f->path = path;
    return (PyObject *)f;
}

static void WeightsFile_dealloc(WeightsFile *f) {
    PyTypeObject *tp = Py_TYPE(f);
    tl_weights_free(f->w);
    Py_XDECREF(f->path);
    tp->tp_free((PyObject *)f);
    Py_DECREF(tp);
}

static PyObject *WeightsFile_close(WeightsFile *f, PyObject *unused) {
    (void)unused;
    tl_weights_free(f->w); /* views hold their own reference to the mapping */
    f->w = NULL;
    Py_RETURN_NONE;
}

static PyObject *value_type_of(const tl_value *v, tl_mapping *owner) {
    (void)owner;
    return value_type_name(v);
}

/* {key: convert(value)} over the metadata, in file order. */
static PyObject *kv_dict(const tl_weights *w, PyObject *(*convert)(const tl_value *, tl_mapping *)) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    /* GGUF string arrays point into the (single) mapping; keep it alive with them */
    tl_mapping *owner = tl_weights_format(w) == TL_FORMAT_GGUF ? tl_weights_mapping(w, 0) : NULL;
    for (int64_t i = 0; i < tl_weights_n_kv(w); i++) {
        const tl_kv *kv = tl_weights_kv(w, i);
        PyObject *k = tlpy_string_to_python(kv->key);
        PyObject *v = k ? convert(&kv->value, owner) : NULL;
        if (!v || PyDict_SetItem(d, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return d;
}

PyObject *tlpy_metadata(const tl_weights *w, bool types) { return kv_dict(w, types ? value_type_of : tlpy_value_to_python); }

PyObject *tlpy_tensor_names(const tl_weights *w) {
    int64_t n = tl_weights_n_tensors(w);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (int64_t i = 0; i < n; i++) {
        PyObject *name = tlpy_string_to_python(tl_weights_tensor(w, i)->name);
        if (!name) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, name);
    }
    return list;
}

PyObject *tlpy_tensor(const tl_weights *w, PyObject *name) {
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "tensor name must be str, not %.100s", Py_TYPE(name)->tp_name);
        return NULL;
    }
    PyObject *b = PyUnicode_AsEncodedString(name, "utf-8", "surrogateescape");
    if (!b) return NULL;
    const tl_named_tensor *nt = NULL;
    if (strlen(PyBytes_AS_STRING(b)) == (size_t)PyBytes_GET_SIZE(b)) nt = tl_weights_find_tensor(w, PyBytes_AS_STRING(b));
    Py_DECREF(b);
    if (!nt) {
        PyErr_SetObject(PyExc_KeyError, name);
        return NULL;
    }
    return tlpy_tensorview_new(&nt->tensor, nt->name.ptr, nt->name.len, NULL);
}

static PyObject *WeightsFile_metadata(WeightsFile *f, PyObject *unused) {
    (void)unused;
    return check_open(f) ? NULL : tlpy_metadata(f->w, false);
}

static PyObject *WeightsFile_metadata_types(WeightsFile *f, PyObject *unused) {
    (void)unused;
    return check_open(f) ? NULL : tlpy_metadata(f->w, true);
}

static PyObject *WeightsFile_tensor_names(WeightsFile *f, PyObject *unused) {
    (void)unused;
    return check_open(f) ? NULL : tlpy_tensor_names(f->w);
}

static PyObject *WeightsFile_tensor(WeightsFile *f, PyObject *name) {
    return check_open(f) ? NULL : tlpy_tensor(f->w, name);
}

static PyObject *get_path(WeightsFile *f, void *c) { (void)c; return Py_NewRef(f->path); }
static PyObject *get_closed(WeightsFile *f, void *c) { (void)c; return PyBool_FromLong(f->w == NULL); }
static PyObject *get_format(WeightsFile *f, void *c) {
    (void)c;
    if (check_open(f)) return NULL;
    switch (tl_weights_format(f->w)) {
    case TL_FORMAT_GGUF: return PyUnicode_FromString("gguf");
    case TL_FORMAT_SAFETENSORS: return PyUnicode_FromString("safetensors");
    case TL_FORMAT_LLAMA2C: return PyUnicode_FromString("llama2c");
    case TL_FORMAT_NATIVE: return PyUnicode_FromString("tl");
    case TL_FORMAT_HF: return PyUnicode_FromString("hf");
    }
    return PyUnicode_FromString("unknown");
}
static PyObject *get_version(WeightsFile *f, void *c) {
    (void)c;
    if (check_open(f)) return NULL;
    return PyLong_FromUnsignedLong(tl_weights_version(f->w));
}
static PyObject *get_alignment(WeightsFile *f, void *c) {
    (void)c;
    if (check_open(f)) return NULL;
    return PyLong_FromUnsignedLongLong(tl_weights_alignment(f->w));
}
static PyObject *get_file_size(WeightsFile *f, void *c) {
    (void)c;
    if (check_open(f)) return NULL;
    return PyLong_FromSize_t(tl_weights_file_size(f->w));
}
static PyObject *get_n_tensors(WeightsFile *f, void *c) {
    (void)c;
    if (check_open(f)) return NULL;
    return PyLong_FromLongLong(tl_weights_n_tensors(f->w));
}

static PyGetSetDef WeightsFile_getset[] = {
    {"path", (getter)get_path, NULL, "the path opened", NULL},
    {"closed", (getter)get_closed, NULL, "True after close()", NULL},
    {"format", (getter)get_format, NULL, "'gguf', 'safetensors', 'hf' (a Hugging Face folder), 'llama2c' or 'tl'", NULL},
    {"version", (getter)get_version, NULL, "GGUF, .tl or llama2.c version (0 for safetensors)", NULL},
    {"alignment", (getter)get_alignment, NULL, "GGUF data alignment (64 for .tl; 0 for safetensors, llama2.c)", NULL},
    {"file_size", (getter)get_file_size, NULL, "bytes of all mapped files", NULL},
    {"n_tensors", (getter)get_n_tensors, NULL, "number of tensors", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef WeightsFile_methods[] = {
    {"close", (PyCFunction)WeightsFile_close, METH_NOARGS, "release the file (views stay valid)"},
    {"metadata", (PyCFunction)WeightsFile_metadata, METH_NOARGS, "metadata as a dict"},
    {"metadata_types", (PyCFunction)WeightsFile_metadata_types, METH_NOARGS, "metadata value types as a dict of str"},
    {"tensor_names", (PyCFunction)WeightsFile_tensor_names, METH_NOARGS, "tensor names in file order"},
    {"tensor", (PyCFunction)WeightsFile_tensor, METH_O, "tensor(name) -> TensorView (KeyError if absent)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot WeightsFile_slots[] = {
    {Py_tp_new, WeightsFile_new},
    {Py_tp_dealloc, WeightsFile_dealloc},
    {Py_tp_getset, WeightsFile_getset},
    {Py_tp_methods, WeightsFile_methods},
    {Py_tp_doc, "WeightsFile(path): an opened GGUF, safetensors, .tl or llama2.c file (see torchless.load)."},
    {0, NULL},
};

static PyType_Spec WeightsFile_spec = {
    "torchless._C.WeightsFile", sizeof(WeightsFile), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    WeightsFile_slots,
};

int tlpy_weightsfile_init_type(PyObject *module) {
    WeightsFile_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &WeightsFile_spec, NULL);
    if (!WeightsFile_Type) return -1;
    return PyModule_AddObjectRef(module, "WeightsFile", (PyObject *)WeightsFile_Type);
}
