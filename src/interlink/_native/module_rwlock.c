/* module_rwlock.c - the CPython glue of the reader-writer lock: RWLockCore.
 *
 * The compiled half of interlink.RWLock (rwlockword.c).  Waits follow the
 * project pattern (module_sync.c): a try with the GIL held, then a loop that
 * releases the GIL only around one wait slice (<= RW_SLICE_NS); back under
 * the GIL: PyErr_CheckSignals() on EINTR or an elapsed slice, Closed if the
 * handle was closed meanwhile, and the dead-holder repairs
 * (il_lock_check_owner for the write side, il_rw_recover_readers for the
 * read holds of dead processes).
 *
 * Segment layout: page 0 is the interlink header (seg.h), the il_rw follows
 * at IL_SEG_HEADER_SIZE.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "glue.h"
#include "il_common.h"
#include "lockword.h"
#include "proc.h"
#include "rwlockword.h"
#include "seg.h"

#define RW_SLICE_NS (20 * 1000 * 1000LL)
#define RW_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + ((sizeof(il_rw) + 4095u) & ~(size_t)4095u))

typedef struct {
    PyObject_HEAD
    Py_buffer buf;
    int has_buf;
    il_seg_header *hdr;
    il_rw *rw;
    uint64_t ident;
    uint64_t fork_gen;
    uint32_t slot;
    int attached;
    int closed;
    int owner_died;
    int waiters;
    module_state *st;
    PyObject *weakreflist;
    PyObject *dict;
} RWObject;

static _Thread_local uint32_t rw_tl_tid;
static _Thread_local uint64_t rw_tl_gen;

static uint32_t rw_self_tid(void)
{
    uint64_t gen = il_fork_generation();
    if (rw_tl_tid == 0 || rw_tl_gen != gen) {
        rw_tl_tid = (uint32_t)syscall(SYS_gettid);
        rw_tl_gen = gen;
    }
    return rw_tl_tid;
}

static void rw_unbind(RWObject *self)
{
    self->has_buf = 0;
    self->hdr = NULL;
    self->rw = NULL;
    PyBuffer_Release(&self->buf);
}

static void rw_maybe_release_buffer(RWObject *self)
{
    if (self->has_buf && self->closed && self->waiters == 0)
        rw_unbind(self);
}

static int rw_closed_meanwhile(RWObject *self)
{
    if (!self->closed)
        return 0;
    PyErr_SetString(self->st->Closed, "this handle was closed while in use");
    rw_maybe_release_buffer(self);
    return 1;
}

static PyObject *rw_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    RWObject *self = (RWObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->st = state_of_type(type);
    if (self->st == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->closed = 1;
    return (PyObject *)self;
}

/* Drop the read holds of dead slots, then free dead slots that hold none
 * (a slot still charged with holds is never freed: a new process claiming it
 * would inherit them). */
static void rw_reclaim_slots(RWObject *self)
{
    il_rw_recover_readers(self->rw, self->hdr, self->slot);
    uint32_t n = self->hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : self->hdr->nslots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&self->hdr->slots[i].ident, memory_order_acquire);
        if (w == 0 || il_rw_held(self->rw, i) != 0 || il_ident_alive(il_ident_bare(w)))
            continue;
        atomic_compare_exchange_strong_explicit(&self->hdr->slots[i].ident, &w, 0,
                                                memory_order_acq_rel, memory_order_relaxed);
    }
}

static int rw_attach(RWObject *self)
{
    self->ident = il_ident_self();
    if (self->ident == 0) {
        PyErr_SetString(PyExc_OSError, "cannot read this process's start time from /proc");
        return -1;
    }
    self->fork_gen = il_fork_generation();
    int rc = il_seg_attach(self->hdr, self->ident, 0, &self->slot);
    if (rc == IL_NOSLOT) {
        rw_reclaim_slots(self);
        rc = il_seg_attach(self->hdr, self->ident, 0, &self->slot);
    }
    if (rc != IL_OK) {
        PyErr_SetString(self->st->Busy, "the attach table is full of live users");
        return -1;
    }
    self->attached = 1;
    return 0;
}

static int rw_check(RWObject *self)
{
    if (self->closed || !self->has_buf) {
        PyErr_SetString(self->st->Closed, "this handle is closed");
        return -1;
    }
    if (self->fork_gen != il_fork_generation()) {
        self->attached = 0;
        self->owner_died = 0;
        if (rw_attach(self) < 0)
            return -1;
    }
    return 0;
}

/* Detach (this process only).  Read holds still charged to the slot are
 * given back first: they would otherwise stay with a free slot. */
static void rw_detach(RWObject *self)
{
    if (!self->has_buf || !self->attached || self->fork_gen != il_fork_generation())
        return;
    while (il_rw_read_release(self->rw, self->slot) == IL_OK) {
    }
    il_seg_detach(self->hdr, self->slot, self->ident);
    self->attached = 0;
}

static PyObject *rw_status_error(RWObject *self, int rc)
{
    if (rc == IL_CORRUPT || rc == -IL_CORRUPT)
        PyErr_SetString(self->st->Corrupt,
                        "the rwlock's shared memory failed a consistency check");
    else
        PyErr_Format(self->st->InterlinkError, "rwlock: internal status %d", rc);
    return NULL;
}

/* Repairs run between slices (GIL released: /proc reads). */
static int rw_repair(RWObject *self)
{
    int r;
    self->waiters++;
    Py_BEGIN_ALLOW_THREADS
    r = il_lock_check_owner(&self->rw->wlock, NULL);
    il_rw_recover_readers(self->rw, self->hdr, self->slot);
    Py_END_ALLOW_THREADS
    self->waiters--;
    if (rw_closed_meanwhile(self))
        return -1;
    if (r == -IL_CORRUPT) {
        rw_status_error(self, r);
        return -1;
    }
    return r;
}

/* ---------------------------------------------------------------- readers */

static PyObject *rw_acquire_read_ns(RWObject *self, int64_t timeout_ns)
{
    if (rw_check(self) < 0)
        return NULL;
    il_rw *rw = self->rw;
    int rc = il_rw_read_try(rw, self->slot);
    if (rc == IL_OK)
        Py_RETURN_TRUE;
    if (rc != IL_BUSY)
        return rw_status_error(self, rc);
    if (timeout_ns == 0) {
        int r = rw_repair(self);
        if (r < 0)
            return NULL;
        return PyBool_FromLong(il_rw_read_try(rw, self->slot) == IL_OK);
    }
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    atomic_fetch_add_explicit(&rw->rwaiting, 1, memory_order_relaxed);
    PyObject *result = NULL;
    for (;;) {
        int64_t now = il_now_ns();
        if (now >= deadline) {
            result = Py_False;
            break;
        }
        int64_t slice = deadline - now < RW_SLICE_NS ? deadline - now : RW_SLICE_NS;
        self->waiters++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_rw_read_wait_slice(rw, self->slot, slice);
        Py_END_ALLOW_THREADS
        self->waiters--;
        if (rc == IL_OK) {
            if (self->closed) { /* acquired on a handle closed meanwhile: undo */
                il_rw_read_release(rw, self->slot);
                rw_closed_meanwhile(self);
                break;
            }
            result = Py_True;
            break;
        }
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0)
            break;
        if (rw_closed_meanwhile(self))
            break;
        if (rc != IL_BUSY && rc != IL_TIMEOUT && rc != IL_EINTR) {
            rw_status_error(self, rc);
            break;
        }
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= RW_SLICE_NS) {
            if (rw_repair(self) < 0)
                break;
            last_check = now;
        }
    }
    if (self->has_buf)
        atomic_fetch_sub_explicit(&rw->rwaiting, 1, memory_order_relaxed);
    rw_maybe_release_buffer(self);
    if (result == NULL)
        return NULL;
    return Py_NewRef(result);
}

PyDoc_STRVAR(rw_acquire_read_doc,
             "acquire_read($self, /, blocking=True, timeout=-1)\n--\n\n"
             "Take a read side, waiting at most `timeout` seconds (-1 or None: no limit); "
             "True if taken.  New readers wait while a writer holds or waits.");

static PyObject *rw_acquire_read(RWObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    int64_t t;
    if (il_parse_acquire("acquire_read", args, nargs, kwnames, &t) < 0)
        return NULL;
    return rw_acquire_read_ns(self, t);
}

PyDoc_STRVAR(rw_release_read_doc,
             "release_read($self, /)\n--\n\n"
             "Give a read side back; RuntimeError if this process holds none.");

static PyObject *rw_release_read(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    if (il_rw_read_release(self->rw, self->slot) != IL_OK) {
        PyErr_SetString(PyExc_RuntimeError, "release_read of an un-acquired read lock");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- writers */

/* Take wlock (the writers' FIFO queue).  IL_OK / IL_OWNERDIED / IL_TIMEOUT,
 * or -1 with an exception. */
static int rw_take_wlock(RWObject *self, uint32_t tid, int64_t deadline)
{
    il_lock *l = &self->rw->wlock;
    int rc = il_lock_try(l, self->ident, tid, 0);
    if (rc != IL_BUSY)
        return rc;
    if (deadline <= il_now_ns()) {
        if (rw_repair(self) < 0)
            return -1;
        rc = il_lock_try(l, self->ident, tid, 0);
        return rc == IL_BUSY ? IL_TIMEOUT : rc;
    }
    il_lock_waiter w;
    il_lock_wait_begin(&w, l, self->ident, tid, 0);
    int64_t last_check = il_now_ns();
    for (;;) {
        rc = il_lock_wait_poll(&w);
        if (rc != IL_BUSY)
            break;
        int64_t now = il_now_ns();
        if (now >= deadline) {
            rc = IL_TIMEOUT;
            break;
        }
        int64_t slice = deadline - now < RW_SLICE_NS ? deadline - now : RW_SLICE_NS;
        self->waiters++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_lock_wait_slice(&w, slice);
        Py_END_ALLOW_THREADS
        self->waiters--;
        if (rc == IL_OK || rc == IL_OWNERDIED)
            return rc;
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            rc = -1;
            break;
        }
        if (rw_closed_meanwhile(self)) {
            rc = -1;
            break;
        }
        if (rc == IL_INVALID || rc == IL_CORRUPT) {
            rw_status_error(self, rc);
            rc = -1;
            break;
        }
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= RW_SLICE_NS) {
            int r;
            self->waiters++;
            Py_BEGIN_ALLOW_THREADS
            r = il_lock_check_owner(l, &w);
            Py_END_ALLOW_THREADS
            self->waiters--;
            if (rw_closed_meanwhile(self)) {
                rc = -1;
                break;
            }
            if (r == -IL_CORRUPT) {
                rw_status_error(self, r);
                rc = -1;
                break;
            }
            last_check = now;
        }
    }
    /* Not acquired: leave the queue, and let readers we blocked in. */
    if (self->has_buf) {
        il_lock_wait_cancel(&w);
        il_rw_wake_readers(self->rw);
    }
    return rc;
}

/* Holding wlock: wait for the readers to drain.  IL_OK, IL_TIMEOUT, or -1. */
static int rw_drain(RWObject *self, int64_t deadline)
{
    il_rw *rw = self->rw;
    if (il_rw_readers_gone(rw))
        return IL_OK;
    int64_t last_check = il_now_ns();
    for (;;) {
        int64_t now = il_now_ns();
        if (now >= deadline) {
            /* One last look for dead readers before giving up. */
            if (rw_repair(self) < 0)
                return -1;
            return il_rw_readers_gone(rw) ? IL_OK : IL_TIMEOUT;
        }
        int64_t slice = deadline - now < RW_SLICE_NS ? deadline - now : RW_SLICE_NS;
        int rc;
        self->waiters++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_rw_write_drain_slice(rw, slice);
        Py_END_ALLOW_THREADS
        self->waiters--;
        if (rc == IL_OK)
            return IL_OK;
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0)
            return -1;
        if (rw_closed_meanwhile(self))
            return -1;
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= RW_SLICE_NS) {
            if (rw_repair(self) < 0)
                return -1;
            last_check = now;
        }
    }
}

static PyObject *rw_acquire_write_ns(RWObject *self, int64_t timeout_ns)
{
    if (rw_check(self) < 0)
        return NULL;
    uint32_t tid = rw_self_tid();
    int64_t deadline = timeout_ns == 0 ? 0 : deadline_for(timeout_ns);
    int rc = rw_take_wlock(self, tid, deadline);
    if (rc < 0)
        return NULL;
    if (rc == IL_TIMEOUT)
        Py_RETURN_FALSE;
    if (rc != IL_OK && rc != IL_OWNERDIED)
        return rw_status_error(self, rc);
    int died = rc == IL_OWNERDIED;
    int drc = rw_drain(self, deadline);
    if (drc != IL_OK) {
        /* Give the write side back (the owner-died news with it). */
        if (self->has_buf)
            il_rw_write_release(self->rw, self->ident, tid);
        rw_maybe_release_buffer(self);
        if (drc < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    atomic_fetch_add_explicit(&self->rw->wacq, 1, memory_order_relaxed);
    self->owner_died = died;
    if (died) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_owner_died_hook", NULL);
        if (r == NULL) {
            il_rw_write_release(self->rw, self->ident, tid);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(rw_acquire_write_doc,
             "acquire_write($self, /, blocking=True, timeout=-1)\n--\n\n"
             "Take the write side, waiting at most `timeout` seconds (-1 or None: no limit); "
             "True if taken.  When the previous writer died holding it, an OwnerDied warning "
             "is issued and `owner_died` is True.");

static PyObject *rw_acquire_write(RWObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    int64_t t;
    if (il_parse_acquire("acquire_write", args, nargs, kwnames, &t) < 0)
        return NULL;
    return rw_acquire_write_ns(self, t);
}

PyDoc_STRVAR(rw_release_write_doc,
             "release_write($self, /)\n--\n\n"
             "Give the write side back; RuntimeError unless the calling thread holds it.");

static PyObject *rw_release_write(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    if (il_rw_write_release(self->rw, self->ident, rw_self_tid()) != IL_OK) {
        PyErr_SetString(PyExc_RuntimeError, "release_write of an un-acquired write lock");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- misc */

static PyObject *rw_bind(RWObject *self, PyObject *buffer)
{
    if (self->has_buf) {
        PyErr_SetString(PyExc_RuntimeError, "handle already bound");
        return NULL;
    }
    if (PyObject_GetBuffer(buffer, &self->buf, PyBUF_WRITABLE) < 0)
        return NULL;
    self->has_buf = 1;
    if ((size_t)self->buf.len < RW_SEGMENT_SIZE) {
        rw_unbind(self);
        PyErr_SetString(self->st->Corrupt, "the segment is too small for its kind");
        return NULL;
    }
    self->hdr = (il_seg_header *)self->buf.buf;
    self->rw = (il_rw *)((char *)self->buf.buf + IL_SEG_HEADER_SIZE);
    if (il_rw_validate(self->rw) != IL_OK) {
        rw_unbind(self);
        PyErr_SetString(self->st->Corrupt, "the rwlock's shared memory is not a formatted rwlock");
        return NULL;
    }
    if (rw_attach(self) < 0) {
        rw_unbind(self);
        return NULL;
    }
    self->closed = 0;
    Py_RETURN_NONE;
}

static PyObject *rw_close(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->closed) {
        rw_detach(self);
        self->closed = 1;
    }
    rw_maybe_release_buffer(self);
    Py_RETURN_NONE;
}

static PyObject *rw_reclaim(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    self->waiters++;
    Py_BEGIN_ALLOW_THREADS
    rw_reclaim_slots(self);
    Py_END_ALLOW_THREADS
    self->waiters--;
    rw_maybe_release_buffer(self);
    Py_RETURN_NONE;
}

static PyObject *rw_recovered(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    self->owner_died = 0;
    Py_RETURN_NONE;
}

static PyObject *rw_stats(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    il_rw *rw = self->rw;
    uint64_t hid = 0;
    uint32_t htid = 0, depth = 0;
    if (!il_lock_holder(&rw->wlock, &hid, &htid, &depth)) {
        hid = 0;
        htid = 0;
    }
    il_lock_stats ls;
    il_lock_read_stats(&rw->wlock, &ls);
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:K,s:K,s:K}", "writer_pid",
        hid ? (unsigned)il_ident_pid(hid) : 0u, "writer_tid", (unsigned)htid, "readers",
        il_rw_readers(rw), "held", il_rw_held(rw, self->slot), "waiting_readers",
        atomic_load_explicit(&rw->rwaiting, memory_order_relaxed), "waiting_writers",
        il_lock_waiters(&rw->wlock), "read_acquisitions",
        (unsigned long long)atomic_load_explicit(&rw->racq, memory_order_relaxed),
        "write_acquisitions",
        (unsigned long long)atomic_load_explicit(&rw->wacq, memory_order_relaxed),
        "owner_died", (unsigned long long)ls.owner_died, "readers_recovered",
        (unsigned long long)atomic_load_explicit(&rw->rrecovered, memory_order_relaxed));
}

static PyObject *rw_get_closed(RWObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *rw_get_owner_died(RWObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->owner_died);
}

static int rw_traverse(RWObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    return 0;
}

static int rw_clear(RWObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void rw_dealloc(RWObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (!self->closed) {
        rw_detach(self);
        self->closed = 1;
    }
    if (self->has_buf)
        rw_unbind(self);
    Py_CLEAR(self->dict);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef rw_methods[] = {
    {"_bind", (PyCFunction)rw_bind, METH_O, "Attach to a formatted rwlock segment."},
    {"_close", (PyCFunction)rw_close, METH_NOARGS, "Detach this handle (idempotent)."},
    {"_reclaim", (PyCFunction)rw_reclaim, METH_NOARGS,
     "Drop dead processes' read holds and free their attach slots."},
    {"_stats", (PyCFunction)rw_stats, METH_NOARGS, "A dict of state and counters."},
    {"recovered", (PyCFunction)rw_recovered, METH_NOARGS,
     "recovered($self, /)\n--\n\nClear owner_died (the protected data was repaired)."},
    {"acquire_read", (PyCFunction)(void (*)(void))rw_acquire_read,
     METH_FASTCALL | METH_KEYWORDS, rw_acquire_read_doc},
    {"release_read", (PyCFunction)rw_release_read, METH_NOARGS, rw_release_read_doc},
    {"acquire_write", (PyCFunction)(void (*)(void))rw_acquire_write,
     METH_FASTCALL | METH_KEYWORDS, rw_acquire_write_doc},
    {"release_write", (PyCFunction)rw_release_write, METH_NOARGS, rw_release_write_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rw_getset[] = {
    {"closed", (getter)rw_get_closed, NULL, "Whether this handle is closed.", NULL},
    {"owner_died", (getter)rw_get_owner_died, NULL,
     "True after a write acquisition that found the previous writer dead, until the next "
     "clean write acquisition or recovered().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef rw_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RWObject, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(RWObject, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot rw_slots[] = {
    {Py_tp_doc, "The native half of interlink.RWLock."},
    {Py_tp_new, rw_new},
    {Py_tp_dealloc, rw_dealloc},
    {Py_tp_traverse, rw_traverse},
    {Py_tp_clear, rw_clear},
    {Py_tp_methods, rw_methods},
    {Py_tp_getset, rw_getset},
    {Py_tp_members, rw_members},
    {0, NULL},
};

static PyType_Spec rw_spec = {
    "interlink._native.RWLockCore",
    sizeof(RWObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    rw_slots,
};

static PyObject *mod_rwlock_format(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_WRITABLE) < 0)
        return NULL;
    if ((size_t)v.len < RW_SEGMENT_SIZE) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "buffer smaller than the segment");
        return NULL;
    }
    il_rw_init((il_rw *)((char *)v.buf + IL_SEG_HEADER_SIZE));
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyMethodDef rw_module_methods[] = {
    {"rwlock_format", mod_rwlock_format, METH_O,
     "rwlock_format($module, buffer, /)\n--\n\nFormat the area of a new rwlock segment."},
    {NULL, NULL, 0, NULL},
};

int il_rwlock_exec(PyObject *m, module_state *st)
{
    (void)st;
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(m, &rw_spec, NULL);
    if (tp == NULL)
        return -1;
    int rc = PyModule_AddType(m, tp);
    Py_DECREF(tp);
    if (rc < 0)
        return -1;
    if (PyModule_AddFunctions(m, rw_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "RWLOCK_SEGMENT_SIZE", (long)RW_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_RWLOCK", IL_KIND_RWLOCK) < 0)
        return -1;
    return 0;
}
