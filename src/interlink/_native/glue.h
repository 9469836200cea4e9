/* glue.h - what the CPython glue files (module*.c) share.
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
#include <structmember.h>

#include <stdint.h>

#include "il_common.h"
#include "seg.h"

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
/* The segment handle (module_handle.c)                                    */
/* ======================================================================= */

/* What every handle on one shared segment shares (LockCore, SemaphoreCore,
 * EventCore, ConditionCore, BarrierCore, RWLockCore, QueueCore, TopicCore):
 * the buffer that maps the segment, the slot of this process in the
 * segment's attach table, the fork generation that slot belongs to, and the
 * counts of users that keep the mapping alive after _close.  A kind's object
 * struct embeds it as its first member (`base`), so a pointer to the object
 * is a pointer to its il_handle.  Where the kinds differ, il_handle_ops says
 * how. */
typedef struct il_handle il_handle;

typedef struct {
    const char *closed_msg;           /* Closed: "this handle is closed" */
    const char *closed_meanwhile_msg; /* Closed after a GIL-free section */
    uint64_t (*fork_gen)(void);       /* the fork generation the handle follows */
    /* Attach table full: free dead processes' slots (NULL: il_seg_reclaim_plain). */
    void (*reclaim)(il_handle *h);
    /* After a successful attach (NULL: nothing). */
    void (*attached)(il_handle *h);
    /* A forked child, before it re-attaches as a new user (NULL: nothing). */
    void (*forked)(il_handle *h);
    /* Before detaching (mapping present, generation current): give back what
     * this process holds; nonzero keeps the slot in the table (NULL: 0). */
    int (*release_slot)(il_handle *h);
    /* The mapping is gone: forget pointers into it (NULL: nothing). */
    void (*unbound)(il_handle *h);
    /* Dealloc, after the mapping and the dict are gone (NULL: nothing). */
    void (*free_extra)(il_handle *h);
} il_handle_ops;

struct il_handle {
    PyObject_HEAD
    Py_buffer buf;
    int has_buf;
    il_seg_header *hdr;   /* the segment's header (buf.buf); NULL when unbound */
    uint64_t ident;
    uint64_t fork_gen;
    uint32_t slot;
    int attached;
    int closed;
    int busy;             /* threads inside a GIL-free section on this handle */
    Py_ssize_t live;      /* objects (messages, subscriptions) viewing the mapping */
    const il_handle_ops *ops;
    module_state *st;
    PyObject *weakreflist;
    PyObject *dict;
};

/* __weaklistoffset__ and __dictoffset__ of every handle type. */
extern PyMemberDef il_handle_members[];

/* tp_alloc a handle of `type` (closed until bound), its state and ops set. */
PyObject *il_handle_new(PyTypeObject *type, const il_handle_ops *ops);

/* Take a slot in the attach table (reclaiming dead ones once when full):
 * 0, or -1 with OSError / Busy. */
int il_handle_attach(il_handle *h);

/* A forked child: attach again as a new user.  0, or -1 with an exception. */
int il_handle_reattach(il_handle *h);

/* Refuse a closed handle (Closed); re-attach one inherited through fork()
 * (`gen`: the current generation).  0, or -1 with an exception. */
static inline int il_handle_check(il_handle *h, uint64_t gen)
{
    if (__builtin_expect(h->closed || !h->has_buf, 0)) {
        PyErr_SetString(h->st->Closed, h->ops->closed_msg);
        return -1;
    }
    if (__builtin_expect(h->fork_gen != gen, 0))
        return il_handle_reattach(h);
    return 0;
}

/* Map `buffer` (writable, at least `need` bytes, else Corrupt "the segment is
 * too small for its kind"; need 0: no check).  RuntimeError if already
 * bound.  0, or -1 with an exception. */
int il_handle_get_buffer(il_handle *h, PyObject *buffer, size_t need);

/* Drop the mapping (the buffer is bound). */
void il_handle_unbind(il_handle *h);

/* The mapping validated: attach and open the handle; on failure unbind.
 * 0, or -1 with an exception. */
int il_handle_open(il_handle *h);

/* Bind a segment whose kind area follows the header page: map `buffer`,
 * validate the area with attach(area, mem, len) (IL_OK; IL_INFLIGHT: "the
 * <kind> segment is not formatted"; anything else: "... failed its
 * consistency check", both Corrupt), then open the handle.  0, or -1 with an
 * exception (the buffer released). */
int il_handle_bind_area(il_handle *h, PyObject *buffer, const char *kind,
                        int (*attach)(void *area, void *mem, uint64_t len), void *area);

/* Unbind a closed handle once no thread and no object uses the mapping. */
void il_handle_maybe_release(il_handle *h);

/* After a GIL-free section: 1 with Closed set (and the mapping released if
 * unused) when another thread closed the handle meanwhile, else 0. */
int il_handle_closed_meanwhile(il_handle *h);

/* Leave the attach table (this process only, never a forked copy). */
void il_handle_detach(il_handle *h);

/* _close: detach, mark closed, release the mapping once unused.  Idempotent. */
PyObject *il_handle_close(PyObject *self, PyObject *unused);

/* The `closed` getter. */
PyObject *il_handle_get_closed(PyObject *self, void *closure);

int il_handle_traverse(PyObject *self, visitproc visit, void *arg);
int il_handle_clear(PyObject *self);
void il_handle_dealloc(PyObject *self);

/* ======================================================================= */
/* The object fast path's pickling (module_pickle.c)                       */
/* ======================================================================= */

/* What QueueCore and TopicCore keep to pickle a small object themselves, as
 * the PickleCodec would (their _fast_setup fills it in). */
typedef struct {
    PyObject *codec;      /* the codec (a PickleCodec's `_watch` hint) */
    PyObject *dumps;      /* pickle.dumps, or NULL: no fast pickling */
    PyObject *enc_error;  /* codec._encode_error(obj, exc) -> EncodeError */
    PyObject *watch_name; /* "_watch" */
    PyObject *watch;      /* stored in codec._watch after a big pickle */
    PyObject *proto;      /* the int 5 (pickle protocol) */
    Py_ssize_t limit;     /* pickles at least this long go through the codec */
} il_pickler;

/* Fill `p` in (owned references taken; dumps may be NULL, watch NULL: 0),
 * dropping what it held.  0, or -1 with an exception and `p` unchanged. */
int il_pickler_set(il_pickler *p, PyObject *codec, PyObject *enc_error, PyObject *dumps,
                   Py_ssize_t limit, PyObject *watch);

int il_pickler_traverse(il_pickler *p, visitproc visit, void *arg);
void il_pickler_clear(il_pickler *p);

/* Whether codec._watch is set (the codec must encode, watching for
 * out-of-band buffers): 1, 0, or -1 with an exception. */
int il_pickler_watching(il_pickler *p);

/* dumps(obj, 5): 1 and *data (owned) when shorter than the limit; 0 when
 * not (codec._watch then set, as PickleCodec.encode does); -1 with an
 * exception: a dumps failure becomes encode_error(obj, exc) raised from exc,
 * except MemoryError and non-Exception exceptions. */
int il_pickler_dumps(il_pickler *p, PyObject *obj, PyObject **data);

/* The current exception (a payload parser's) becomes Corrupt("pickle payload
 * could not be decoded: ..."), raised from it. */
void il_corrupt_from_current(module_state *st);

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
