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
#define RW_HOLDS_MAX (1u << 20) /* threads holding reads through one handle */
#define RW_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + ((sizeof(il_rw) + 4095u) & ~(size_t)4095u))

/* Read holds of one thread through a handle (process-local). */
typedef struct {
    uint32_t tid;
    uint32_t count;
} rw_hold;

typedef struct {
    il_handle base;
    il_rw *rw;
    int owner_died;
    int64_t dd_after_ns; /* deadlock checks after a wait this long; 0 off */
    int64_t dd_every_ns; /* ... and then at most this often */
    rw_hold *holds;      /* per-thread read holds of this handle's slot */
    uint32_t nholds, capholds, lasthold;
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

/* ---- per-thread read accounting (process-local; rd[slot] is the shared sum).
 * Deadlock detection needs to know which thread holds a read side; only the
 * thread that took a read side may give it back. */

static rw_hold *rw_hold_find(RWObject *self, uint32_t tid)
{
    if (self->lasthold < self->nholds && self->holds[self->lasthold].tid == tid)
        return &self->holds[self->lasthold];
    for (uint32_t i = 0; i < self->nholds; i++)
        if (self->holds[i].tid == tid && self->holds[i].count > 0) {
            self->lasthold = i;
            return &self->holds[i];
        }
    return NULL;
}

static uint32_t rw_hold_count(RWObject *self, uint32_t tid)
{
    rw_hold *h = rw_hold_find(self, tid);
    return h ? h->count : 0;
}

/* Count one more read hold for tid: 0, or -1 with MemoryError. */
static int rw_hold_add(RWObject *self, uint32_t tid)
{
    rw_hold *h = rw_hold_find(self, tid);
    if (h != NULL && h->count > 0) {
        if (h->count == UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "too many read holds by one thread");
            return -1;
        }
        h->count++;
        return 0;
    }
    for (uint32_t i = 0; i < self->nholds; i++)
        if (self->holds[i].count == 0) {
            self->holds[i].tid = tid;
            self->holds[i].count = 1;
            self->lasthold = i;
            return 0;
        }
    if (self->nholds == self->capholds) {
        uint32_t cap = self->capholds ? self->capholds * 2 : 4;
        if (cap > RW_HOLDS_MAX) {
            PyErr_SetString(PyExc_OverflowError, "too many threads hold read sides");
            return -1;
        }
        rw_hold *n = PyMem_Realloc(self->holds, cap * sizeof *n);
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->holds = n;
        self->capholds = cap;
    }
    self->holds[self->nholds].tid = tid;
    self->holds[self->nholds].count = 1;
    self->lasthold = self->nholds++;
    return 0;
}

static void rw_holds_clear(RWObject *self) { self->nholds = 0; }

/* The calling thread's tid; self->base.fork_gen must be current (rw_check). */
static inline uint32_t rw_tid(RWObject *self)
{
    if (rw_tl_tid != 0 && rw_tl_gen == self->base.fork_gen)
        return rw_tl_tid;
    return rw_self_tid();
}

/* Drop the read holds (and sleeping readers) of dead slots, then free dead
 * slots that hold none (a slot still charged with holds or sleepers is never
 * freed: a new process claiming it would inherit them). */
static void rw_reclaim_slots(il_handle *h)
{
    RWObject *self = (RWObject *)h;
    il_rw_recover_readers(self->rw, self->base.hdr, self->base.slot);
    uint32_t n = self->base.hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : self->base.hdr->nslots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&self->base.hdr->slots[i].ident, memory_order_acquire);
        if (w == 0 || il_ident_alive(il_ident_bare(w)) || il_rw_held(self->rw, i) != 0 ||
            il_rw_slot_sleepers(self->rw, i) != 0)
            continue;
        atomic_compare_exchange_strong_explicit(&self->base.hdr->slots[i].ident, &w, 0,
                                                memory_order_acq_rel, memory_order_relaxed);
    }
}

/* A new slot: neither the read holds of this handle (a forked child holds
 * nothing of its parent's) nor a dead previous owner's count of waiting
 * readers are ours. */
static void rw_attached(il_handle *h)
{
    RWObject *self = (RWObject *)h;
    rw_holds_clear(self);
    atomic_store_explicit(&self->rw->rwaiting[self->base.slot], 0, memory_order_relaxed);
}

static void rw_forked(il_handle *h) { ((RWObject *)h)->owner_died = 0; }

/* Before detaching (this process only): read holds still charged to the slot
 * are given back first: they would otherwise stay with a free slot. */
static int rw_release_slot(il_handle *h)
{
    RWObject *self = (RWObject *)h;
    if (!self->base.attached)
        return 0;
    while (il_rw_read_release(self->rw, self->base.slot) == IL_OK) {
    }
    rw_holds_clear(self);
    return 0;
}

static void rw_unbound(il_handle *h) { ((RWObject *)h)->rw = NULL; }

static void rw_free_extra(il_handle *h)
{
    RWObject *self = (RWObject *)h;
    PyMem_Free(self->holds);
    self->holds = NULL;
}

static const il_handle_ops rw_ops = {
    .closed_msg = "this handle is closed",
    .closed_meanwhile_msg = "this handle was closed while in use",
    .fork_gen = il_fork_generation,
    .reclaim = rw_reclaim_slots,
    .attached = rw_attached,
    .forked = rw_forked,
    .release_slot = rw_release_slot,
    .unbound = rw_unbound,
    .free_extra = rw_free_extra,
};

static PyObject *rw_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return il_handle_new(type, &rw_ops);
}

static int rw_check(RWObject *self) { return il_handle_check(&self->base, il_fork_generation()); }

static PyObject *rw_status_error(RWObject *self, int rc)
{
    if (rc == IL_CORRUPT || rc == -IL_CORRUPT)
        PyErr_SetString(self->base.st->Corrupt,
                        "the rwlock's shared memory failed a consistency check");
    else
        PyErr_Format(self->base.st->InterlinkError, "rwlock: internal status %d", rc);
    return NULL;
}

/* Repairs run between slices (GIL released: /proc reads). */
static int rw_repair(RWObject *self)
{
    int r;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    r = il_lock_check_owner(&self->rw->wlock, NULL);
    il_rw_recover_readers(self->rw, self->base.hdr, self->base.slot);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if (il_handle_closed_meanwhile(&self->base))
        return -1;
    if (r == -IL_CORRUPT) {
        rw_status_error(self, r);
        return -1;
    }
    return r;
}

/* ------------------------------------------------------ deadlock detection */

/* docs/design/deadlock.md: once a wait has lasted dd_after_ns, the Python
 * layer's _deadlock_check(tid, write) runs (GIL held, between slices) at most
 * every dd_every_ns; it publishes what this thread waits for and holds, walks
 * the wait-for graph and raises DeadlockError when this waiter is a cycle's
 * victim.  Uncontended acquires and short waits never get here.  Whoever ran
 * the hook calls _deadlock_done(tid) on every exit of the wait. */
typedef struct {
    int64_t started, last;
    int published;
} rw_dd;

static void rw_dd_begin(rw_dd *dd)
{
    dd->started = il_now_ns();
    dd->last = 0;
    dd->published = 0;
}

static int rw_dd_due(RWObject *self, const rw_dd *dd, int64_t now)
{
    return self->dd_after_ns > 0 && now - dd->started >= self->dd_after_ns &&
           now - dd->last >= self->dd_every_ns;
}

/* 0, or -1 with an exception (DeadlockError, or Closed meanwhile). */
static int rw_dd_hook(RWObject *self, rw_dd *dd, uint32_t tid, int write, int64_t now)
{
    dd->last = now;
    dd->published = 1;
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_deadlock_check", "Ii", (unsigned)tid,
                                      write);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return il_handle_closed_meanwhile(&self->base) ? -1 : 0;
}

/* Withdraw the wait-for entry, keeping any exception of the wait. */
static void rw_dd_end(RWObject *self, rw_dd *dd, uint32_t tid)
{
    if (!dd->published)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_deadlock_done", "I", (unsigned)tid);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
    PyErr_Restore(et, ev, tb);
}

/* ---------------------------------------------------------------- readers */

/* The blocking part of acquire_read: Py_True / Py_False (borrowed), or NULL
 * with an exception; *died: acquired with IL_OWNERDIED.  The caller holds
 * self->base.busy, so the buffer stays. */
static PyObject *rw_read_wait(RWObject *self, uint32_t tid, int64_t timeout_ns, rw_dd *dd,
                              int *died)
{
    il_rw *rw = self->rw;
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    int32_t rq = -1; /* reader-wait entry, claimed once the wait is long */
    PyObject *result = NULL;
    for (;;) {
        int64_t now = il_now_ns();
        if (now >= deadline) {
            result = Py_False;
            break;
        }
        int64_t slice = deadline - now < RW_SLICE_NS ? deadline - now : RW_SLICE_NS;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = il_rw_read_wait_slice(rw, self->base.slot, rq, slice);
        Py_END_ALLOW_THREADS
        if (rc == IL_OK || rc == IL_OWNERDIED) {
            if (self->base.closed) { /* acquired on a handle closed meanwhile: undo */
                il_rw_read_release(rw, self->base.slot);
                il_handle_closed_meanwhile(&self->base);
                break;
            }
            *died = rc == IL_OWNERDIED;
            result = Py_True;
            break;
        }
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0)
            break;
        if (il_handle_closed_meanwhile(&self->base))
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
        if (rw_dd_due(self, dd, now)) {
            if (rq < 0)
                rq = il_rw_rwait_claim(rw, self->base.ident, tid);
            if (rq >= 0 && rw_dd_hook(self, dd, tid, 0, now) < 0)
                break;
            dd->last = now;
        }
    }
    il_rw_rwait_release(rw, rq, self->base.ident);
    return result;
}

static PyObject *rw_acquire_read_ns(RWObject *self, int64_t timeout_ns)
{
    if (rw_check(self) < 0)
        return NULL;
    il_rw *rw = self->rw;
    uint32_t tid = rw_tid(self);
    int rc = il_rw_read_try(rw, self->base.slot);
    if (rc == IL_BUSY && timeout_ns == 0) {
        int r = rw_repair(self);
        if (r < 0)
            return NULL;
        rc = il_rw_read_try(rw, self->base.slot);
        if (rc == IL_BUSY)
            Py_RETURN_FALSE;
    }
    PyObject *result;
    int died = rc == IL_OWNERDIED;
    if (rc == IL_OK || rc == IL_OWNERDIED) {
        result = Py_True;
    } else if (rc != IL_BUSY) {
        return rw_status_error(self, rc);
    } else {
        rw_dd dd;
        rw_dd_begin(&dd);
        uint32_t slot = self->base.slot;
        self->base.busy++;
        atomic_fetch_add_explicit(&rw->rwaiting[slot], 1, memory_order_relaxed);
        result = rw_read_wait(self, tid, timeout_ns, &dd, &died);
        atomic_fetch_sub_explicit(&rw->rwaiting[slot], 1, memory_order_relaxed);
        self->base.busy--;
        rw_dd_end(self, &dd, tid);
        il_handle_maybe_release(&self->base);
        if (result != Py_True)
            return result == NULL ? NULL : Py_NewRef(result);
    }
    if (rw_hold_add(self, tid) < 0) {
        il_rw_read_release(rw, self->base.slot);
        return NULL;
    }
    if (died) {
        /* Told as the next writer is (it stays set until recovered() or a
         * clean write acquisition through this handle). */
        self->owner_died = 1;
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_owner_died_hook", NULL);
        if (r == NULL) { /* (an OwnerDied turned into an error): not acquired */
            rw_hold *h = rw_hold_find(self, tid);
            if (h != NULL && h->count > 0)
                h->count--;
            il_rw_read_release(rw, self->base.slot);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(rw_acquire_read_doc,
             "acquire_read($self, /, blocking=True, timeout=-1)\n--\n\n"
             "Take a read side, waiting at most `timeout` seconds (-1 or None: no limit); "
             "True if taken.  New readers wait while a writer holds or waits.  When a writer "
             "died holding the write side and no writer has taken it since, an OwnerDied "
             "warning is issued and `owner_died` is True.");

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
             "Give a read side back; RuntimeError unless the calling thread holds one "
             "through this handle.");

static PyObject *rw_release_read(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    rw_hold *h = rw_hold_find(self, rw_tid(self));
    if (h == NULL || h->count == 0 || il_rw_read_release(self->rw, self->base.slot) != IL_OK) {
        PyErr_SetString(PyExc_RuntimeError,
                        "release_read of an un-acquired read lock (a read side is released "
                        "by the thread that took it, through the same handle)");
        return NULL;
    }
    h->count--;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- writers */

/* Take wlock (the writers' FIFO queue).  IL_OK / IL_OWNERDIED / IL_TIMEOUT,
 * or -1 with an exception.  The caller holds self->base.busy. */
static int rw_take_wlock(RWObject *self, uint32_t tid, int64_t deadline, rw_dd *dd)
{
    il_lock *l = &self->rw->wlock;
    int rc = il_lock_try(l, self->base.ident, tid, 0);
    if (rc != IL_BUSY)
        return rc;
    if (deadline <= il_now_ns()) {
        if (rw_repair(self) < 0)
            return -1;
        rc = il_lock_try(l, self->base.ident, tid, 0);
        return rc == IL_BUSY ? IL_TIMEOUT : rc;
    }
    il_lock_waiter w;
    il_lock_wait_begin(&w, l, self->base.ident, tid, 0);
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
        Py_BEGIN_ALLOW_THREADS
        rc = il_lock_wait_slice(&w, slice);
        Py_END_ALLOW_THREADS
        if (rc == IL_OK || rc == IL_OWNERDIED)
            return rc;
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            rc = -1;
            break;
        }
        if (il_handle_closed_meanwhile(&self->base)) {
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
            Py_BEGIN_ALLOW_THREADS
            r = il_lock_check_owner(l, &w);
            Py_END_ALLOW_THREADS
            if (il_handle_closed_meanwhile(&self->base)) {
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
        if (rw_dd_due(self, dd, now) && rw_dd_hook(self, dd, tid, 1, now) < 0) {
            rc = -1;
            break;
        }
    }
    /* Not acquired: leave the queue, and let readers we blocked in. */
    il_lock_wait_cancel(&w);
    il_rw_wake_readers(self->rw);
    return rc;
}

/* Holding wlock: wait for the readers to drain.  IL_OK, IL_TIMEOUT, or -1.
 * The caller holds self->base.busy. */
static int rw_drain(RWObject *self, uint32_t tid, int64_t deadline, rw_dd *dd)
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
        Py_BEGIN_ALLOW_THREADS
        rc = il_rw_write_drain_slice(rw, slice);
        Py_END_ALLOW_THREADS
        if (rc == IL_OK)
            return IL_OK;
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0)
            return -1;
        if (il_handle_closed_meanwhile(&self->base))
            return -1;
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= RW_SLICE_NS) {
            if (rw_repair(self) < 0)
                return -1;
            last_check = now;
        }
        if (rw_dd_due(self, dd, now) && rw_dd_hook(self, dd, tid, 1, now) < 0)
            return -1;
    }
}

/* acquire_write proper: Py_True / Py_False (new references) or NULL.  The
 * caller holds self->base.busy. */
static PyObject *rw_write_wait(RWObject *self, uint32_t tid, int64_t timeout_ns, rw_dd *dd)
{
    int64_t deadline = timeout_ns == 0 ? 0 : deadline_for(timeout_ns);
    int rc = rw_take_wlock(self, tid, deadline, dd);
    if (rc < 0)
        return NULL;
    if (rc == IL_TIMEOUT)
        Py_RETURN_FALSE;
    if (rc != IL_OK && rc != IL_OWNERDIED)
        return rw_status_error(self, rc);
    int died = rc == IL_OWNERDIED;
    int drc = rw_drain(self, tid, deadline, dd);
    if (drc != IL_OK) {
        /* Give the write side back, and the owner-died news with it: the
         * next acquirers are told (this one never held the write side). */
        if (died)
            il_rw_write_release_died(self->rw, self->base.ident, tid);
        else
            il_rw_write_release(self->rw, self->base.ident, tid);
        if (drc < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    atomic_fetch_add_explicit(&self->rw->wacq, 1, memory_order_relaxed);
    self->owner_died = died;
    if (died) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_owner_died_hook", NULL);
        if (r == NULL) { /* (an OwnerDied turned into an error): not acquired */
            self->owner_died = 0;
            il_rw_write_release_died(self->rw, self->base.ident, tid);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_RETURN_TRUE;
}

static PyObject *rw_acquire_write_ns(RWObject *self, int64_t timeout_ns)
{
    if (rw_check(self) < 0)
        return NULL;
    uint32_t tid = rw_self_tid();
    if (timeout_ns != 0 && self->dd_after_ns > 0 && rw_hold_count(self, tid) > 0) {
        /* An upgrade: we would wait for our own read side forever. */
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_upgrade_deadlock", "I",
                                          (unsigned)tid);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    rw_dd dd;
    rw_dd_begin(&dd);
    self->base.busy++;
    PyObject *result = rw_write_wait(self, tid, timeout_ns, &dd);
    self->base.busy--;
    rw_dd_end(self, &dd, tid);
    il_handle_maybe_release(&self->base);
    return result;
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
    if (il_rw_write_release(self->rw, self->base.ident, rw_self_tid()) != IL_OK) {
        PyErr_SetString(PyExc_RuntimeError, "release_write of an un-acquired write lock");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- misc */

static PyObject *rw_bind(RWObject *self, PyObject *buffer)
{
    if (il_handle_get_buffer(&self->base, buffer, RW_SEGMENT_SIZE) < 0)
        return NULL;
    self->rw = (il_rw *)((char *)self->base.buf.buf + IL_SEG_HEADER_SIZE);
    if (il_rw_validate(self->rw) != IL_OK) {
        il_handle_unbind(&self->base);
        PyErr_SetString(self->base.st->Corrupt,
                        "the rwlock's shared memory is not a formatted rwlock");
        return NULL;
    }
    if (il_handle_open(&self->base) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *rw_reclaim(RWObject *self, PyObject *Py_UNUSED(ignored))
{
    if (rw_check(self) < 0)
        return NULL;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    rw_reclaim_slots(&self->base);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    il_handle_maybe_release(&self->base);
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
        il_rw_readers(rw), "held", il_rw_held(rw, self->base.slot), "waiting_readers",
        il_rw_waiting_readers(rw), "waiting_writers",
        il_lock_waiters(&rw->wlock), "read_acquisitions",
        (unsigned long long)atomic_load_explicit(&rw->racq, memory_order_relaxed),
        "write_acquisitions",
        (unsigned long long)atomic_load_explicit(&rw->wacq, memory_order_relaxed),
        "owner_died", (unsigned long long)ls.owner_died, "readers_recovered",
        (unsigned long long)atomic_load_explicit(&rw->rrecovered, memory_order_relaxed));
}

PyDoc_STRVAR(rw_deadlock_config_doc,
             "_deadlock_config($self, after_ns, every_ns, /)\n--\n\n"
             "Run _deadlock_check() in waits longer than after_ns, at most every every_ns "
             "(after_ns 0: never, this handle does not take part in deadlock detection).");

static PyObject *rw_deadlock_config(RWObject *self, PyObject *args)
{
    long long after, every;
    if (!PyArg_ParseTuple(args, "LL:_deadlock_config", &after, &every))
        return NULL;
    if (after < 0 || every < 0) {
        PyErr_SetString(PyExc_ValueError, "deadlock check intervals must be >= 0");
        return NULL;
    }
    self->dd_after_ns = after;
    self->dd_every_ns = every;
    Py_RETURN_NONE;
}

static PyObject *rw_read_holds(RWObject *self, PyObject *arg)
{
    unsigned long tid = PyLong_AsUnsignedLong(arg);
    if (tid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (self->base.closed || !self->base.has_buf || self->base.fork_gen != il_fork_generation())
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(rw_hold_count(self, (uint32_t)tid));
}

static PyObject *rw_get_slot(RWObject *self, void *Py_UNUSED(c))
{
    if (self->base.closed || !self->base.attached)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->base.slot);
}

static PyObject *rw_get_owner_died(RWObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->owner_died);
}

static PyMethodDef rw_methods[] = {
    {"_bind", (PyCFunction)rw_bind, METH_O, "Attach to a formatted rwlock segment."},
    {"_close", il_handle_close, METH_NOARGS, "Detach this handle (idempotent)."},
    {"_reclaim", (PyCFunction)rw_reclaim, METH_NOARGS,
     "Drop dead processes' read holds and free their attach slots."},
    {"_stats", (PyCFunction)rw_stats, METH_NOARGS, "A dict of state and counters."},
    {"_deadlock_config", (PyCFunction)rw_deadlock_config, METH_VARARGS, rw_deadlock_config_doc},
    {"_read_holds", (PyCFunction)rw_read_holds, METH_O,
     "Read sides thread `tid` of this process holds through this handle."},
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
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {"_slot", (getter)rw_get_slot, NULL, "This handle's attach slot (None when closed).", NULL},
    {"owner_died", (getter)rw_get_owner_died, NULL,
     "True after a write acquisition that found the previous writer dead, until the next "
     "clean write acquisition or recovered().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot rw_slots[] = {
    {Py_tp_doc, "The native half of interlink.RWLock."},
    {Py_tp_new, rw_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, rw_methods},
    {Py_tp_getset, rw_getset},
    {Py_tp_members, il_handle_members},
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

PyDoc_STRVAR(rwlock_snapshot_doc,
             "rwlock_snapshot($module, buffer, /)\n--\n\n"
             "Read an rwlock segment (a read-only buffer is enough) for deadlock detection and "
             "`interlink ls`: (writer_ident, writer_tid, turn, writers, readers, read_waits, "
             "waiting_readers).  writer_ident is 0 unless a writer holds the write side (or "
             "drains readers to take it), turn the ticket it holds; writers: (ident, tid, "
             "entry, ticket) of the queued writers; readers: (slot, slot_ident, holds) of the "
             "attach slots holding read sides; read_waits: (ident, tid, entry, seq) of the "
             "published reader waits (seq odd while its thread tries to acquire).  None when "
             "the buffer is not a formatted rwlock.");

static PyObject *mod_rwlock_snapshot(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)v.len < RW_SEGMENT_SIZE) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    il_seg_header *hdr = (il_seg_header *)v.buf;
    il_rw *rw = (il_rw *)((char *)v.buf + IL_SEG_HEADER_SIZE);
    if (il_rw_validate(rw) != IL_OK) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    il_lock *l = &rw->wlock;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_seq_cst);
    uint64_t hid = 0;
    uint32_t htid = 0;
    int32_t hidx = -1;
    if ((s >> 32) & 1u) {
        uint32_t idx = (uint32_t)((s >> 40) & 0xFFu);
        if (idx < IL_LOCK_QUEUE) {
            hidx = (int32_t)idx;
            hid = atomic_load_explicit(&l->q[idx].ident, memory_order_acquire);
            htid = atomic_load_explicit(&l->q[idx].tid, memory_order_relaxed);
        }
    }
    PyObject *writers = PyList_New(0), *readers = PyList_New(0), *waits = PyList_New(0);
    PyObject *result = NULL;
    if (writers == NULL || readers == NULL || waits == NULL)
        goto done;
    for (uint32_t i = 0; i < IL_LOCK_QUEUE; i++) {
        if ((int32_t)i == hidx)
            continue;
        il_lock_entry *e = &l->q[i];
        uint64_t id = atomic_load_explicit(&e->ident, memory_order_acquire);
        if (id == 0)
            continue;
        uint64_t tk = atomic_load_explicit(&e->ticket, memory_order_acquire);
        uint32_t tid = atomic_load_explicit(&e->tid, memory_order_relaxed);
        if (!(tk & IL_LOCK_TICKET_VALID))
            continue;
        PyObject *t = Py_BuildValue("(KIIK)", (unsigned long long)id, (unsigned)tid, (unsigned)i,
                                    (unsigned long long)(tk & 0xFFFFFFFFu));
        if (t == NULL || PyList_Append(writers, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (uint32_t i = 0; i < IL_SEG_SLOTS; i++) {
        uint32_t n = atomic_load_explicit(&rw->rd[i], memory_order_seq_cst);
        if (n == 0)
            continue;
        uint64_t id = il_ident_bare(atomic_load_explicit(&hdr->slots[i].ident,
                                                         memory_order_acquire));
        PyObject *t = Py_BuildValue("(IKI)", (unsigned)i, (unsigned long long)id, (unsigned)n);
        if (t == NULL || PyList_Append(readers, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (uint32_t i = 0; i < IL_RW_RWAITS; i++) {
        uint64_t id, seq;
        uint32_t tid;
        if (!il_rw_rwait_read(rw, i, &id, &tid, &seq))
            continue;
        PyObject *t = Py_BuildValue("(KIIK)", (unsigned long long)id, (unsigned)tid, (unsigned)i,
                                    (unsigned long long)seq);
        if (t == NULL || PyList_Append(waits, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    {
        PyObject *wt = PyList_AsTuple(writers), *rt = PyList_AsTuple(readers),
                 *qt = PyList_AsTuple(waits);
        if (wt != NULL && rt != NULL && qt != NULL)
            result = Py_BuildValue("(KIINNNI)", (unsigned long long)hid, (unsigned)htid,
                                   (unsigned)(uint32_t)s, wt, rt, qt,
                                   (unsigned)il_rw_waiting_readers(rw));
        else {
            Py_XDECREF(wt);
            Py_XDECREF(rt);
            Py_XDECREF(qt);
        }
    }
done:
    Py_XDECREF(writers);
    Py_XDECREF(readers);
    Py_XDECREF(waits);
    PyBuffer_Release(&v);
    return result;
}

static PyMethodDef rw_module_methods[] = {
    {"rwlock_format", mod_rwlock_format, METH_O,
     "rwlock_format($module, buffer, /)\n--\n\nFormat the area of a new rwlock segment."},
    {"rwlock_snapshot", mod_rwlock_snapshot, METH_O, rwlock_snapshot_doc},
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
