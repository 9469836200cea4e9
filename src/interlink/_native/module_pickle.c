/* module_pickle.c - the object fast path's pickling, shared by QueueCore
 * (module_queue.c) and TopicCore (module_topic.c): glue.h, il_pickler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "glue.h"

int il_pickler_set(il_pickler *p, PyObject *codec, PyObject *enc_error, PyObject *dumps,
                   Py_ssize_t limit, PyObject *watch)
{
    PyObject *name = PyUnicode_InternFromString("_watch");
    PyObject *proto = PyLong_FromLong(5);
    PyObject *w = watch != NULL ? Py_NewRef(watch) : PyLong_FromLong(0);
    if (name == NULL || proto == NULL || w == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(proto);
        Py_XDECREF(w);
        return -1;
    }
    il_pickler_clear(p);
    p->codec = Py_NewRef(codec);
    p->enc_error = Py_NewRef(enc_error);
    p->dumps = Py_XNewRef(dumps);
    p->watch_name = name;
    p->watch = w;
    p->proto = proto;
    p->limit = limit;
    return 0;
}

int il_pickler_traverse(il_pickler *p, visitproc visit, void *arg)
{
    Py_VISIT(p->codec);
    Py_VISIT(p->dumps);
    Py_VISIT(p->enc_error);
    Py_VISIT(p->watch_name);
    Py_VISIT(p->watch);
    Py_VISIT(p->proto);
    return 0;
}

void il_pickler_clear(il_pickler *p)
{
    Py_CLEAR(p->codec);
    Py_CLEAR(p->dumps);
    Py_CLEAR(p->enc_error);
    Py_CLEAR(p->watch_name);
    Py_CLEAR(p->watch);
    Py_CLEAR(p->proto);
}

int il_pickler_watching(il_pickler *p)
{
    PyObject *w = PyObject_GetAttr(p->codec, p->watch_name);
    if (w == NULL)
        return -1;
    int watching = PyObject_IsTrue(w);
    Py_DECREF(w);
    return watching;
}

int il_pickler_dumps(il_pickler *p, PyObject *obj, PyObject **data)
{
    PyObject *pargs[2] = {obj, p->proto};
    PyObject *d = PyObject_Vectorcall(p->dumps, pargs, 2, NULL);
    if (d == NULL) {
        /* MemoryError and non-Exception exceptions propagate as they are */
        if (!PyErr_ExceptionMatches(PyExc_MemoryError) &&
            PyErr_ExceptionMatches(PyExc_Exception)) {
            PyObject *cause = il_fetch_exc();
            il_raise_from(PyObject_CallFunctionObjArgs(p->enc_error, obj, cause, NULL), cause);
        }
        return -1;
    }
    if (!PyBytes_Check(d)) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_TypeError, "the fast path's dumps did not return bytes");
        return -1;
    }
    if (PyBytes_GET_SIZE(d) >= p->limit) {
        /* big enough to hold an out-of-band buffer: the codec pickles it
         * again watching for them */
        Py_DECREF(d);
        return PyObject_SetAttr(p->codec, p->watch_name, p->watch) < 0 ? -1 : 0;
    }
    *data = d;
    return 1;
}

void il_corrupt_from_current(module_state *st)
{
    PyObject *cause = il_fetch_exc();
    PyObject *msg = PyUnicode_FromFormat("pickle payload could not be decoded: %S", cause);
    il_raise_from(msg ? PyObject_CallOneArg(st->Corrupt, msg) : NULL, cause);
    Py_XDECREF(msg);
}
