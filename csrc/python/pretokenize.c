/* torchless._C.pretokenize(name, text): the byte-level BPE pre-tokenizer pieces, so the
 * tests can compare each hand-written matcher with the regex it implements. */
#include "common.h"

#include "tokenizer/pretokenize.h"

static PyObject *pretokenize(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    PyObject *text_obj;
    if (!PyArg_ParseTuple(args, "sU:pretokenize", &name, &text_obj)) {
        return NULL;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(text_obj, &len);
    if (text == NULL) {
        return NULL;
    }
    const tl_pretokenizer *p;
    tl_status st = tl_pretokenizer_lookup(name, &p);
    if (st != TL_OK) {
        return tlpy_raise(st);
    }
    tl_pretokens pt = {0};
    Py_BEGIN_ALLOW_THREADS
    st = tl_pretokenize(p, text, (size_t)len, &pt);
    Py_END_ALLOW_THREADS
    if (st != TL_OK) {
        tl_pretokens_free(&pt);
        return tlpy_raise(st);
    }
    PyObject *list = PyList_New((Py_ssize_t)pt.n);
    if (list == NULL) {
        goto error;
    }
    for (size_t i = 0, start = 0; i < pt.n; i++) {
        PyObject *piece = PyUnicode_DecodeUTF8(pt.text + start, (Py_ssize_t)(pt.end[i] - start), "strict");
        if (piece == NULL) {
            goto error;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, piece);
        start = pt.end[i];
    }
    tl_pretokens_free(&pt);
    return list;

error:
    Py_XDECREF(list);
    tl_pretokens_free(&pt);
    return NULL;
}

static PyMethodDef pretokenize_functions[] = {
    {"pretokenize", pretokenize, METH_VARARGS,
     "pretokenize(name: str, text: str) -> list[str]\n--\n\n"
     "The pieces llama.cpp's byte-level BPE pre-tokenizer `name` (tokenizer.ggml.pre)\n"
     "cuts text into, before BPE merges each one. Raises ValueError for an unknown name."},
    {NULL, NULL, 0, NULL},
};

int tlpy_pretokenize_init(PyObject *module) {
    return PyModule_AddFunctions(module, pretokenize_functions);
}
