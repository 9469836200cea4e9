/* glue.h - what the CPython glue files (module.c, module_sync.c) share.
 *
 * The module state struct (exception types and the native types), the lookup
 * of that state from a type, and the small argument helpers every blocking
 * call uses.  Only files that include Python.h include this header; the plain
 * C core (ring, lockword, seg, proc, futex) never does.
 */
#ifndef IL_GLUE_H
#define IL_GLUE_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

#include <stdint.h>

#include "il_common.h"

/* ======================================================================= */
/* Module state                                                            */
/* ======================================================================= */

typedef struct {
    PyObject *InterlinkError;
    PyObject *Timeout;
    PyObject *Empty;
    PyObject *Full;
    PyObject *Closed;
    PyObject *Corrupt;
    PyObject *MessageTooLarge;
    PyObject *Busy;
    PyTypeObject *ChannelCoreType;
    PyTypeObject *MessageType;
    PyTypeObject *LoanType;
    PyTypeObject *LockCoreType;      /* module_sync.c */
    PyTypeObject *SemaphoreCoreType; /* module_sync.c */
} module_state;

/* The module definition (module.c). */
extern struct PyModuleDef il_native_module;

static inline module_state *state_of_type(PyTypeObject *tp)
{
    PyObject *m = PyType_GetModuleByDef(tp, &il_native_module);
    return m ? (module_state *)PyModule_GetState(m) : NULL;
}

/* ======================================================================= */
/* Small helpers                                                           */
/* ======================================================================= */

/* timeout=None -> -1 (forever); a number >= 0 -> nanoseconds. */
static inline int parse_timeout(PyObject *obj, int64_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!(t >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -1;
    }
    if (t > 1e9)
        t = 1e9;
    *out = (int64_t)(t * 1e9);
    return 0;
}

static inline int64_t deadline_for(int64_t timeout_ns)
{
    return timeout_ns < 0 ? INT64_MAX : il_now_ns() + timeout_ns;
}

/* Pick positional-or-keyword arguments for METH_FASTCALL | METH_KEYWORDS.
 * names: NULL-terminated; out[i] receives a borrowed ref or stays NULL. */
static inline int fast_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, const char *const *names,
                            Py_ssize_t required, PyObject **out)
{
    Py_ssize_t n = 0;
    while (names[n])
        n++;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, n,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            Py_ssize_t i;
            for (i = 0; i < n; i++)
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                    break;
            if (i == n) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* Exceptions (module_queue.c) */

/* The current exception, normalized, with its traceback attached (owned). */
PyObject *il_fetch_exc(void);

/* Raise `exc` (owned; NULL: an exception is already set) as `raise exc from
 * cause` does (cause owned). */
void il_raise_from(PyObject *exc, PyObject *cause);

/* ======================================================================= */
/* Registration of the types defined in other glue files                   */
/* ======================================================================= */

/* module_sync.c: create LockCore and SemaphoreCore, store them in the state,
 * add them and their constants to the module.  0, or -1 with an exception. */
int il_sync_exec(PyObject *m, module_state *st);

/* module_events.c: EventCore, ConditionCore, BarrierCore and their constants. */
int il_events_exec(PyObject *m, module_state *st);

/* module_rwlock.c: RWLockCore, rwlock_format, RWLOCK_SEGMENT_SIZE, KIND_RWLOCK. */
int il_rwlock_exec(PyObject *m, module_state *st);

/* acquire(blocking=True, timeout=-1) with multiprocessing's spelling
 * acquire(block=True, timeout=None) accepted too.  timeout -1 or None: no
 * limit.  *timeout_ns: -1 forever, 0 a pure try, > 0 a bound. */
static inline int il_parse_acquire(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames, int64_t *timeout_ns)
{
    if (nargs == 0 && kwnames == NULL) {
        *timeout_ns = -1; /* acquire(): the common case, no parsing */
        return 0;
    }
    static const char *const names[] = {"blocking", "timeout", "block", NULL};
    PyObject *a[3];
    if (fast_args(fname, args, nargs, kwnames, names, 0, a) < 0)
        return -1;
    if (a[0] && a[2]) {
        PyErr_Format(PyExc_TypeError, "%s() got both 'blocking' and 'block'", fname);
        return -1;
    }
    PyObject *blk = a[0] ? a[0] : a[2];
    int blocking = 1;
    if (blk) {
        blocking = PyObject_IsTrue(blk);
        if (blocking < 0)
            return -1;
    }
    int64_t t = -1;
    PyObject *to = a[1];
    if (to != NULL && to != Py_None) {
        double d = PyFloat_AsDouble(to);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (d != -1.0) {
            if (!blocking) {
                PyErr_SetString(PyExc_ValueError,
                                "can't specify a timeout for a non-blocking call");
                return -1;
            }
            if (parse_timeout(to, &t) < 0)
                return -1;
        }
    }
    *timeout_ns = blocking ? t : 0;
    return 0;
}

#endif
