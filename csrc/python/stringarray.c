/* StringArray: a GGUF array of strings as a read-only Python sequence that decodes
 * each item when asked. Vocabularies hold 100k-260k strings; building a list of
 * str up front would cost more than opening the file. The items point into the
 * file mapping, which the array keeps alive. */
#include "common.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    tl_mapping *owner; /* retained; may be NULL when the strings live in `items` memory */
    tl_string *items;  /* malloc'd copy of the string table */
    Py_ssize_t n;
} StringArray;

PyTypeObject *StringArray_Type;

PyObject *tlpy_string_to_python(tl_string s) {
    /* vocabularies are mostly short strings: copy ASCII ones without the UTF-8 decoder */
    const unsigned char *p = (const unsigned char *)s.ptr;
    uint64_t i = 0;
    while (i < s.len && p[i] < 0x80) i++;
    if (i < s.len || s.len > (uint64_t)PY_SSIZE_T_MAX)
        return PyUnicode_DecodeUTF8(s.ptr, (Py_ssize_t)s.len, "surrogateescape");
    PyObject *u = PyUnicode_New((Py_ssize_t)s.len, 127);
    if (u) memcpy(PyUnicode_1BYTE_DATA(u), p, s.len);
    return u;
}

PyObject *tlpy_stringarray_new(const tl_string *items, uint64_t n, tl_mapping *owner) {
    if (n > (uint64_t)(PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(tl_string))) return PyErr_NoMemory();
    StringArray *a = PyObject_New(StringArray, StringArray_Type);
    if (!a) return NULL;
    a->n = (Py_ssize_t)n;
    a->owner = NULL;
    a->items = malloc((size_t)(n ? n : 1) * sizeof(tl_string));
    if (!a->items) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    if (n) memcpy(a->items, items, (size_t)n * sizeof(tl_string));
    a->owner = owner;
    tl_mapping_retain(owner);
    return (PyObject *)a;
}

static void StringArray_dealloc(StringArray *a) {
    PyTypeObject *tp = Py_TYPE(a);
    free(a->items);
    tl_mapping_release(a->owner);
    tp->tp_free((PyObject *)a);
    Py_DECREF(tp);
}

static Py_ssize_t StringArray_len(StringArray *a) { return a->n; }

static PyObject *StringArray_item(StringArray *a, Py_ssize_t i) {
    if (i < 0 || i >= a->n) {
        PyErr_SetString(PyExc_IndexError, "StringArray index out of range");
        return NULL;
    }
    return tlpy_string_to_python(a->items[i]);
}

static PyObject *StringArray_tolist(StringArray *a, PyObject *unused) {
    (void)unused;
    PyObject *list = PyList_New(a->n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < a->n; i++) {
        PyObject *s = tlpy_string_to_python(a->items[i]);
        if (!s) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, s);
    }
    return list;
}

static PyObject *StringArray_subscript(StringArray *a, PyObject *key) {
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        if (i < 0) i += a->n;
        return StringArray_item(a, i);
    }
    if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0) return NULL;
        Py_ssize_t len = PySlice_AdjustIndices(a->n, &start, &stop, step);
        PyObject *list = PyList_New(len);
        if (!list) return NULL;
        for (Py_ssize_t k = 0, i = start; k < len; k++, i += step) {
            PyObject *s = tlpy_string_to_python(a->items[i]);
            if (!s) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, k, s);
        }
        return list;
    }
    PyErr_Format(PyExc_TypeError, "StringArray indices must be integers or slices, not %.100s", Py_TYPE(key)->tp_name);
    return NULL;
}

/* Equal to a list or tuple of the same strings, or to another StringArray. */
static PyObject *StringArray_richcompare(StringArray *a, PyObject *other, int op) {
    if ((op != Py_EQ && op != Py_NE) ||
        !(PyList_Check(other) || PyTuple_Check(other) || PyObject_TypeCheck(other, StringArray_Type)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *mine = StringArray_tolist(a, NULL);
    if (!mine) return NULL;
    PyObject *theirs = PyObject_TypeCheck(other, StringArray_Type) ? StringArray_tolist((StringArray *)other, NULL)
                                                                   : PySequence_List(other);
    if (!theirs) {
        Py_DECREF(mine);
        return NULL;
    }
    PyObject *r = PyObject_RichCompare(mine, theirs, op);
    Py_DECREF(mine);
    Py_DECREF(theirs);
    return r;
}

static PyObject *StringArray_repr(StringArray *a) {
    if (a->n <= 6) {
        PyObject *list = StringArray_tolist(a, NULL);
        if (!list) return NULL;
        PyObject *r = PyUnicode_FromFormat("StringArray(%R)", list);
        Py_DECREF(list);
        return r;
    }
    PyObject *first = tlpy_string_to_python(a->items[0]);
    PyObject *last = first ? tlpy_string_to_python(a->items[a->n - 1]) : NULL;
    PyObject *r = last ? PyUnicode_FromFormat("StringArray([%R, ..., %R], len=%zd)", first, last, a->n) : NULL;
    Py_XDECREF(first);
    Py_XDECREF(last);
    return r;
}

/* Position of the first item equal to `value`, or -1; compares encoded bytes. */
static Py_ssize_t find(StringArray *a, PyObject *value, Py_ssize_t *count) {
    if (!PyUnicode_Check(value)) return -1;
    PyObject *b = PyUnicode_AsEncodedString(value, "utf-8", "surrogateescape");
    if (!b) return -2;
    const char *p = PyBytes_AS_STRING(b);
    uint64_t len = (uint64_t)PyBytes_GET_SIZE(b);
    Py_ssize_t first = -1;
    for (Py_ssize_t i = 0; i < a->n; i++) {
        if (a->items[i].len == len && (len == 0 || memcmp(a->items[i].ptr, p, len) == 0)) {
            if (first < 0) first = i;
            if (!count) break;
            (*count)++;
        }
    }
    Py_DECREF(b);
    return first;
}

static PyObject *StringArray_index(StringArray *a, PyObject *value) {
    Py_ssize_t i = find(a, value, NULL);
    if (i == -2) return NULL;
    if (i < 0) {
        PyErr_Format(PyExc_ValueError, "%R is not in the StringArray", value);
        return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *StringArray_count(StringArray *a, PyObject *value) {
    Py_ssize_t n = 0;
    if (find(a, value, &n) == -2) return NULL;
    return PyLong_FromSsize_t(n);
}

static int StringArray_contains(StringArray *a, PyObject *value) {
    Py_ssize_t i = find(a, value, NULL);
    return i == -2 ? -1 : i >= 0;
}

static PyMethodDef StringArray_methods[] = {
    {"tolist", (PyCFunction)StringArray_tolist, METH_NOARGS, "all items as a list of str"},
    {"index", (PyCFunction)StringArray_index, METH_O, "index(value) -> position of the first equal item"},
    {"count", (PyCFunction)StringArray_count, METH_O, "count(value) -> number of equal items"},
    {NULL, NULL, 0, NULL},
};

static PyObject *StringArray_new(PyTypeObject *tp, PyObject *a, PyObject *k) {
    (void)tp; (void)a; (void)k;
    PyErr_SetString(PyExc_TypeError, "StringArray objects come from model file metadata");
    return NULL;
}

static PyType_Slot StringArray_slots[] = {
    {Py_tp_dealloc, StringArray_dealloc},
    {Py_tp_repr, StringArray_repr},
    {Py_tp_richcompare, StringArray_richcompare},
    {Py_tp_methods, StringArray_methods},
    {Py_tp_new, StringArray_new},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_sq_length, StringArray_len},
    {Py_sq_item, StringArray_item},
    {Py_sq_contains, StringArray_contains},
    {Py_mp_length, StringArray_len},
    {Py_mp_subscript, StringArray_subscript},
    {Py_tp_doc, "A read-only sequence of str decoded on access (GGUF string arrays)."},
    {0, NULL},
};

static PyType_Spec StringArray_spec = {
    "torchless.StringArray", sizeof(StringArray), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_SEQUENCE,
    StringArray_slots,
};

int tlpy_stringarray_init_type(PyObject *module) {
    StringArray_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &StringArray_spec, NULL);
    if (!StringArray_Type) return -1;
    return PyModule_AddObjectRef(module, "StringArray", (PyObject *)StringArray_Type);
}
