/* module_sync.c - the CPython glue of the lock words: LockCore, SemaphoreCore.
 *
 * The compiled halves of interlink.Lock / RLock (il_lock) and
 * interlink.Semaphore / BoundedSemaphore (il_sem); _sync.py adds naming, life
 * cycle, pickling and statistics on top.  Every blocking acquire follows the
 * channel's pattern (module.c): a fast attempt with the GIL held; then a loop
 * that releases the GIL only around one wait slice (at most SYNC_SLICE_NS),
 * and back under the GIL runs PyErr_CheckSignals() on EINTR or an elapsed
 * slice, refuses a handle closed meanwhile (Closed), and looks for a dead
 * holder (il_lock_check_owner / il_sem_recover_dead).  So Ctrl-C interrupts
 * a blocked acquire within a slice, and a holder killed with kill -9 is
 * found within a slice plus a /proc read.
 *
 * Segment layout: page 0 is the interlink header (seg.h), the il_lock or
 * il_sem follows at IL_SEG_HEADER_SIZE.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "glue.h"
#include "il_common.h"
#include "lockword.h"
#include "proc.h"
#include "seg.h"

/* A dead holder is found within one slice (+ a /proc read): 20 ms slices keep
 * owner-death detection well inside the 100 ms target. */
#define SYNC_SLICE_NS (20 * 1000 * 1000LL)

#define LOCK_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + ((sizeof(il_lock) + 4095u) & ~(size_t)4095u))
#define SEM_SEGMENT_SIZE (IL_SEG_HEADER_SIZE + ((sizeof(il_sem) + 4095u) & ~(size_t)4095u))

/* ======================================================================= */
/* Shared by both types                                                    */
/* ======================================================================= */

typedef struct {
    il_handle base;     /* base.busy: threads inside a GIL-free wait on this handle */
    il_lock *lock;      /* LockCore */
    il_sem *sem;        /* SemaphoreCore */
    int recursive;      /* RLock */
    int owner_died;     /* the last fresh acquisition found the holder dead */
    int64_t dd_after_ns; /* LockCore: deadlock checks after a wait this long; 0 off */
    int64_t dd_every_ns; /* ... and then at most this often */
} SyncObject;

/* Fork generation and the calling thread's kernel tid, both kept current by
 * an atfork child handler (installed by il_sync_exec, before any handle
 * exists): the child's only thread is the one that forked, so resetting its
 * cached tid there is enough.  The hot paths (acquire/release) then read one
 * initial-exec thread-local and one global instead of calling into proc.c and
 * going through __tls_get_addr. */
static _Atomic uint64_t g_sync_fork_gen;
static _Thread_local uint32_t tl_tid __attribute__((tls_model("initial-exec")));

static void sync_after_fork_child(void)
{
    atomic_fetch_add_explicit(&g_sync_fork_gen, 1, memory_order_relaxed);
    tl_tid = 0;
}

static inline uint64_t sync_fork_gen(void)
{
    return atomic_load_explicit(&g_sync_fork_gen, memory_order_relaxed);
}

static inline uint32_t self_tid(void)
{
    uint32_t tid = tl_tid;
    if (__builtin_expect(tid == 0, 0))
        tl_tid = tid = (uint32_t)syscall(SYS_gettid);
    return tid;
}

/* After a GIL-free section: a handle closed meanwhile by another thread still
 * has its mapping (the buffer is kept while waiters > 0); raise Closed and let
 * the buffer go once nobody waits any more. */
static int sync_closed_meanwhile(SyncObject *self)
{
    if (!self->base.closed)
        return 0;
    PyErr_SetString(self->base.st->Closed, "this handle was closed while in use");
    return 1;
}

/* Free the attach slots of dead processes.  A semaphore's dead slots give
 * their units back first, and a slot the semaphore still names (units, the
 * update marker, the reservation) is never freed: a new process claiming it
 * would inherit them, and recovery, keyed on the slot's liveness, could never
 * undo them.  The liveness check comes first: a dead process changes nothing
 * any more, so what is checked after it stays true.  Recovery takes the
 * update marker in our own slot's name, so it runs only once we have one
 * (not when called from il_handle_attach with the table full). */
static void sync_reclaim(il_handle *h)
{
    SyncObject *self = (SyncObject *)h;
    if (self->lock) {
        il_seg_reclaim_plain(self->base.hdr);
        return;
    }
    if (self->base.attached &&
        il_sem_recover_dead(self->sem, self->base.hdr, self->base.slot) < 0)
        return;
    uint32_t n = self->base.hdr->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : self->base.hdr->nslots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&self->base.hdr->slots[i].ident, memory_order_acquire);
        if (w == 0 || il_ident_alive(w) || il_sem_names_slot(self->sem, i))
            continue;
        atomic_compare_exchange_strong_explicit(&self->base.hdr->slots[i].ident, &w, 0,
                                                memory_order_acq_rel, memory_order_relaxed);
    }
}

/* Detach from the attach table (this process only, never a forked copy).
 * A semaphore handle gives back the units it still holds first: they would
 * otherwise be charged to a free slot (see docs/design/sync.md). */
static int sync_release_slot(il_handle *h)
{
    SyncObject *self = (SyncObject *)h;
    if (!self->base.attached || !self->sem)
        return 0;
    uint32_t held = il_sem_held(self->sem, self->base.slot);
    for (int i = 0; held > 0 && i < 1000; i++) {
        int rc = il_sem_release(self->sem, self->base.slot, held);
        if (rc != IL_BUSY)
            break;
        il_sem_recover_dead(self->sem, self->base.hdr, self->base.slot);
    }
    /* Still charged with units (the release kept failing): keep the slot.
     * Freed, it would hand them to its next user; kept, they come back
     * by recovery once this process has exited. */
    return il_sem_held(self->sem, self->base.slot) != 0;
}

/* A forked child is a new user: it holds nothing of its parent's. */
static void sync_forked(il_handle *h) { ((SyncObject *)h)->owner_died = 0; }

static void sync_unbound(il_handle *h)
{
    ((SyncObject *)h)->lock = NULL;
    ((SyncObject *)h)->sem = NULL;
}

static const il_handle_ops sync_ops = {
    .closed_msg = "this handle is closed",
    .closed_meanwhile_msg = "this handle was closed while in use",
    .fork_gen = sync_fork_gen,
    .reclaim = sync_reclaim,
    .forked = sync_forked,
    .release_slot = sync_release_slot,
    .unbound = sync_unbound,
};

static PyObject *sync_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return il_handle_new(type, &sync_ops);
}

/* Refuse closed handles; re-attach a handle inherited through fork(). */
static inline int sync_check(SyncObject *self)
{
    return il_handle_check(&self->base, sync_fork_gen());
}

PyDoc_STRVAR(sync_close_doc,
             "_close($self, /)\n--\n\n"
             "Detach this handle.  Threads waiting on it get Closed within a slice.  A lock "
             "held by this process stays held (release it first).  Idempotent.");

/* ======================================================================= */
/* LockCore                                                                */
/* ======================================================================= */

static int lock_acquired(int rc) { return rc == IL_OK || rc == IL_OWNERDIED; }

static PyObject *lock_status_error(SyncObject *self, int rc)
{
    if (rc == IL_CORRUPT || rc == -IL_CORRUPT)
        PyErr_SetString(self->base.st->Corrupt,
                        "the lock's shared memory failed a consistency check");
    else if (rc == IL_INVALID)
        PyErr_SetString(PyExc_RuntimeError, "lock recursion depth or identity out of range");
    else
        PyErr_Format(self->base.st->InterlinkError, "lock: internal status %d", rc);
    return NULL;
}

/* Deadlock detection (docs/design/deadlock.md): once a wait has lasted
 * dd_after_ns, the Python layer's _deadlock_check(tid, waited_ns) runs (GIL
 * held, between slices) at most every dd_every_ns; it publishes what this
 * thread waits for and walks the wait-for graph, raising DeadlockError when
 * this waiter is the cycle's victim.  Uncontended acquires and short waits
 * never get here.  *published is set once the hook ran, so the caller calls
 * _deadlock_done(tid) to withdraw the entry on every exit of the wait. */
static int lock_deadlock_hook(SyncObject *self, uint32_t tid, int64_t waited_ns, int *published)
{
    *published = 1;
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_deadlock_check", "IL", (unsigned)tid,
                                      (long long)waited_ns);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The slow path.  Returns an il status (IL_OK, IL_OWNERDIED, IL_TIMEOUT) or
 * -1 with an exception set; the wait is cancelled on every exit but success. */
static int lock_wait_inner(SyncObject *self, uint32_t tid, int64_t timeout_ns, int *published)
{
    il_lock *l = self->lock;
    il_lock_waiter w;
    il_lock_wait_begin(&w, l, self->base.ident, tid, self->recursive);
    int64_t deadline = deadline_for(timeout_ns);
    /* Without a timeout no clock is read before the first slice (a hand-off
     * to a sleeping waiter is a few microseconds; clock reads cost ~0.1 µs
     * each in VMs): `started` is then dated back from the end of the first
     * slice that did not acquire. */
    int64_t started = timeout_ns < 0 ? 0 : il_now_ns();
    int64_t last_check = started, last_dd = 0;
    for (;;) {
        int rc = il_lock_wait_poll(&w);
        if (rc != IL_BUSY) {
            if (!lock_acquired(rc)) {
                il_lock_wait_cancel(&w);
                lock_status_error(self, rc);
                return -1;
            }
            return rc;
        }
        int64_t now = deadline == INT64_MAX ? 0 : il_now_ns();
        if (now >= deadline) {
            il_lock_wait_cancel(&w);
            return IL_TIMEOUT;
        }
        int64_t slice = deadline - now < SYNC_SLICE_NS ? deadline - now : SYNC_SLICE_NS;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_lock_wait_slice(&w, slice);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (lock_acquired(rc))
            return rc;
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            il_lock_wait_cancel(&w);
            return -1;
        }
        if (sync_closed_meanwhile(self)) {
            il_lock_wait_cancel(&w);
            il_handle_maybe_release(&self->base);
            return -1;
        }
        if (rc == IL_INVALID || rc == IL_CORRUPT) {
            il_lock_wait_cancel(&w);
            lock_status_error(self, rc);
            return -1;
        }
        now = il_now_ns();
        if (started == 0) {
            started = rc == IL_TIMEOUT ? now - slice : now;
            last_check = started;
        }
        if (rc == IL_TIMEOUT || now - last_check >= SYNC_SLICE_NS) {
            int r;
            self->base.busy++;
            Py_BEGIN_ALLOW_THREADS
            r = il_lock_check_owner(l, &w);
            Py_END_ALLOW_THREADS
            self->base.busy--;
            if (sync_closed_meanwhile(self)) {
                il_lock_wait_cancel(&w);
                il_handle_maybe_release(&self->base);
                return -1;
            }
            if (r == -IL_CORRUPT) {
                il_lock_wait_cancel(&w);
                lock_status_error(self, r);
                return -1;
            }
            last_check = now;
        }
        if (self->dd_after_ns > 0 && now - started >= self->dd_after_ns &&
            now - last_dd >= self->dd_every_ns) {
            last_dd = now;
            if (lock_deadlock_hook(self, tid, now - started, published) < 0) {
                il_lock_wait_cancel(&w);
                return -1;
            }
            if (sync_closed_meanwhile(self)) {
                il_lock_wait_cancel(&w);
                il_handle_maybe_release(&self->base);
                return -1;
            }
        }
    }
}

static int lock_wait(SyncObject *self, uint32_t tid, int64_t timeout_ns)
{
    int published = 0;
    int rc = lock_wait_inner(self, tid, timeout_ns, &published);
    if (published) {
        /* Withdraw the wait-for entry, keeping any exception of the wait. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_deadlock_done", "I", (unsigned)tid);
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)self);
        Py_XDECREF(r);
        PyErr_Restore(et, ev, tb);
    }
    return rc;
}

/* Acquired with rc: keep the owner-died flag, tell the Python layer.  If
 * the warning raises (warnings turned into errors), the lock is released
 * again so that nobody is wedged by an acquisition nobody will release. */
static PyObject *lock_finish(SyncObject *self, int rc, uint32_t tid)
{
    if (rc == IL_OWNERDIED) {
        self->owner_died = 1;
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_owner_died_hook", NULL);
        if (r == NULL) {
            /* (an OwnerDied turned into an error): not acquired, and the next
             * acquirer is told in its place */
            self->owner_died = 0;
            il_lock_release_died(self->lock, self->base.ident, tid);
            return NULL;
        }
        Py_DECREF(r);
    } else if (!self->recursive ||
               atomic_load_explicit(&self->lock->depth, memory_order_relaxed) <= 1) {
        self->owner_died = 0; /* a fresh, clean acquisition */
    }
    Py_RETURN_TRUE;
}

/* Everything after the first il_lock_try (rc) of an acquire. */
static PyObject *lock_after_try(SyncObject *self, int rc, uint32_t tid, int64_t timeout_ns)
{
    if (rc == IL_BUSY && timeout_ns == 0) {
        /* A dead holder must not make non-blocking acquires fail forever. */
        int r;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        r = il_lock_check_owner(self->lock, NULL);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (sync_closed_meanwhile(self)) {
            il_handle_maybe_release(&self->base);
            return NULL;
        }
        if (r > 0)
            rc = il_lock_try(self->lock, self->base.ident, tid, self->recursive);
        if (rc == IL_BUSY)
            Py_RETURN_FALSE;
    }
    if (rc == IL_BUSY) {
        rc = lock_wait(self, tid, timeout_ns);
        if (rc < 0)
            return NULL;
        if (rc == IL_TIMEOUT)
            Py_RETURN_FALSE;
    }
    if (!lock_acquired(rc))
        return lock_status_error(self, rc);
    return lock_finish(self, rc, tid);
}

static PyObject *lock_acquire_ns(SyncObject *self, int64_t timeout_ns)
{
    if (sync_check(self) < 0)
        return NULL;
    uint32_t tid = self_tid();
    int rc = il_lock_try(self->lock, self->base.ident, tid, self->recursive);
    return lock_after_try(self, rc, tid, timeout_ns);
}

PyDoc_STRVAR(lock_acquire_doc,
             "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
             "Acquire the lock, waiting at most `timeout` seconds (-1 or None: no limit); "
             "True if acquired, False otherwise.  multiprocessing's spelling "
             "acquire(block=True, timeout=None) works too.  When the previous holder died "
             "holding it, the lock is acquired, an OwnerDied warning is issued and "
             "`owner_died` is True.");

static PyObject *lock_acquire(SyncObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    if (nargs == 0 && kwnames == NULL) {
        /* acquire(): the hot case, kept short (same steps as lock_acquire_ns). */
        if (sync_check(self) < 0)
            return NULL;
        uint32_t tid = self_tid();
        int rc = il_lock_try(self->lock, self->base.ident, tid, self->recursive);
        if (rc == IL_OK && !self->recursive) {
            self->owner_died = 0; /* a fresh, clean acquisition (lock_finish) */
            Py_RETURN_TRUE;
        }
        return lock_after_try(self, rc, tid, -1);
    }
    int64_t timeout_ns;
    if (il_parse_acquire("acquire", args, nargs, kwnames, &timeout_ns) < 0)
        return NULL;
    return lock_acquire_ns(self, timeout_ns);
}

static int lock_release_impl(SyncObject *self)
{
    if (sync_check(self) < 0)
        return -1;
    uint32_t tid = self_tid();
    int rc = il_lock_release(self->lock, self->base.ident, tid);
    if (rc == IL_OK)
        return 0;
    if (self->recursive) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    /* threading.Lock has no owner: any thread (here: any process) may release
     * it.  Release on behalf of the current holder. */
    if (il_lock_release_holder(self->lock) == IL_OK)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
    return -1;
}

PyDoc_STRVAR(lock_release_doc,
             "release($self, /)\n--\n\n"
             "Release the lock.  Lock: any thread or process may release it; RuntimeError if "
             "it is not held.  RLock: one level of the calling thread's hold; RuntimeError if "
             "the calling thread does not hold it.");

static PyObject *lock_release(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_release_impl(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_enter_doc, "__enter__($self, /)\n--\n\nacquire(); returns True.");

static PyObject *lock_enter(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_acquire_ns(self, -1);
}

PyDoc_STRVAR(lock_exit_doc, "__exit__($self, *exc_info)\n--\n\nrelease().");

static PyObject *lock_exit(SyncObject *self, PyObject *Py_UNUSED(args))
{
    if (lock_release_impl(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_locked_doc, "locked($self, /)\n--\n\nWhether anyone holds the lock.");

static PyObject *lock_locked(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    uint64_t hid;
    uint32_t htid, depth;
    return PyBool_FromLong(il_lock_holder(self->lock, &hid, &htid, &depth));
}

PyDoc_STRVAR(lock_is_owned_doc,
             "_is_owned($self, /)\n--\n\nWhether the calling thread of this process holds "
             "the lock.");

static PyObject *lock_is_owned(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    uint64_t hid;
    uint32_t htid, depth;
    int held = il_lock_holder(self->lock, &hid, &htid, &depth);
    return PyBool_FromLong(held && il_ident_bare(hid) == il_ident_bare(self->base.ident) &&
                           htid == self_tid());
}

PyDoc_STRVAR(lock_recovered_doc,
             "recovered($self, /)\n--\n\n"
             "Declare the data the lock protects repaired after an OwnerDied acquisition: "
             "clears `owner_died`.");

static PyObject *lock_recovered(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    self->owner_died = 0;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_deadlock_config_doc,
             "_deadlock_config($self, after_ns, every_ns, /)\n--\n\n"
             "Run _deadlock_check() in waits longer than after_ns, at most every every_ns "
             "(after_ns 0: never, this handle does not take part in deadlock detection).");

static PyObject *lock_deadlock_config(SyncObject *self, PyObject *args)
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

PyDoc_STRVAR(lock_bind_doc,
             "_bind($self, buffer, recursive, /)\n--\n\n"
             "Attach this handle to a formatted lock segment (a writable buffer).");

static PyObject *lock_bind(SyncObject *self, PyObject *args)
{
    PyObject *buffer;
    int recursive;
    if (!PyArg_ParseTuple(args, "Op:_bind", &buffer, &recursive))
        return NULL;
    if (il_handle_get_buffer(&self->base, buffer, LOCK_SEGMENT_SIZE) < 0)
        return NULL;
    self->lock = (il_lock *)((char *)self->base.buf.buf + IL_SEG_HEADER_SIZE);
    if (il_lock_validate(self->lock) != IL_OK) {
        il_handle_unbind(&self->base);
        PyErr_SetString(self->base.st->Corrupt,
                        "the lock's shared memory is not a formatted lock");
        return NULL;
    }
    self->recursive = recursive;
    if (il_handle_open(&self->base) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_reclaim_doc,
             "_reclaim($self, /)\n--\n\nRecover a dead holder and free the attach slots of "
             "dead processes.");

static PyObject *lock_reclaim(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    il_lock_check_owner(self->lock, NULL);
    sync_reclaim(&self->base);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    il_handle_maybe_release(&self->base);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_stats_doc,
             "_stats($self, /)\n--\n\n"
             "A dict: holder_pid, holder_tid, depth, waiters, acquisitions, contentions, "
             "owner_died, skipped.");

static PyObject *lock_stats(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    uint64_t hid = 0;
    uint32_t htid = 0, depth = 0;
    int held = il_lock_holder(self->lock, &hid, &htid, &depth);
    il_lock_stats s;
    il_lock_read_stats(self->lock, &s);
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:K,s:K,s:K,s:K}", "holder_pid",
                         held ? il_ident_pid(hid) : 0u, "holder_tid", held ? htid : 0u,
                         "depth", held ? depth : 0u, "waiters", il_lock_waiters(self->lock),
                         "acquisitions", (unsigned long long)s.acquisitions, "contentions",
                         (unsigned long long)s.contentions, "owner_died",
                         (unsigned long long)s.owner_died, "skipped",
                         (unsigned long long)s.skipped);
}

static PyObject *lock_get_owner_died(SyncObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->owner_died);
}

static PyMethodDef lock_methods[] = {
    {"_bind", (PyCFunction)lock_bind, METH_VARARGS, lock_bind_doc},
    {"_close", il_handle_close, METH_NOARGS, sync_close_doc},
    {"_reclaim", (PyCFunction)lock_reclaim, METH_NOARGS, lock_reclaim_doc},
    {"_stats", (PyCFunction)lock_stats, METH_NOARGS, lock_stats_doc},
    {"_is_owned", (PyCFunction)lock_is_owned, METH_NOARGS, lock_is_owned_doc},
    {"_deadlock_config", (PyCFunction)lock_deadlock_config, METH_VARARGS,
     lock_deadlock_config_doc},
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS,
     lock_acquire_doc},
    {"release", (PyCFunction)lock_release, METH_NOARGS, lock_release_doc},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, lock_locked_doc},
    {"recovered", (PyCFunction)lock_recovered, METH_NOARGS, lock_recovered_doc},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS, lock_enter_doc},
    {"__exit__", (PyCFunction)lock_exit, METH_VARARGS, lock_exit_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lock_getset[] = {
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {"owner_died", (getter)lock_get_owner_died, NULL,
     "True after an acquisition that found the previous holder dead, until the next clean "
     "acquisition or recovered().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot lock_slots[] = {
    {Py_tp_doc, "The native half of interlink.Lock and interlink.RLock."},
    {Py_tp_new, sync_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, lock_methods},
    {Py_tp_getset, lock_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec lock_spec = {
    "interlink._native.LockCore",
    sizeof(SyncObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    lock_slots,
};

/* ======================================================================= */
/* SemaphoreCore                                                           */
/* ======================================================================= */

static PyObject *sem_status_error(SyncObject *self, int rc)
{
    if (rc == IL_CORRUPT || rc == -IL_CORRUPT)
        PyErr_SetString(self->base.st->Corrupt,
                        "the semaphore's shared memory failed a consistency check");
    else
        PyErr_Format(self->base.st->InterlinkError, "semaphore: internal status %d", rc);
    return NULL;
}

static int sem_recover(SyncObject *self)
{
    int64_t r;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    r = il_sem_recover_dead(self->sem, self->base.hdr, self->base.slot);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if (sync_closed_meanwhile(self))
        return -1; /* the caller lets the buffer go */
    if (r == -IL_CORRUPT) {
        sem_status_error(self, IL_CORRUPT);
        return -1;
    }
    return r > 0 ? 1 : 0;
}

/* IL_OK, IL_TIMEOUT, or -1 with an exception set. */
static int sem_wait(SyncObject *self, int64_t timeout_ns)
{
    il_sem_waiter w;
    il_sem_wait_begin(&w, self->sem, self->base.slot, self_tid(), 1);
    int64_t deadline = deadline_for(timeout_ns);
    int64_t last_check = il_now_ns();
    for (;;) {
        int64_t now = il_now_ns();
        if (now >= deadline) {
            il_sem_wait_cancel(&w);
            return IL_TIMEOUT;
        }
        int64_t slice = deadline - now < SYNC_SLICE_NS ? deadline - now : SYNC_SLICE_NS;
        int rc;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        rc = il_sem_wait_slice(&w, slice);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (rc == IL_OK) {
            il_sem_wait_cancel(&w);
            return IL_OK;
        }
        if ((rc == IL_EINTR || rc == IL_TIMEOUT) && PyErr_CheckSignals() < 0) {
            il_sem_wait_cancel(&w);
            return -1;
        }
        if (sync_closed_meanwhile(self)) {
            il_sem_wait_cancel(&w);
            il_handle_maybe_release(&self->base);
            return -1;
        }
        if (rc == IL_INVALID || rc == IL_CORRUPT) {
            il_sem_wait_cancel(&w);
            sem_status_error(self, rc);
            return -1;
        }
        now = il_now_ns();
        if (rc == IL_TIMEOUT || now - last_check >= SYNC_SLICE_NS) {
            if (sem_recover(self) < 0) {
                il_sem_wait_cancel(&w);
                il_handle_maybe_release(&self->base);
                return -1;
            }
            last_check = now;
        }
    }
}

static PyObject *sem_acquire_ns(SyncObject *self, int64_t timeout_ns)
{
    if (sync_check(self) < 0)
        return NULL;
    int rc = il_sem_try_acquire(self->sem, self->base.slot, 1);
    if (rc == IL_OK)
        Py_RETURN_TRUE;
    if (rc != IL_BUSY)
        return sem_status_error(self, rc);
    if (timeout_ns == 0) {
        int r = sem_recover(self);
        if (r < 0) {
            il_handle_maybe_release(&self->base);
            return NULL;
        }
        if (r > 0 && il_sem_try_acquire(self->sem, self->base.slot, 1) == IL_OK)
            Py_RETURN_TRUE;
        Py_RETURN_FALSE;
    }
    rc = sem_wait(self, timeout_ns);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == IL_OK);
}

PyDoc_STRVAR(sem_acquire_doc,
             "acquire($self, /, blocking=True, timeout=None)\n--\n\n"
             "Take one unit, waiting at most `timeout` seconds (None or -1: no limit); True "
             "if taken, False otherwise.  multiprocessing's acquire(block=True, timeout=None) "
             "spelling works too.");

static PyObject *sem_acquire(SyncObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    int64_t timeout_ns;
    if (il_parse_acquire("acquire", args, nargs, kwnames, &timeout_ns) < 0)
        return NULL;
    return sem_acquire_ns(self, timeout_ns);
}

static int sem_release_n(SyncObject *self, uint32_t n)
{
    if (sync_check(self) < 0)
        return -1;
    for (;;) {
        int rc = il_sem_release(self->sem, self->base.slot, n);
        if (rc == IL_OK)
            return 0;
        if (rc == IL_INVALID) {
            if (self->sem->max == UINT32_MAX)
                PyErr_SetString(PyExc_OverflowError, "semaphore value would exceed 2**32-1");
            else
                PyErr_SetString(PyExc_ValueError, "Semaphore released too many times");
            return -1;
        }
        if (rc != IL_BUSY) {
            sem_status_error(self, rc);
            return -1;
        }
        /* Another process is updating the accounting (or died doing so). */
        if (sem_recover(self) < 0) {
            il_handle_maybe_release(&self->base);
            return -1;
        }
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        usleep(200);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (PyErr_CheckSignals() < 0 || sync_closed_meanwhile(self)) {
            il_handle_maybe_release(&self->base);
            return -1;
        }
    }
}

PyDoc_STRVAR(sem_release_doc,
             "release($self, /, n=1)\n--\n\n"
             "Give `n` units back, waking waiters.  BoundedSemaphore: ValueError if the value "
             "would exceed the initial value.");

static PyObject *sem_release(SyncObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"n", NULL};
    PyObject *a[1];
    if (fast_args("release", args, nargs, kwnames, names, 0, a) < 0)
        return NULL;
    long n = 1;
    if (a[0]) {
        n = PyLong_AsLong(a[0]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be one or more");
        return NULL;
    }
    if ((unsigned long)n > IL_SEM_MAX_N) {
        PyErr_Format(PyExc_ValueError, "n must be at most %u", (unsigned)IL_SEM_MAX_N);
        return NULL;
    }
    if (sem_release_n(self, (uint32_t)n) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_enter_doc, "__enter__($self, /)\n--\n\nacquire(); returns True.");

static PyObject *sem_enter(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    return sem_acquire_ns(self, -1);
}

PyDoc_STRVAR(sem_exit_doc, "__exit__($self, *exc_info)\n--\n\nrelease().");

static PyObject *sem_exit(SyncObject *self, PyObject *Py_UNUSED(args))
{
    if (sem_release_n(self, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_get_value_doc, "get_value($self, /)\n--\n\nUnits available now.");

static PyObject *sem_get_value(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(il_sem_value(self->sem));
}

PyDoc_STRVAR(sem_bind_doc,
             "_bind($self, buffer, /)\n--\n\n"
             "Attach this handle to a formatted semaphore segment (a writable buffer).");

static PyObject *sem_bind(SyncObject *self, PyObject *buffer)
{
    if (il_handle_get_buffer(&self->base, buffer, SEM_SEGMENT_SIZE) < 0)
        return NULL;
    self->sem = (il_sem *)((char *)self->base.buf.buf + IL_SEG_HEADER_SIZE);
    if (il_sem_validate(self->sem) != IL_OK) {
        il_handle_unbind(&self->base);
        PyErr_SetString(self->base.st->Corrupt,
                        "the semaphore's shared memory is not a formatted semaphore");
        return NULL;
    }
    if (il_handle_open(&self->base) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_reclaim_doc,
             "_reclaim($self, /)\n--\n\nGive back the units of dead processes and free their "
             "attach slots.");

static PyObject *sem_reclaim(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    sync_reclaim(&self->base);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    il_handle_maybe_release(&self->base);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_stats_doc,
             "_stats($self, /)\n--\n\n"
             "A dict: value, max_value (0: unbounded), waiters, held (this handle's units), "
             "acquisitions, contentions, recovered.");

static PyObject *sem_stats(SyncObject *self, PyObject *Py_UNUSED(ignored))
{
    if (sync_check(self) < 0)
        return NULL;
    /* Sleepers counted for a process that died asleep are only taken out by
     * recovery (liveness checks): run it first, so `waiters` counts live
     * threads.  Cheap when nobody sleeps (one load). */
    if (il_sem_waiters(self->sem) != 0 && self->base.attached && sem_recover(self) < 0) {
        il_handle_maybe_release(&self->base);
        return NULL;
    }
    il_sem_stats s;
    il_sem_read_stats(self->sem, &s);
    uint32_t max = self->sem->max;
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:K,s:K,s:K}", "value", il_sem_value(self->sem),
                         "max_value", max == UINT32_MAX ? 0u : max, "waiters",
                         il_sem_waiters(self->sem), "held",
                         il_sem_held(self->sem, self->base.slot),
                         "acquisitions", (unsigned long long)s.acquisitions, "contentions",
                         (unsigned long long)s.contentions, "recovered",
                         (unsigned long long)s.recovered);
}

static PyMethodDef sem_methods[] = {
    {"_bind", (PyCFunction)sem_bind, METH_O, sem_bind_doc},
    {"_close", il_handle_close, METH_NOARGS, sync_close_doc},
    {"_reclaim", (PyCFunction)sem_reclaim, METH_NOARGS, sem_reclaim_doc},
    {"_stats", (PyCFunction)sem_stats, METH_NOARGS, sem_stats_doc},
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire, METH_FASTCALL | METH_KEYWORDS,
     sem_acquire_doc},
    {"release", (PyCFunction)(void (*)(void))sem_release, METH_FASTCALL | METH_KEYWORDS,
     sem_release_doc},
    {"get_value", (PyCFunction)sem_get_value, METH_NOARGS, sem_get_value_doc},
    {"__enter__", (PyCFunction)sem_enter, METH_NOARGS, sem_enter_doc},
    {"__exit__", (PyCFunction)sem_exit, METH_VARARGS, sem_exit_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sem_getset[] = {
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sem_slots[] = {
    {Py_tp_doc, "The native half of interlink.Semaphore and interlink.BoundedSemaphore."},
    {Py_tp_new, sync_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, il_handle_traverse},
    {Py_tp_clear, il_handle_clear},
    {Py_tp_methods, sem_methods},
    {Py_tp_getset, sem_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec sem_spec = {
    "interlink._native.SemaphoreCore",
    sizeof(SyncObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    sem_slots,
};

/* ======================================================================= */
/* Module-level functions: formatting new segments                         */
/* ======================================================================= */

static int kind_area(PyObject *obj, Py_buffer *view, size_t need, void **area)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return -1;
    if ((size_t)view->len < need) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "buffer smaller than the segment");
        return -1;
    }
    *area = (char *)view->buf + IL_SEG_HEADER_SIZE;
    return 0;
}

PyDoc_STRVAR(lock_format_doc,
             "lock_format($module, buffer, /)\n--\n\nFormat the lock area of a new lock "
             "segment.");

static PyObject *mod_lock_format(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    void *area;
    if (kind_area(arg, &v, LOCK_SEGMENT_SIZE, &area) < 0)
        return NULL;
    il_lock_init((il_lock *)area);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lock_snapshot_doc,
             "lock_snapshot($module, buffer, /)\n--\n\n"
             "Read a lock segment (a read-only buffer is enough) for deadlock detection: "
             "(holder_ident, holder_tid, waiters) with holder_ident 0 when free and waiters a "
             "tuple of (ident, tid, entry, ticket) of the queued threads that hold a ticket; "
             "None when the buffer is not a formatted lock.");

static PyObject *mod_lock_snapshot(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)v.len < LOCK_SEGMENT_SIZE) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    il_lock *l = (il_lock *)((char *)v.buf + IL_SEG_HEADER_SIZE);
    if (il_lock_validate(l) != IL_OK) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    uint64_t s = atomic_load_explicit(&l->state, memory_order_acquire);
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
    PyObject *waiters = PyList_New(0);
    if (waiters == NULL) {
        PyBuffer_Release(&v);
        return NULL;
    }
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
        if (t == NULL || PyList_Append(waiters, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(waiters);
            PyBuffer_Release(&v);
            return NULL;
        }
        Py_DECREF(t);
    }
    PyBuffer_Release(&v);
    PyObject *tup = PyList_AsTuple(waiters);
    Py_DECREF(waiters);
    if (tup == NULL)
        return NULL;
    return Py_BuildValue("(KIN)", (unsigned long long)hid, (unsigned)htid, tup);
}

PyDoc_STRVAR(sem_snapshot_doc,
             "sem_snapshot($module, buffer, /)\n--\n\n"
             "Read a semaphore segment (a read-only buffer is enough) for `interlink ls`: "
             "(held, sleepers), two tuples indexed by attach slot: the units each slot holds and "
             "the threads of each slot asleep waiting; None when the buffer is not a formatted "
             "semaphore.");

static PyObject *seq_of_slots(const _Atomic uint32_t *a)
{
    PyObject *t = PyTuple_New(IL_SEG_SLOTS);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < IL_SEG_SLOTS; i++) {
        PyObject *n = PyLong_FromUnsignedLong(atomic_load_explicit(&a[i], memory_order_relaxed));
        if (n == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, n);
    }
    return t;
}

static PyObject *mod_sem_snapshot(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)v.len < SEM_SEGMENT_SIZE) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    il_sem *s = (il_sem *)((char *)v.buf + IL_SEG_HEADER_SIZE);
    if (il_sem_validate(s) != IL_OK) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    PyObject *held = seq_of_slots(s->held);
    PyObject *slp = held == NULL ? NULL : seq_of_slots(s->slp);
    PyBuffer_Release(&v);
    if (slp == NULL) {
        Py_XDECREF(held);
        return NULL;
    }
    return Py_BuildValue("(NN)", held, slp);
}

PyDoc_STRVAR(sem_format_doc,
             "sem_format($module, buffer, value, bounded, /)\n--\n\nFormat the semaphore area "
             "of a new semaphore segment: `value` units; bounded: releases never raise it "
             "above `value`.");

static PyObject *mod_sem_format(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned long long value;
    int bounded;
    if (!PyArg_ParseTuple(args, "OKp:sem_format", &obj, &value, &bounded))
        return NULL;
    if (value >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "semaphore value must be below 2**32-1");
        return NULL;
    }
    Py_buffer v;
    void *area;
    if (kind_area(obj, &v, SEM_SEGMENT_SIZE, &area) < 0)
        return NULL;
    int rc = il_sem_init((il_sem *)area, (uint32_t)value,
                         bounded ? (uint32_t)value : UINT32_MAX);
    PyBuffer_Release(&v);
    if (rc != IL_OK) {
        PyErr_SetString(PyExc_ValueError, "invalid semaphore value");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef sync_module_methods[] = {
    {"lock_format", mod_lock_format, METH_O, lock_format_doc},
    {"lock_snapshot", mod_lock_snapshot, METH_O, lock_snapshot_doc},
    {"sem_format", mod_sem_format, METH_VARARGS, sem_format_doc},
    {"sem_snapshot", mod_sem_snapshot, METH_O, sem_snapshot_doc},
    {NULL, NULL, 0, NULL},
};

/* ======================================================================= */
/* Registration                                                            */
/* ======================================================================= */

int il_sync_exec(PyObject *m, module_state *st)
{
    static atomic_flag atfork_installed = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&atfork_installed) &&
        pthread_atfork(NULL, NULL, sync_after_fork_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return -1;
    }
    st->LockCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lock_spec, NULL);
    st->SemaphoreCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &sem_spec, NULL);
    if (!st->LockCoreType || !st->SemaphoreCoreType)
        return -1;
    if (PyModule_AddType(m, st->LockCoreType) < 0 ||
        PyModule_AddType(m, st->SemaphoreCoreType) < 0)
        return -1;
    if (PyModule_AddFunctions(m, sync_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "LOCK_SEGMENT_SIZE", (long)LOCK_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SEM_SEGMENT_SIZE", (long)SEM_SEGMENT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SEM_VALUE_MAX", (long)(UINT32_MAX - 1)) < 0 ||
        PyModule_AddIntConstant(m, "SYNC_SLICE_NS", (long)SYNC_SLICE_NS) < 0)
        return -1;
    return 0;
}
