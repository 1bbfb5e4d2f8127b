/* write_model(path, format, version, kvs, tensors, fill=None): the Python face of
 * tl_gguf_write / tl_native_write and their streaming forms; gguf_write(path, version,
 * kvs, tensors) is write_model with format "gguf" and no fill.
 *
 *   kvs:     [(key: str, type: int, value)], type a GGUF value type; an ARRAY's
 *            value is (elem_type: int, items) with items a bytes object of packed
 *            little-endian numbers for numeric/bool elements, else a sequence of
 *            values of elem_type (strings, or nested (elem_type, items) arrays).
 *   tensors: [(name: str, dtype: str, ne: tuple (GGML order), data: buffer)], or without
 *            data when fill(i) -> buffer supplies tensor i's bytes while the file is
 *            written (called once per tensor, in order, with the GIL held).
 * torchless.gguf.write builds these from ordinary Python values. */
#include "common.h"

#include "core/arena.h"
#include "core/status.h"

#include <string.h>

typedef struct {
    tl_arena arena;
    PyObject *keep; /* list of objects whose memory the values point into */
    Py_buffer *bufs;
    Py_ssize_t n_bufs;
} build;

static int keep(build *b, PyObject *o) {
    int r = PyList_Append(b->keep, o);
    Py_DECREF(o);
    return r;
}

static int to_string(build *b, PyObject *o, tl_string *out) {
    PyObject *bytes;
    if (PyUnicode_Check(o)) {
        bytes = PyUnicode_AsEncodedString(o, "utf-8", "surrogateescape");
        if (!bytes) return -1;
    } else if (PyBytes_Check(o)) {
        bytes = Py_NewRef(o);
    } else {
        PyErr_Format(PyExc_TypeError, "gguf_write: expected str, got %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    out->ptr = PyBytes_AS_STRING(bytes);
    out->len = (uint64_t)PyBytes_GET_SIZE(bytes);
    return keep(b, bytes);
}

static int to_value(build *b, int type, PyObject *o, tl_value *v, int depth);

static int to_array(build *b, PyObject *o, tl_value *v, int depth) {
    int et;
    PyObject *items;
    if (depth > 8) {
        PyErr_SetString(PyExc_ValueError, "gguf_write: arrays nested too deeply");
        return -1;
    }
    if (!PyArg_ParseTuple(o, "iO;an ARRAY value is (elem_type, items)", &et, &items)) return -1;
    if (et < 0 || et >= TL_VAL_TYPE_COUNT) {
        PyErr_Format(PyExc_ValueError, "gguf_write: unknown array element type %d", et);
        return -1;
    }
    v->arr.elem_type = (tl_value_type)et;
    size_t esize = tl_value_type_size((tl_value_type)et);
    if (esize) {
        if (!PyBytes_Check(items)) {
            PyErr_SetString(PyExc_TypeError, "gguf_write: numeric array items must be packed bytes");
            return -1;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(items);
        if (len % (Py_ssize_t)esize) {
            PyErr_SetString(PyExc_ValueError, "gguf_write: packed array bytes not a multiple of the element size");
            return -1;
        }
        v->arr.n = (uint64_t)(len / (Py_ssize_t)esize);
        v->arr.data = PyBytes_AS_STRING(items);
        return keep(b, Py_NewRef(items));
    }
    PyObject *seq = PySequence_Fast(items, "gguf_write: array items must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    v->arr.n = (uint64_t)n;
    size_t item_size = et == TL_VAL_STRING ? sizeof(tl_string) : sizeof(tl_value);
    void *data = tl_arena_alloc_array(&b->arena, (size_t)n, item_size, 8);
    if (!data) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    v->arr.data = data;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        int r = et == TL_VAL_STRING ? to_string(b, item, &((tl_string *)data)[i])
                                    : to_value(b, et, item, &((tl_value *)data)[i], depth + 1);
        if (r < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int to_value(build *b, int type, PyObject *o, tl_value *v, int depth) {
    if (type < 0 || type >= TL_VAL_TYPE_COUNT) {
        PyErr_Format(PyExc_ValueError, "gguf_write: unknown value type %d", type);
        return -1;
    }
    v->type = (tl_value_type)type;
    switch (v->type) {
    case TL_VAL_UINT8: case TL_VAL_UINT16: case TL_VAL_UINT32: case TL_VAL_UINT64: {
        unsigned long long x = PyLong_AsUnsignedLongLong(o);
        if (PyErr_Occurred()) return -1;
        int bits = (int)tl_value_type_size(v->type) * 8;
        if (bits < 64 && x >> bits) {
            PyErr_Format(PyExc_OverflowError, "gguf_write: %llu does not fit in %s", x, tl_value_type_name(v->type));
            return -1;
        }
        v->u64 = x;
        return 0;
    }
    case TL_VAL_INT8: case TL_VAL_INT16: case TL_VAL_INT32: case TL_VAL_INT64: {
        long long x = PyLong_AsLongLong(o);
        if (PyErr_Occurred()) return -1;
        int bits = (int)tl_value_type_size(v->type) * 8;
        if (bits < 64 && (x < -(1LL << (bits - 1)) || x >= (1LL << (bits - 1)))) {
            PyErr_Format(PyExc_OverflowError, "gguf_write: %lld does not fit in %s", x, tl_value_type_name(v->type));
            return -1;
        }
        v->i64 = x;
        return 0;
    }
    case TL_VAL_FLOAT32: case TL_VAL_FLOAT64:
        v->f64 = PyFloat_AsDouble(o);
        return PyErr_Occurred() ? -1 : 0;
    case TL_VAL_BOOL: {
        int t = PyObject_IsTrue(o);
        if (t < 0) return -1;
        v->b = t;
        return 0;
    }
    case TL_VAL_STRING: return to_string(b, o, &v->str);
    case TL_VAL_ARRAY: return to_array(b, o, v, depth);
    default: return -1;
    }
}

/* A streamed write's data source: fill(i) with the GIL held, its buffer kept until
 * the next call. A Python exception stays set for the caller to raise. */
typedef struct stream {
    PyObject *fill;
    Py_buffer buf;
    const tl_gguf_tensor_desc *td;
} stream;

static tl_status stream_data(void *user, int64_t i, size_t nbytes, const void **data) {
    stream *st = user;
    tl_status s = TL_OK;
    PyGILState_STATE g = PyGILState_Ensure();
    if (st->buf.obj) PyBuffer_Release(&st->buf);
    PyObject *o = PyObject_CallFunction(st->fill, "L", (long long)i);
    if (!o) {
        s = tl_set_error(TL_ERR_INVALID, "write_model: fill(%lld) raised", (long long)i);
    } else if (PyObject_GetBuffer(o, &st->buf, PyBUF_C_CONTIGUOUS) < 0) {
        s = tl_set_error(TL_ERR_INVALID, "write_model: fill(%lld) returned no buffer", (long long)i);
    } else if ((size_t)st->buf.len != nbytes) {
        PyErr_Format(PyExc_ValueError, "write_model: fill(%lld) gave %zd bytes for tensor '%s'; its dtype and shape need %zu",
                     (long long)i, st->buf.len, st->td[i].name, nbytes);
        s = tl_set_error(TL_ERR_INVALID, "write_model: wrong size");
    } else {
        *data = st->buf.buf;
    }
    Py_XDECREF(o);
    PyGILState_Release(g);
    return s;
}

/* write_model(path, format, version, kvs, tensors, fill=None): see the module doc above
 * and torchless.gguf.write_model. tensors: (name, dtype, ne) with fill, (name, dtype, ne,
 * data) without. */
PyObject *tlpy_write_model(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"path", "format", "version", "kvs", "tensors", "fill", NULL};
    PyObject *path = NULL, *kvs_obj, *tensors_obj, *fill = Py_None, *result = NULL;
    const char *format;
    unsigned int version;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&sIOO|O:write_model", kwlist, PyUnicode_FSConverter, &path, &format,
                                     &version, &kvs_obj, &tensors_obj, &fill))
        return NULL;
    build b = {{NULL}, PyList_New(0), NULL, 0};
    stream st = {fill, {0}, NULL};
    PyObject *kvs = PySequence_Fast(kvs_obj, "kvs must be a sequence");
    PyObject *tensors = PySequence_Fast(tensors_obj, "tensors must be a sequence");
    if (!b.keep || !kvs || !tensors) goto done;
    bool native = strcmp(format, "tl") == 0, streamed = fill != Py_None;
    if (!native && strcmp(format, "gguf") != 0) {
        PyErr_Format(PyExc_ValueError, "write_model: format must be 'gguf' or 'tl', got '%s'", format);
        goto done;
    }
    if (streamed && !PyCallable_Check(fill)) {
        PyErr_SetString(PyExc_TypeError, "write_model: fill must be callable (fill(i) -> buffer) or None");
        goto done;
    }

    Py_ssize_t n_kv = PySequence_Fast_GET_SIZE(kvs), n_t = PySequence_Fast_GET_SIZE(tensors);
    tl_kv *kv = tl_arena_alloc_array(&b.arena, (size_t)n_kv, sizeof(tl_kv), 8);
    tl_gguf_tensor_desc *td = tl_arena_alloc_array(&b.arena, (size_t)n_t, sizeof *td, 8);
    b.bufs = PyMem_Calloc((size_t)(n_t ? n_t : 1), sizeof(Py_buffer));
    if (!kv || !td || !b.bufs) {
        PyErr_NoMemory();
        goto done;
    }
    st.td = td;
    for (Py_ssize_t i = 0; i < n_kv; i++) {
        PyObject *key, *value;
        int type;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(kvs, i), "OiO;a kv is (key, type, value)", &key, &type, &value) ||
            to_string(&b, key, &kv[i].key) < 0 || to_value(&b, type, value, &kv[i].value, 0) < 0)
            goto done;
    }
    for (Py_ssize_t i = 0; i < n_t; i++) {
        PyObject *name, *dtype, *ne, *data = NULL;
        PyObject *item = PySequence_Fast_GET_ITEM(tensors, i);
        if (streamed ? !PyArg_ParseTuple(item, "UOO;a tensor is (name, dtype, ne) when fill is given", &name, &dtype, &ne)
                     : !PyArg_ParseTuple(item, "UOOO;a tensor is (name, dtype, ne, data)", &name, &dtype, &ne, &data))
            goto done;
        tl_string s;
        if (to_string(&b, name, &s) < 0) goto done;
        if (strlen(s.ptr) != s.len) {
            PyErr_SetString(PyExc_ValueError, "write_model: tensor name contains NUL");
            goto done;
        }
        td[i].name = s.ptr; /* bytes objects are NUL-terminated */
        if (tlpy_dtype_from_object(dtype, &td[i].dtype) < 0) goto done;
        PyObject *ne_seq = PySequence_Fast(ne, "ne must be a sequence of ints");
        if (!ne_seq) goto done;
        Py_ssize_t nd = PySequence_Fast_GET_SIZE(ne_seq);
        if (nd < 1 || nd > TL_MAX_DIMS) {
            Py_DECREF(ne_seq);
            PyErr_Format(PyExc_ValueError, "write_model: tensor '%s' has %zd dimensions (1 to %d)", td[i].name, nd, TL_MAX_DIMS);
            goto done;
        }
        td[i].n_dims = (int)nd;
        for (Py_ssize_t d = 0; d < nd; d++) td[i].ne[d] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(ne_seq, d));
        Py_DECREF(ne_seq);
        if (PyErr_Occurred()) goto done;
        if (td[i].ne[0] < 0 || td[i].ne[0] % tl_dtype_block_size(td[i].dtype)) {
            PyErr_Format(PyExc_ValueError, "write_model: tensor '%s' row of %lld is not a whole number of %s blocks of %lld",
                         td[i].name, (long long)td[i].ne[0], tl_dtype_name(td[i].dtype),
                         (long long)tl_dtype_block_size(td[i].dtype));
            goto done;
        }
        if (streamed) continue; /* sizes are checked by the writer before the file is created */
        if (PyObject_GetBuffer(data, &b.bufs[i], PyBUF_C_CONTIGUOUS) < 0) goto done;
        b.n_bufs = i + 1;
        size_t need = tl_dtype_row_size(td[i].dtype, td[i].ne[0]);
        for (int d = 1; d < td[i].n_dims; d++) need *= (size_t)(td[i].ne[d] > 0 ? td[i].ne[d] : 0);
        if ((size_t)b.bufs[i].len != need) {
            PyErr_Format(PyExc_ValueError, "write_model: tensor '%s' has %zd bytes of data, its shape and dtype need %zu",
                         td[i].name, b.bufs[i].len, need);
            goto done;
        }
        td[i].data = b.bufs[i].buf;
    }
    tl_status s;
    const char *cpath = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    if (native) s = streamed ? tl_native_write_stream(cpath, kv, n_kv, td, n_t, stream_data, &st)
                             : tl_native_write(cpath, kv, n_kv, td, n_t);
    else s = streamed ? tl_gguf_write_stream(cpath, version, kv, n_kv, td, n_t, stream_data, &st)
                      : tl_gguf_write(cpath, version, kv, n_kv, td, n_t);
    Py_END_ALLOW_THREADS
    if (s) {
        if (!PyErr_Occurred()) tlpy_raise(s); /* else fill's own exception */
    } else {
        result = Py_NewRef(Py_None);
    }
done:
    if (st.buf.obj) PyBuffer_Release(&st.buf);
    for (Py_ssize_t i = 0; i < b.n_bufs; i++) PyBuffer_Release(&b.bufs[i]);
    PyMem_Free(b.bufs);
    tl_arena_free_all(&b.arena);
    Py_XDECREF(b.keep);
    Py_XDECREF(kvs);
    Py_XDECREF(tensors);
    Py_XDECREF(path);
    return result;
}

PyObject *tlpy_gguf_write(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "version", "kvs", "tensors", NULL};
    PyObject *path, *kvs, *tensors;
    unsigned int version;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OIOO:gguf_write", kwlist, &path, &version, &kvs, &tensors))
        return NULL;
    PyObject *a = Py_BuildValue("(OsIOO)", path, "gguf", version, kvs, tensors);
    if (!a) return NULL;
    PyObject *r = tlpy_write_model(self, a, NULL);
    Py_DECREF(a);
    return r;
}
