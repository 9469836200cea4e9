/* module_events.c - the CPython glue of eventword.c: EventCore,
 * ConditionCore, BarrierCore (the compiled halves of interlink.Event,
 * Condition and Barrier; _sync.py adds naming, life cycle and pickling).
 *
 * Waits follow module_sync.c's pattern: the GIL is released only around one
 * futex wait slice (at most EV_SLICE_NS); back under the GIL, EINTR or an
 * elapsed slice runs PyErr_CheckSignals(), and a handle closed meanwhile
 * raises Closed.  Segment layout: page 0 is the header (seg.h), the word
 * follows at IL_SEG_HEADER_SIZE.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "eventword.h"
#include "glue.h"
#include "il_common.h"
#include "proc.h"
#include "seg.h"

#define EV_SLICE_NS (20 * 1000 * 1000LL)
#define EV_RECOVER_NS (1000 * 1000 * 1000LL) /* event waits: dead-sleeper scan period */

#define PAGE_ROUND(n) (((n) + 4095u) & ~(size_t)4095u)
#define EVENT_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + PAGE_ROUND(sizeof(il_event)))
#define COND_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + PAGE_ROUND(sizeof(il_cond)))
#define BARRIER_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + PAGE_ROUND(sizeof(il_barrier)))

typedef struct {
    il_handle base;
    void *area;
} EvObject;

static _Thread_local uint32_t ev_tl_tid;
static _Thread_local uint64_t ev_tl_gen;

static uint32_t ev_tid(void)
{
    uint64_t gen = il_fork_generation();
    if (ev_tl_tid == 0 || ev_tl_gen != gen) {
        ev_tl_tid = (uint32_t)syscall(SYS_gettid);
        ev_tl_gen = gen;
    }
    return ev_tl_tid;
}

/* Free the attach slots of dead processes.  An event's dead slots first give
 * their sleepers back (il_event_recover_sleepers), and a slot that still has
 * sleepers is never freed: a new process claiming it would make them look
 * alive for good.  The liveness check comes first: a dead process changes
 * nothing any more, so what is checked after it stays true. */
static void ev_reclaim_slots(il_handle *h)
{
    EvObject *self = (EvObject *)h;
    if (self->base.hdr->kind != IL_KIND_EVENT) {
        il_seg_reclaim_plain(self->base.hdr);
        return;
    }
    il_event *e = (il_event *)self->area;
    il_event_recover_sleepers(e, self->base.hdr);
    uint32_t n = self->base.hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : self->base.hdr->nslots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&self->base.hdr->slots[i].ident, memory_order_acquire);
        if (w == 0 || il_ident_alive(w) || il_event_slot_sleepers(e, i) != 0)
            continue;
        atomic_compare_exchange_strong_explicit(&self->base.hdr->slots[i].ident, &w, 0,
                                                memory_order_acq_rel, memory_order_relaxed);
    }
}

static void ev_unbound(il_handle *h) { ((EvObject *)h)->area = NULL; }

static const il_handle_ops ev_ops = {
    .closed_msg = "this handle is closed",
    .closed_meanwhile_msg = "this handle was closed while in use",
    .fork_gen = il_fork_generation,
    .reclaim = ev_reclaim_slots,
    .unbound = ev_unbound,
};

static PyObject *ev_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return il_handle_new(type, &ev_ops);
}

static int ev_check(EvObject *self) { return il_handle_check(&self->base, il_fork_generation()); }

typedef int (*validate_fn)(const void *);

static int ev_bind(EvObject *self, PyObject *buffer, size_t need, validate_fn validate)
{
    if (il_handle_get_buffer(&self->base, buffer, need) < 0)
        return -1;
    self->area = (char *)self->base.buf.buf + IL_SEG_HEADER_SIZE;
    if (validate(self->area) != IL_OK) {
        il_handle_unbind(&self->base);
        PyErr_SetString(self->base.st->Corrupt, "the segment's shared memory is not formatted");
        return -1;
    }
    return il_handle_open(&self->base);
}

static PyObject *ev_reclaim(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    ev_reclaim_slots(&self->base);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    il_handle_maybe_release(&self->base);
    Py_RETURN_NONE;
}

/* One timeout argument (None: no limit). */
static int one_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, int64_t *timeout_ns)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *a[1];
    if (fast_args(fname, args, nargs, kwnames, names, 0, a) < 0)
        return -1;
    if (a[0] != NULL && a[0] != Py_None) {
        double d = PyFloat_AsDouble(a[0]);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (d < 0) { /* threading treats a negative timeout as 0 */
            *timeout_ns = 0;
            return 0;
        }
    }
    return parse_timeout(a[0], timeout_ns);
}

static inline int64_t slice_for(int64_t deadline)
{
    int64_t left = deadline - il_now_ns();
    if (left < 0)
        left = 0;
    return left < EV_SLICE_NS ? left : EV_SLICE_NS;
}

/* ======================================================================= */
/* EventCore                                                               */
/* ======================================================================= */

#define EVT(self) ((il_event *)(self)->area)

static PyObject *event_bind(EvObject *self, PyObject *buffer)
{
    if (ev_bind(self, buffer, EVENT_SEGMENT_SIZE, (validate_fn)il_event_validate) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *event_is_set(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    return PyBool_FromLong(il_event_is_set(EVT(self)));
}

static PyObject *event_set(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    il_event_set(EVT(self));
    Py_RETURN_NONE;
}

static PyObject *event_clear(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    il_event_clear(EVT(self));
    Py_RETURN_NONE;
}

static PyObject *event_wait(EvObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    int64_t timeout_ns;
    if (one_timeout("wait", args, nargs, kwnames, &timeout_ns) < 0)
        return NULL;
    if (ev_check(self) < 0)
        return NULL;
    il_event *e = EVT(self);
    uint32_t snap = il_event_snapshot(e);
    if (snap & 1u)
        Py_RETURN_TRUE;
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    for (;;) {
        int64_t now = il_now_ns();
        if (now >= deadline)
            return PyBool_FromLong(il_event_signalled(e, snap));
        int64_t slice = slice_for(deadline);
        /* Now and then, take the sleepers of dead processes out of the count
         * (else every set() makes a wake syscall for them): /proc reads only
         * for slots that have sleepers. */
        int recover = now - last_check >= EV_RECOVER_NS;
        if (recover)
            last_check = now;
        int rc;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        if (recover)
            il_event_recover_sleepers(e, self->base.hdr);
        rc = il_event_wait_slice(e, self->base.slot, snap, slice);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (rc == IL_OK) {
            il_handle_maybe_release(&self->base);
            Py_RETURN_TRUE;
        }
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            il_handle_maybe_release(&self->base);
            return NULL;
        }
        if (il_handle_closed_meanwhile(&self->base))
            return NULL;
        if (rc == IL_INVALID) {
            PyErr_SetString(self->base.st->InterlinkError, "event: futex wait failed");
            return NULL;
        }
    }
}

static PyMethodDef event_methods[] = {
    {"_bind", (PyCFunction)event_bind, METH_O, "Attach to a formatted event segment."},
    {"_close", il_handle_close, METH_NOARGS, "Detach this handle.  Idempotent."},
    {"_reclaim", (PyCFunction)ev_reclaim, METH_NOARGS, "Free dead processes' attach slots."},
    {"is_set", (PyCFunction)event_is_set, METH_NOARGS, "Whether the flag is set."},
    {"set", (PyCFunction)event_set, METH_NOARGS, "Set the flag, waking every waiter."},
    {"clear", (PyCFunction)event_clear, METH_NOARGS, "Clear the flag."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, timeout=None)\n--\n\nBlock until the flag is set or `timeout` seconds "
     "pass; return the flag (True if set while waiting)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ev_getset[] = {
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot event_slots[] = {
    {Py_tp_doc, "The native half of interlink.Event."},
    {Py_tp_new, ev_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, event_methods},
    {Py_tp_getset, ev_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec event_spec = {
    "interlink._native.EventCore",
    sizeof(EvObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    event_slots,
};

/* ======================================================================= */
/* ConditionCore                                                           */
/* ======================================================================= */

#define CND(self) ((il_cond *)(self)->area)

static PyObject *cond_bind(EvObject *self, PyObject *buffer)
{
    if (ev_bind(self, buffer, COND_SEGMENT_SIZE, (validate_fn)il_cond_validate) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *cond_register(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    uint32_t entry;
    int rc = il_cond_register(CND(self), self->base.ident, ev_tid(), &entry);
    if (rc != IL_OK) {
        PyErr_Format(self->base.st->Busy, "more than %u threads wait on this condition",
                     (unsigned)IL_COND_ENTRIES);
        return NULL;
    }
    return PyLong_FromUnsignedLong(entry);
}

static int entry_arg(PyObject *obj, uint32_t *entry)
{
    unsigned long v = PyLong_AsUnsignedLong(obj);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v >= IL_COND_ENTRIES) {
        PyErr_SetString(PyExc_ValueError, "bad waiter entry");
        return -1;
    }
    *entry = (uint32_t)v;
    return 0;
}

static PyObject *cond_cancel(EvObject *self, PyObject *arg)
{
    uint32_t entry;
    if (entry_arg(arg, &entry) < 0)
        return NULL;
    if (self->base.closed || !self->base.has_buf)
        Py_RETURN_FALSE;
    return PyBool_FromLong(il_cond_leave(CND(self), entry, self->base.ident));
}

/* _wait(entry, timeout): sleep until notified or timeout; always frees the
 * entry.  True if notified. */
static PyObject *cond_wait(EvObject *self, PyObject *args)
{
    PyObject *eobj, *tobj;
    if (!PyArg_ParseTuple(args, "OO:_wait", &eobj, &tobj))
        return NULL;
    uint32_t entry;
    int64_t timeout_ns;
    if (entry_arg(eobj, &entry) < 0 || parse_timeout(tobj, &timeout_ns) < 0)
        return NULL;
    if (ev_check(self) < 0)
        return NULL;
    il_cond *c = CND(self);
    int64_t deadline = deadline_for(timeout_ns);
    for (;;) {
        if (il_now_ns() >= deadline)
            return PyBool_FromLong(il_cond_leave(c, entry, self->base.ident));
        int64_t slice = slice_for(deadline);
        int rc;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_cond_wait_slice(c, entry, self->base.ident, slice);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (rc == IL_OK) {
            int notified = il_cond_leave(c, entry, self->base.ident);
            il_handle_maybe_release(&self->base);
            return PyBool_FromLong(notified);
        }
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            il_cond_leave(c, entry, self->base.ident);
            il_handle_maybe_release(&self->base);
            return NULL;
        }
        if (self->base.closed) {
            il_cond_leave(c, entry, self->base.ident);
            il_handle_closed_meanwhile(&self->base);
            return NULL;
        }
        if (rc == IL_INVALID) {
            il_cond_leave(c, entry, self->base.ident);
            PyErr_SetString(self->base.st->InterlinkError,
                            "condition: this waiter's entry was taken from it");
            return NULL;
        }
    }
}

static PyObject *cond_notify(EvObject *self, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (ev_check(self) < 0)
        return NULL;
    uint32_t done;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    done = il_cond_notify(CND(self), n, self->base.ident);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if (il_handle_closed_meanwhile(&self->base))
        return NULL;
    return PyLong_FromUnsignedLong(done);
}

static PyObject *cond_waiters(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(il_cond_waiters(CND(self)));
}

static PyMethodDef cond_methods[] = {
    {"_bind", (PyCFunction)cond_bind, METH_O, "Attach to a formatted condition segment."},
    {"_close", il_handle_close, METH_NOARGS, "Detach this handle.  Idempotent."},
    {"_reclaim", (PyCFunction)ev_reclaim, METH_NOARGS, "Free dead processes' attach slots."},
    {"_register", (PyCFunction)cond_register, METH_NOARGS,
     "Register the calling thread as a waiter (lock held); returns its entry."},
    {"_cancel", (PyCFunction)cond_cancel, METH_O,
     "Free a registered entry without waiting; True if it had been notified."},
    {"_wait", (PyCFunction)cond_wait, METH_VARARGS,
     "_wait(entry, timeout): sleep until notified or timeout; True if notified."},
    {"_notify", (PyCFunction)cond_notify, METH_O,
     "_notify(n): notify up to n live waiters (n < 0: all); returns how many."},
    {"_waiters", (PyCFunction)cond_waiters, METH_NOARGS, "Threads waiting now."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cond_slots[] = {
    {Py_tp_doc, "The native half of interlink.Condition."},
    {Py_tp_new, ev_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, cond_methods},
    {Py_tp_getset, ev_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec cond_spec = {
    "interlink._native.ConditionCore",
    sizeof(EvObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    cond_slots,
};

/* ======================================================================= */
/* BarrierCore                                                             */
/* ======================================================================= */

#define BAR(self) ((il_barrier *)(self)->area)

static PyObject *broken_error(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return NULL;
    PyObject *exc = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    if (exc == NULL)
        return NULL;
    PyErr_SetNone(exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *bar_bind(EvObject *self, PyObject *buffer)
{
    if (ev_bind(self, buffer, BARRIER_SEGMENT_SIZE, (validate_fn)il_barrier_validate) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The waiter named by a token (entry << 32 | generation) from _arrive. */
static int bar_token(EvObject *self, PyObject *tok, il_barrier_waiter *w)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(tok);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    uint32_t entry = (uint32_t)(v >> 32);
    if (entry >= IL_BARRIER_ENTRIES) {
        PyErr_SetString(PyExc_ValueError, "bad barrier token");
        return -1;
    }
    memset(w, 0, sizeof *w);
    w->b = BAR(self);
    w->ident = il_ident_bare(self->base.ident);
    w->entry = (int32_t)entry;
    w->gen = (uint32_t)v;
    return 0;
}

/* Sleep one slice on the barrier's sequence word; -1 with an exception. */
static int bar_nap(EvObject *self, il_barrier_waiter *w, uint32_t snap, int64_t deadline,
                   int64_t *last_check)
{
    il_barrier *b = BAR(self);
    int64_t slice = slice_for(deadline);
    int rc;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    rc = il_barrier_sleep(w, snap, slice);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0)
        return -1;
    if (self->base.closed) {
        PyErr_SetString(self->base.st->Closed, "this handle was closed while in use");
        return -1;
    }
    int64_t now = il_now_ns();
    if (now - *last_check >= IL_BARRIER_CHECK_NS) {
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        il_barrier_check(b, self->base.ident);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        *last_check = now;
        if (self->base.closed) {
            PyErr_SetString(self->base.st->Closed, "this handle was closed while in use");
            return -1;
        }
    }
    return 0;
}

/* _arrive(timeout) -> (index, last, token).  Counts the calling thread in,
 * waiting while the previous generation's action runs.  BrokenBarrierError
 * if broken (a timeout breaks it). */
static PyObject *bar_arrive(EvObject *self, PyObject *tobj)
{
    int64_t timeout_ns;
    if (parse_timeout(tobj, &timeout_ns) < 0)
        return NULL;
    if (ev_check(self) < 0)
        return NULL;
    il_barrier *b = BAR(self);
    il_barrier_waiter w;
    int rc = il_barrier_enter(&w, b, self->base.ident, ev_tid());
    if (rc != IL_OK) {
        PyErr_Format(self->base.st->Busy, "more than %u threads wait on this barrier",
                     (unsigned)IL_BARRIER_ENTRIES);
        return NULL;
    }
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    for (;;) {
        uint32_t snap = il_barrier_seq(b);
        rc = il_barrier_arrive(&w);
        if (rc == IL_OK)
            break;
        if (rc == IL_BROKEN) {
            il_barrier_leave(&w);
            return broken_error();
        }
        if (il_now_ns() >= deadline) {
            il_barrier_leave(&w);
            il_barrier_break(b, -1);
            return broken_error();
        }
        if (bar_nap(self, &w, snap, deadline, &last_check) < 0) {
            if (!self->base.closed)
                il_barrier_leave(&w);
            il_handle_maybe_release(&self->base);
            return NULL;
        }
    }
    unsigned long long tok = ((unsigned long long)(uint32_t)w.entry << 32) | w.gen;
    return Py_BuildValue("(IOK)", w.index, w.last ? Py_True : Py_False, tok);
}

/* _await(token, timeout): wait for the generation to complete.  Breaks the
 * barrier on timeout or exception (the party is gone); frees the entry. */
static PyObject *bar_await(EvObject *self, PyObject *args)
{
    PyObject *tok, *tobj;
    if (!PyArg_ParseTuple(args, "OO:_await", &tok, &tobj))
        return NULL;
    int64_t timeout_ns;
    if (parse_timeout(tobj, &timeout_ns) < 0)
        return NULL;
    if (ev_check(self) < 0)
        return NULL;
    il_barrier_waiter w;
    if (bar_token(self, tok, &w) < 0)
        return NULL;
    il_barrier *b = BAR(self);
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    for (;;) {
        uint32_t snap = il_barrier_seq(b);
        int rc = il_barrier_status(&w);
        if (rc == IL_OK) {
            il_barrier_leave(&w);
            Py_RETURN_NONE;
        }
        if (rc == IL_BROKEN) {
            il_barrier_leave(&w);
            return broken_error();
        }
        if (il_now_ns() >= deadline) {
            il_barrier_break(b, w.gen);
            rc = il_barrier_status(&w);
            il_barrier_leave(&w);
            if (rc == IL_OK)
                Py_RETURN_NONE;
            return broken_error();
        }
        if (bar_nap(self, &w, snap, deadline, &last_check) < 0) {
            if (!self->base.closed) {
                il_barrier_break(b, w.gen);
                il_barrier_leave(&w);
            }
            il_handle_maybe_release(&self->base);
            return NULL;
        }
    }
}

static PyObject *bar_complete(EvObject *self, PyObject *tok)
{
    if (ev_check(self) < 0)
        return NULL;
    il_barrier_waiter w;
    if (bar_token(self, tok, &w) < 0)
        return NULL;
    int rc;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS /* reads /proc once per waiting party */
    rc = il_barrier_complete(&w);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    il_barrier_leave(&w); /* the mapping stays until il_handle_maybe_release */
    if (il_handle_closed_meanwhile(&self->base))
        return NULL;
    if (rc != IL_OK)
        return broken_error();
    Py_RETURN_NONE;
}

/* _fail(token): the action raised: break this generation, free the entry. */
static PyObject *bar_fail(EvObject *self, PyObject *tok)
{
    if (ev_check(self) < 0)
        return NULL;
    il_barrier_waiter w;
    if (bar_token(self, tok, &w) < 0)
        return NULL;
    il_barrier_break(BAR(self), w.gen);
    il_barrier_leave(&w);
    Py_RETURN_NONE;
}

static PyObject *bar_abort(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    il_barrier_break(BAR(self), -1);
    Py_RETURN_NONE;
}

static PyObject *bar_reset(EvObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ev_check(self) < 0)
        return NULL;
    il_barrier_reset(BAR(self));
    Py_RETURN_NONE;
}

static PyObject *bar_get_parties(EvObject *self, void *Py_UNUSED(closure))
{
    if (ev_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(BAR(self)->parties);
}

static PyObject *bar_get_n_waiting(EvObject *self, void *Py_UNUSED(closure))
{
    if (ev_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(il_barrier_n_waiting(BAR(self)));
}

static PyObject *bar_get_broken(EvObject *self, void *Py_UNUSED(closure))
{
    if (ev_check(self) < 0)
        return NULL;
    return PyBool_FromLong(il_barrier_broken(BAR(self)));
}

static PyMethodDef bar_methods[] = {
    {"_bind", (PyCFunction)bar_bind, METH_O, "Attach to a formatted barrier segment."},
    {"_close", il_handle_close, METH_NOARGS, "Detach this handle.  Idempotent."},
    {"_reclaim", (PyCFunction)ev_reclaim, METH_NOARGS, "Free dead processes' attach slots."},
    {"_arrive", (PyCFunction)bar_arrive, METH_O,
     "_arrive(timeout) -> (index, last, token): count the calling thread in."},
    {"_await", (PyCFunction)bar_await, METH_VARARGS,
     "_await(token, timeout): wait until the generation completes."},
    {"_complete", (PyCFunction)bar_complete, METH_O,
     "_complete(token): the last party releases everyone."},
    {"_fail", (PyCFunction)bar_fail, METH_O, "_fail(token): the action raised: break."},
    {"abort", (PyCFunction)bar_abort, METH_NOARGS,
     "Put the barrier into the broken state: waiters get BrokenBarrierError."},
    {"reset", (PyCFunction)bar_reset, METH_NOARGS,
     "Return the barrier to the empty state; current waiters get BrokenBarrierError."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef bar_getset[] = {
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {"parties", (getter)bar_get_parties, NULL, "Threads required to pass the barrier.", NULL},
    {"n_waiting", (getter)bar_get_n_waiting, NULL, "Threads waiting in the barrier now.", NULL},
    {"broken", (getter)bar_get_broken, NULL, "Whether the barrier is broken.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot bar_slots[] = {
    {Py_tp_doc, "The native half of interlink.Barrier."},
    {Py_tp_new, ev_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, bar_methods},
    {Py_tp_getset, bar_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec bar_spec = {
    "interlink._native.BarrierCore",
    sizeof(EvObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    bar_slots,
};

/* ======================================================================= */
/* Formatting and registration                                             */
/* ======================================================================= */

static void *format_area(PyObject *obj, Py_buffer *view, size_t need)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return NULL;
    if ((size_t)view->len < need) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "buffer smaller than the segment");
        return NULL;
    }
    return (char *)view->buf + IL_SEG_HEADER_SIZE;
}

static PyObject *mod_event_format(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    void *area = format_area(arg, &v, EVENT_SEGMENT_SIZE);
    if (area == NULL)
        return NULL;
    il_event_init((il_event *)area);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyObject *mod_cond_format(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    void *area = format_area(arg, &v, COND_SEGMENT_SIZE);
    if (area == NULL)
        return NULL;
    il_cond_init((il_cond *)area);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyObject *mod_barrier_format(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned long parties;
    if (!PyArg_ParseTuple(args, "Ok:barrier_format", &obj, &parties))
        return NULL;
    if (parties < 1 || parties > IL_BARRIER_MAX_PARTIES) {
        PyErr_Format(PyExc_ValueError, "parties must be within 1..%u",
                     (unsigned)IL_BARRIER_MAX_PARTIES);
        return NULL;
    }
    Py_buffer v;
    void *area = format_area(obj, &v, BARRIER_SEGMENT_SIZE);
    if (area == NULL)
        return NULL;
    il_barrier_init((il_barrier *)area, (uint32_t)parties);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyMethodDef events_module_methods[] = {
    {"event_format", mod_event_format, METH_O, "Format a new event segment."},
    {"cond_format", mod_cond_format, METH_O, "Format a new condition segment."},
    {"barrier_format", mod_barrier_format, METH_VARARGS,
     "barrier_format(buffer, parties): format a new barrier segment."},
    {NULL, NULL, 0, NULL},
};

int il_events_exec(PyObject *m, module_state *st)
{
    (void)st;
    PyType_Spec *specs[] = {&event_spec, &cond_spec, &bar_spec};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(m, specs[i], NULL);
        if (tp == NULL)
            return -1;
        int rc = PyModule_AddType(m, tp);
        Py_DECREF(tp);
        if (rc < 0)
            return -1;
    }
    if (PyModule_AddFunctions(m, events_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "KIND_EVENT", IL_KIND_EVENT) < 0 ||
        PyModule_AddIntConstant(m, "KIND_CONDITION", IL_KIND_CONDITION) < 0 ||
        PyModule_AddIntConstant(m, "KIND_BARRIER", IL_KIND_BARRIER) < 0 ||
        PyModule_AddIntConstant(m, "EVENT_SEGMENT_SIZE", (long)EVENT_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "COND_SEGMENT_SIZE", (long)COND_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "BARRIER_SEGMENT_SIZE", (long)BARRIER_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "BARRIER_MAX_PARTIES", (long)IL_BARRIER_MAX_PARTIES) < 0)
        return -1;
    return 0;
}
