/* module.c - the CPython glue over the plain-C core.
 *
 * Everything that touches Python lives here or in the other module_*.c files
 * (module_sync.c: LockCore, SemaphoreCore): the module state (exception
 * types), argument parsing, the ChannelCore / Message / Loan types, and the
 * blocking loops.  Every blocking loop follows one pattern: a fast attempt
 * with the GIL held; then, GIL released, a bounded adaptive spin and a futex
 * sleep of at most one slice; back under the GIL, EINTR or an elapsed slice
 * runs PyErr_CheckSignals(), so Ctrl-C interrupts any wait within a slice.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "futex.h"
#include "glue.h"
#include "il_common.h"
#include "proc.h"
#include "ring.h"
#include "seg.h"

/* The module state struct and the argument helpers live in glue.h (shared
 * with module_sync.c, the glue of Lock/RLock/Semaphore). */

/* ======================================================================= */
/* Wait tuning                                                             */
/* ======================================================================= */

#define SLICE_EMPTY_NS (100 * 1000 * 1000LL)  /* re-check peers every 100 ms */
#define SLICE_STUCK_NS (10 * 1000 * 1000LL)   /* a record in flight: 10 ms */
#define SPIN_MIN_NS (2 * 1000LL)
#define SPIN_MAX_NS (100 * 1000LL)
#define SPIN_START_NS (20 * 1000LL)

/* ======================================================================= */
/* ChannelCore                                                             */
/* ======================================================================= */

typedef struct {
    PyObject_HEAD
    Py_buffer buf;
    int has_buf;
    il_ring ring;
    uint64_t ident;
    uint64_t fork_gen;
    uint32_t slot;
    int attached;
    int sender;
    int lent;           /* adopted from a lent slot and has not sent yet */
    int receiver;
    int closed;
    uint64_t token;
    uint64_t epoch;
    int waiters;        /* threads inside a GIL-free wait */
    Py_ssize_t live;    /* Message and Loan objects that point into the buffer */
    int64_t spin_ns;
    uint64_t n_sent;
    uint64_t n_received;
    struct LoanObject *loans; /* open loans, aborted when the handle closes */
    uint32_t lend_slot;       /* token of this handle's lent slot (word 0: none) */
    uint64_t lend_word;
    module_state *st;
    PyObject *weakreflist;
    PyObject *dict;
} ChanObject;

typedef struct {
    PyObject_HEAD
    ChanObject *chan;
    const uint8_t *ptr;
    uint64_t pos;
    uint64_t len;
    uint64_t epoch;
    Py_ssize_t exports;
    int state; /* 0 live, 1 release requested, 2 released */
} MessageObject;

typedef struct LoanObject {
    PyObject_HEAD
    ChanObject *chan;
    uint8_t *ptr;
    uint64_t pos;
    uint64_t reserved;
    Py_ssize_t exports;
    int state; /* 0 open, 1 committed, 2 aborted */
    PyObject *view;
    uint64_t fork_gen; /* the process that made the reservation */
    int counted;       /* holds one of the channel's `live` counts */
    struct LoanObject *prev, *next; /* the channel's open loans */
} LoanObject;

static void chan_maybe_release_buffer(ChanObject *self)
{
    if (self->has_buf && self->closed && self->waiters == 0 && self->live == 0) {
        self->has_buf = 0;
        PyBuffer_Release(&self->buf);
    }
}

static PyObject *raise_status(module_state *st, int rc, const char *what)
{
    switch (rc) {
    case IL_CORRUPT:
        PyErr_Format(st->Corrupt, "%s: the channel's shared memory failed a consistency check",
                     what);
        break;
    case IL_TOOBIG:
        PyErr_Format(st->MessageTooLarge, "%s: message can never fit in this channel", what);
        break;
    case IL_CLOSED:
        PyErr_Format(st->Closed, "%s: channel is closed", what);
        break;
    case IL_INVALID:
        PyErr_Format(st->Corrupt, "%s: the channel's shared memory is inconsistent", what);
        break;
    case IL_NOSLOT:
        PyErr_Format(st->Busy, "%s: the attach table is full of live users", what);
        break;
    default:
        PyErr_Format(st->InterlinkError, "%s: internal status %d", what, rc);
    }
    return NULL;
}

static int chan_attach(ChanObject *self)
{
    self->ident = il_ident_self();
    if (self->ident == 0) {
        PyErr_SetString(PyExc_OSError, "cannot read this process's start time from /proc");
        return -1;
    }
    self->fork_gen = il_fork_generation();
    int rc = il_seg_attach(self->ring.hdr, self->ident, 0, &self->slot);
    if (rc == IL_NOSLOT) {
        il_ring_reclaim_dead(&self->ring);
        rc = il_seg_attach(self->ring.hdr, self->ident, 0, &self->slot);
    }
    if (rc != IL_OK) {
        raise_status(self->st, rc, "attach");
        return -1;
    }
    self->attached = 1;
    self->sender = 0;
    self->lent = 0;
    self->receiver = 0;
    return 0;
}

/* Refuse closed handles; re-attach a handle inherited through fork(). */
static inline int chan_check(ChanObject *self)
{
    if (self->closed || !self->has_buf) {
        PyErr_SetString(self->st->Closed, "this channel handle is closed");
        return -1;
    }
    if (self->fork_gen != il_fork_generation()) {
        /* The slot and any receiver role belong to the parent. */
        self->attached = 0;
        self->epoch++;
        self->lend_word = 0;
        while (self->loans) { /* the parent's reservations: not ours to touch */
            LoanObject *l = self->loans;
            self->loans = l->next;
            l->prev = l->next = NULL;
        }
        if (chan_attach(self) < 0)
            return -1;
        self->token = ((uint64_t)self->ident << 1) ^ (uint64_t)(uintptr_t)self;
    }
    return 0;
}

static PyObject *chan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    ChanObject *self = (ChanObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->st = state_of_type(type);
    if (self->st == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->spin_ns = SPIN_START_NS;
    self->closed = 1; /* until _bind */
    return (PyObject *)self;
}

PyDoc_STRVAR(chan_bind_doc,
             "_bind($self, buffer, adopt=None, /)\n--\n\n"
             "Attach this handle to a formatted channel segment (a writable buffer); "
             "`adopt` is a (slot, word) token from _lend() to take over.");

static PyObject *chan_bind(ChanObject *self, PyObject *args)
{
    PyObject *arg, *adopt = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:_bind", &arg, &adopt))
        return NULL;
    unsigned int adopt_slot = 0;
    unsigned long long adopt_word = 0;
    if (adopt != Py_None && !PyArg_ParseTuple(adopt, "IK:adopt", &adopt_slot, &adopt_word))
        return NULL;
    if (self->has_buf) {
        PyErr_SetString(PyExc_RuntimeError, "handle already bound");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &self->buf, PyBUF_WRITABLE) < 0)
        return NULL;
    self->has_buf = 1;
    int rc = il_ring_bind(&self->ring, self->buf.buf, (uint64_t)self->buf.len);
    if (rc != IL_OK) {
        self->has_buf = 0;
        PyBuffer_Release(&self->buf);
        return raise_status(self->st, rc, "open");
    }
    if (chan_attach(self) < 0) {
        self->has_buf = 0;
        PyBuffer_Release(&self->buf);
        return NULL;
    }
    if (adopt != Py_None) {
        /* A handle that travelled here counts as a sender until it receives:
         * take the standing first, then give back the lender's. */
        if (il_seg_add_roles(self->ring.hdr, self->slot, self->ident,
                             IL_ROLE_SENDER | IL_ROLE_LENT) == IL_OK) {
            self->sender = 1;
            self->lent = 1;
        }
        il_ring_adopt(&self->ring, adopt_slot, adopt_word);
    }
    self->token = ((uint64_t)self->ident << 1) ^ (uint64_t)(uintptr_t)self;
    self->closed = 0;
    Py_RETURN_NONE;
}

static void abort_open_loans(ChanObject *self);

static void chan_detach(ChanObject *self)
{
    if (!self->has_buf)
        return;
    abort_open_loans(self);
    il_ring_ctrl *c = self->ring.ctrl;
    if (self->fork_gen == il_fork_generation()) {
        if (self->receiver) {
            il_ring_reader_flush(&self->ring);
            uint64_t expected = self->ident;
            atomic_compare_exchange_strong_explicit(&c->receiver, &expected, 0,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed);
            self->receiver = 0;
        }
        if (self->attached) {
            il_ring_clear_intent(&self->ring, self->slot);
            il_seg_detach(self->ring.hdr, self->slot, self->ident);
            self->attached = 0;
        }
        il_ring_wake_all(&self->ring);
    }
}

PyDoc_STRVAR(chan_close_doc,
             "_close($self, /)\n--\n\n"
             "Detach this handle: give up the receiver role and the attach slot, wake every "
             "waiter.  Idempotent.");

static PyObject *chan_close(ChanObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->closed) {
        chan_detach(self);
        self->closed = 1;
    }
    chan_maybe_release_buffer(self);
    Py_RETURN_NONE;
}

static int chan_traverse(ChanObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    return 0;
}

static int chan_clear(ChanObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void chan_dealloc(ChanObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (!self->closed) {
        chan_detach(self);
        self->closed = 1;
    }
    if (self->has_buf) {
        self->has_buf = 0;
        PyBuffer_Release(&self->buf);
    }
    chan_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- the receiver role ------------------------------------------------- */

static int ensure_receiver(ChanObject *self)
{
    if (self->receiver)
        return 0;
    il_ring_ctrl *c = self->ring.ctrl;
    if (self->lent) {
        /* Handed over as a potential sender, but it receives: it is no sender. */
        _Atomic uint64_t *p = &self->ring.hdr->slots[self->slot].ident;
        uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
        while (il_ident_bare(cur) == self->ident &&
               !atomic_compare_exchange_weak_explicit(p, &cur, self->ident,
                                                      memory_order_acq_rel,
                                                      memory_order_relaxed)) {
        }
        self->lent = 0;
        self->sender = 0;
    }
    uint64_t cur = atomic_load_explicit(&c->receiver, memory_order_acquire);
    for (;;) {
        if (cur != 0 && il_ident_bare(cur) == self->ident) {
            PyErr_SetString(self->st->Busy,
                            "another handle in this process is the channel's receiver; "
                            "a channel has one receiver");
            return -1;
        }
        if (cur != 0 && il_ident_alive(cur)) {
            PyErr_Format(self->st->Busy,
                         "the channel already has a live receiver (pid %u); a channel has "
                         "one receiver",
                         il_ident_pid(cur));
            return -1;
        }
        if (atomic_compare_exchange_strong_explicit(&c->receiver, &cur, self->ident,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire))
            break;
    }
    atomic_store_explicit(&c->receiver_token, self->token, memory_order_relaxed);
    atomic_store_explicit(&c->had_receiver, 1, memory_order_release);
    il_ring_reader_start(&self->ring);
    self->receiver = 1;
    self->epoch++;
    return 0;
}

static int closed_for_recv(ChanObject *self)
{
    il_ring_ctrl *c = self->ring.ctrl;
    return atomic_load_explicit(&c->had_sender, memory_order_acquire) &&
           !il_ring_has_senders(&self->ring);
}

static int closed_for_send(ChanObject *self)
{
    il_ring_ctrl *c = self->ring.ctrl;
    return atomic_load_explicit(&c->had_receiver, memory_order_relaxed) &&
           atomic_load_explicit(&c->receiver, memory_order_relaxed) == 0;
}

static int ensure_sender(ChanObject *self)
{
    if (self->sender)
        return 0;
    int rc = il_seg_add_roles(self->ring.hdr, self->slot, self->ident, IL_ROLE_SENDER);
    if (rc != IL_OK) {
        PyErr_SetString(self->st->Closed,
                        "this handle's attach slot was reclaimed (was the process "
                        "suspended for long?); reopen the channel");
        return -1;
    }
    atomic_store_explicit(&self->ring.ctrl->had_sender, 1, memory_order_release);
    self->sender = 1;
    return 0;
}

/* ---- waiting ----------------------------------------------------------- */

typedef struct {
    il_ring *ring;
    uint64_t head;
    uint64_t need;
} wait_ctx;

static int ready_readable(const wait_ctx *w) { return il_ring_readable(w->ring, w->head); }

static int ready_space(const wait_ctx *w) { return il_ring_free_bytes(w->ring) >= w->need; }

/* Spin briefly, then sleep for at most `slice_ns` (bounded by the deadline).
 * Called with the GIL held; releases it.  Returns IL_OK when the condition may
 * hold, IL_TIMEOUT when the slice or deadline passed, IL_EINTR on a signal. */
static int block(ChanObject *self, int for_space, uint64_t need, int64_t deadline,
                 int64_t slice_ns)
{
    wait_ctx w = {&self->ring, self->ring.head, need};
    int (*ready)(const wait_ctx *) = for_space ? ready_space : ready_readable;
    int64_t spin_ns = self->spin_ns;
    int rc = IL_TIMEOUT;
    int spun_ok = 0;
    self->waiters++;
    Py_BEGIN_ALLOW_THREADS
    int64_t now = il_now_ns();
    int64_t spin_end = now + spin_ns;
    if (spin_end > deadline)
        spin_end = deadline;
    while (!spun_ok && now < spin_end) {
        for (int i = 0; i < 32; i++) {
            if (ready(&w)) {
                spun_ok = 1;
                break;
            }
            il_cpu_relax();
        }
        now = il_now_ns();
    }
    if (spun_ok) {
        rc = IL_OK;
    } else if (now < deadline) {
        int64_t t = deadline - now;
        if (t > slice_ns)
            t = slice_ns;
        rc = for_space ? il_ring_wait_space(w.ring, need, t)
                       : il_ring_wait_readable(w.ring, w.head, t);
    }
    Py_END_ALLOW_THREADS
    self->waiters--;
    /* Adapt: spin longer while spinning pays, shorter while it does not. */
    if (spun_ok) {
        self->spin_ns = spin_ns * 2 > SPIN_MAX_NS ? SPIN_MAX_NS : spin_ns * 2;
    } else {
        self->spin_ns = spin_ns / 2 < SPIN_MIN_NS ? SPIN_MIN_NS : spin_ns / 2;
    }
    return rc;
}

/* After a wait: run signal handlers; on an elapsed slice look for dead peers.
 * Returns -1 with an exception set, 0 to go round again. */
static int after_wait(ChanObject *self, int rc, int stuck)
{
    if (rc == IL_EINTR || rc == IL_TIMEOUT) {
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    if (self->closed || !self->has_buf) {
        PyErr_SetString(self->st->Closed, "this channel handle was closed while waiting");
        return -1;
    }
    if (rc == IL_TIMEOUT) {
        il_ring_reclaim_dead(&self->ring);
        if (stuck) {
            int r = il_ring_resolve_stuck(&self->ring);
            if (r == IL_CORRUPT) {
                raise_status(self->st, r, "recv");
                return -1;
            }
        }
    }
    return 0;
}

/* ---- sending ----------------------------------------------------------- */

/* Reserve room for len bytes, waiting as the timeout allows. */
static int reserve_blocking(ChanObject *self, uint64_t len, int64_t timeout_ns, uint64_t *pos,
                            uint8_t **payload, const char *what)
{
    int64_t deadline = -2;
    for (;;) {
        if (closed_for_send(self)) {
            PyErr_Format(self->st->Closed, "%s: the channel's receiver has gone", what);
            return -1;
        }
        int rc = il_ring_reserve(&self->ring, self->slot, len, pos, payload);
        if (rc == IL_OK)
            return 0;
        if (rc != IL_FULL) {
            raise_status(self->st, rc, what);
            return -1;
        }
        if (timeout_ns == 0) {
            PyErr_Format(self->st->Full, "%s: no room in the channel", what);
            return -1;
        }
        if (deadline == -2)
            deadline = deadline_for(timeout_ns);
        if (il_now_ns() >= deadline) {
            PyErr_Format(self->st->Timeout, "%s: no room in the channel within the timeout",
                         what);
            return -1;
        }
        /* Commits not yet announced (send_many) must wake the reader before
         * this writer sleeps waiting for it. */
        il_ring_notify_reader(&self->ring);
        int wrc = block(self, 1, il_rec_size(len), deadline, SLICE_EMPTY_NS);
        if (after_wait(self, wrc, 0) < 0)
            return -1;
    }
}

static int send_one(ChanObject *self, PyObject *data, int64_t timeout_ns, int notify)
{
    Py_buffer view;
    const void *src;
    Py_ssize_t n;
    int have_view = 0;
    if (PyBytes_CheckExact(data)) {
        src = PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return -1;
        have_view = 1;
        src = view.buf;
        n = view.len;
    }
    uint64_t pos;
    uint8_t *dst;
    int rc = il_ring_reserve(&self->ring, self->slot, (uint64_t)n, &pos, &dst);
    if (rc != IL_OK || closed_for_send(self)) {
        if (rc == IL_OK) {
            il_ring_abort(&self->ring, pos, (uint64_t)n);
            il_ring_notify_reader(&self->ring);
        }
        if (rc == IL_TOOBIG) {
            PyErr_Format(self->st->MessageTooLarge,
                         "message of %zd bytes can never fit: this channel carries at most %llu "
                         "bytes per message",
                         n, (unsigned long long)il_ring_max_payload(&self->ring));
            goto fail;
        }
        if (reserve_blocking(self, (uint64_t)n, timeout_ns, &pos, &dst, "send") < 0)
            goto fail;
    }
    memcpy(dst, src, (size_t)n);
    il_ring_commit(&self->ring, pos, (uint64_t)n, (uint64_t)n);
    self->lent = 0;
    if (notify)
        il_ring_notify_reader_after_commit(&self->ring);
    self->n_sent++;
    if (have_view)
        PyBuffer_Release(&view);
    return 0;
fail:
    if (have_view)
        PyBuffer_Release(&view);
    return -1;
}

static const char *const send_kw[] = {"data", "timeout", NULL};

PyDoc_STRVAR(chan_send_doc,
             "send($self, data, timeout=None)\n--\n\n"
             "Copy one message (any bytes-like object) into the channel.  Blocks while the "
             "channel is full, up to `timeout` seconds (None: no limit); raises Timeout, "
             "MessageTooLarge if it can never fit, Closed if the receiver has gone.");

static PyObject *chan_send(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *a[2];
    int64_t timeout_ns;
    if (fast_args("send", args, nargs, kwnames, send_kw, 1, a) < 0 ||
        parse_timeout(a[1], &timeout_ns) < 0 || chan_check(self) < 0 ||
        ensure_sender(self) < 0)
        return NULL;
    if (send_one(self, a[0], timeout_ns, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(chan_send_nowait_doc,
             "send_nowait($self, data, /)\n--\n\n"
             "Send without waiting: raises Full when there is no room now.");

static PyObject *chan_send_nowait(ChanObject *self, PyObject *data)
{
    if (chan_check(self) < 0 || ensure_sender(self) < 0)
        return NULL;
    if (send_one(self, data, 0, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static const char *const send_many_kw[] = {"items", "timeout", NULL};

PyDoc_STRVAR(chan_send_many_doc,
             "send_many($self, items, timeout=None)\n--\n\n"
             "Send every bytes-like object of an iterable, in order, waking the receiver once "
             "per batch.  Returns how many were sent; on an error the ones before it are "
             "sent.  `timeout` bounds each wait for room.");

static PyObject *chan_send_many(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    PyObject *a[2];
    int64_t timeout_ns;
    if (fast_args("send_many", args, nargs, kwnames, send_many_kw, 1, a) < 0 ||
        parse_timeout(a[1], &timeout_ns) < 0 || chan_check(self) < 0 ||
        ensure_sender(self) < 0)
        return NULL;
    /* A tuple snapshot: the items stay alive and in place while the GIL is
     * released in a wait, whatever other threads do to the caller's list. */
    PyObject *seq = PySequence_Tuple(a[0]);
    if (seq == NULL)
        return NULL;
    if (self->closed || !self->has_buf) { /* iterating may have run any code */
        Py_DECREF(seq);
        PyErr_SetString(self->st->Closed, "this channel handle is closed");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    PyObject **items = &PyTuple_GET_ITEM(seq, 0);
    Py_ssize_t done = 0;
    for (; done < count; done++) {
        if (send_one(self, items[done], timeout_ns, 0) < 0)
            break;
        if ((done & 63) == 63)
            il_ring_notify_reader(&self->ring);
    }
    il_ring_notify_reader(&self->ring);
    Py_DECREF(seq);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(done);
}

static const char *const loan_kw[] = {"size", "timeout", NULL};

PyDoc_STRVAR(chan_loan_doc,
             "loan($self, size, timeout=None)\n--\n\n"
             "Reserve `size` bytes in the channel for writing in place.  Returns a Loan: a "
             "writable buffer that is sent by commit() (or at the end of a with-block) and "
             "dropped by abort().  Waits for room like send().");

static PyObject *chan_loan(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *a[2];
    int64_t timeout_ns;
    if (fast_args("loan", args, nargs, kwnames, loan_kw, 1, a) < 0 ||
        parse_timeout(a[1], &timeout_ns) < 0)
        return NULL;
    /* Convert before touching shared memory: __index__ may run any code. */
    Py_ssize_t size = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "loan size must be >= 0");
        return NULL;
    }
    if (chan_check(self) < 0 || ensure_sender(self) < 0)
        return NULL;
    if ((uint64_t)size > il_ring_max_payload(&self->ring)) {
        PyErr_Format(self->st->MessageTooLarge,
                     "loan of %zd bytes can never fit: this channel carries at most %llu bytes "
                     "per message",
                     size, (unsigned long long)il_ring_max_payload(&self->ring));
        return NULL;
    }
    uint64_t pos;
    uint8_t *dst;
    if (reserve_blocking(self, (uint64_t)size, timeout_ns, &pos, &dst, "loan") < 0)
        return NULL;
    LoanObject *loan = PyObject_New(LoanObject, self->st->LoanType);
    if (loan == NULL) {
        il_ring_abort(&self->ring, pos, (uint64_t)size);
        il_ring_notify_reader(&self->ring);
        return NULL;
    }
    Py_INCREF(self);
    loan->chan = self;
    loan->ptr = dst;
    loan->pos = pos;
    loan->reserved = (uint64_t)size;
    loan->exports = 0;
    loan->state = 0;
    loan->view = NULL;
    loan->fork_gen = self->fork_gen;
    loan->counted = 1;
    loan->prev = NULL;
    loan->next = self->loans;
    if (self->loans)
        self->loans->prev = loan;
    self->loans = loan;
    self->live++;
    return (PyObject *)loan;
}

/* ---- receiving --------------------------------------------------------- */

static PyObject *make_message(ChanObject *self, uint64_t pos, const uint8_t *p, uint64_t len)
{
    MessageObject *m = PyObject_New(MessageObject, self->st->MessageType);
    if (m == NULL) {
        il_ring_release(&self->ring, pos, len);
        return NULL;
    }
    Py_INCREF(self);
    m->chan = self;
    m->ptr = p;
    m->pos = pos;
    m->len = len;
    m->epoch = self->epoch;
    m->exports = 0;
    m->state = 0;
    self->live++;
    self->n_received++;
    return (PyObject *)m;
}

/* A record at the head has stayed uncommitted for a while: if its writer is
 * dead, skip it.  Done on elapsed time, not only on an elapsed wait, because
 * commits by other writers keep waking the reader. */
static int check_stuck(ChanObject *self, int64_t *since, uint64_t *at)
{
    int64_t now = il_now_ns();
    if (*since == 0 || *at != self->ring.head) {
        *since = now;
        *at = self->ring.head;
        return 0;
    }
    if (now - *since < SLICE_STUCK_NS)
        return 0;
    *since = now;
    int r = il_ring_resolve_stuck(&self->ring);
    if (r == IL_CORRUPT) {
        raise_status(self->st, r, "recv");
        return -1;
    }
    return 0;
}

/* Wait until a record can be delivered.  Returns IL_OK with the record, or -1
 * with an exception set (Empty, Timeout, Closed, Corrupt, signals). */
static int next_record(ChanObject *self, int64_t timeout_ns, uint64_t *pos,
                       const uint8_t **payload, uint64_t *len)
{
    int64_t deadline = -2;
    int64_t stuck_since = 0;
    uint64_t stuck_at = 0;
    for (;;) {
        int rc = il_ring_peek(&self->ring, pos, payload, len);
        if (rc == IL_OK)
            return IL_OK;
        if (rc == IL_INFLIGHT && check_stuck(self, &stuck_since, &stuck_at) < 0)
            return -1;
        if (rc == IL_CORRUPT) {
            raise_status(self->st, rc, "recv");
            return -1;
        }
        il_ring_reader_flush(&self->ring); /* about to wait or give up: return the space */
        if (rc == IL_EMPTY && closed_for_recv(self)) {
            /* Re-check: a last message may have landed between the two looks. */
            rc = il_ring_peek(&self->ring, pos, payload, len);
            if (rc == IL_OK)
                return IL_OK;
            if (rc == IL_EMPTY) {
                PyErr_SetString(self->st->Closed,
                                "every sender has closed or died and the channel is drained");
                return -1;
            }
            continue;
        }
        if (timeout_ns == 0) {
            if (rc == IL_INFLIGHT)
                il_ring_resolve_stuck(&self->ring);
            PyErr_SetString(self->st->Empty, "no message in the channel");
            return -1;
        }
        if (deadline == -2)
            deadline = deadline_for(timeout_ns);
        if (il_now_ns() >= deadline) {
            PyErr_SetString(self->st->Timeout, "no message within the timeout");
            return -1;
        }
        int stuck = rc == IL_INFLIGHT;
        int wrc = block(self, 0, 0, deadline, stuck ? SLICE_STUCK_NS : SLICE_EMPTY_NS);
        if (after_wait(self, wrc, stuck) < 0)
            return -1;
    }
}

static const char *const recv_kw[] = {"timeout", NULL};

PyDoc_STRVAR(chan_recv_doc,
             "recv($self, timeout=None)\n--\n\n"
             "Receive the next message as a Message: a read-only view of shared memory, "
             "valid until released.  Waits up to `timeout` seconds (None: no limit); raises "
             "Timeout, Closed when every sender has gone and the channel is drained, Busy if "
             "another live receiver holds the channel.");

static PyObject *chan_recv(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *a[1];
    int64_t timeout_ns;
    if (fast_args("recv", args, nargs, kwnames, recv_kw, 0, a) < 0 ||
        parse_timeout(a[0], &timeout_ns) < 0 || chan_check(self) < 0 ||
        ensure_receiver(self) < 0)
        return NULL;
    uint64_t pos, len;
    const uint8_t *p;
    if (next_record(self, timeout_ns, &pos, &p, &len) < 0)
        return NULL;
    return make_message(self, pos, p, len);
}

PyDoc_STRVAR(chan_recv_nowait_doc,
             "recv_nowait($self, /)\n--\n\n"
             "Receive without waiting: raises Empty when no message is ready.");

static PyObject *chan_recv_nowait(ChanObject *self, PyObject *Py_UNUSED(ignored))
{
    if (chan_check(self) < 0 || ensure_receiver(self) < 0)
        return NULL;
    uint64_t pos, len;
    const uint8_t *p;
    if (next_record(self, 0, &pos, &p, &len) < 0)
        return NULL;
    return make_message(self, pos, p, len);
}

static const char *const recv_many_kw[] = {"max_count", "timeout", NULL};

PyDoc_STRVAR(chan_recv_many_doc,
             "recv_many($self, max_count=64, timeout=None)\n--\n\n"
             "Wait for at least one message (as recv), then take every message already "
             "there, up to max_count.  Returns a non-empty list of Message.");

static PyObject *chan_recv_many(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    PyObject *a[2];
    int64_t timeout_ns;
    Py_ssize_t max_count = 64;
    if (fast_args("recv_many", args, nargs, kwnames, recv_many_kw, 0, a) < 0 ||
        parse_timeout(a[1], &timeout_ns) < 0)
        return NULL;
    if (a[0] != NULL && a[0] != Py_None) {
        max_count = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if (max_count == -1 && PyErr_Occurred())
            return NULL;
        if (max_count < 1) {
            PyErr_SetString(PyExc_ValueError, "max_count must be >= 1");
            return NULL;
        }
    }
    /* Allocate before touching the ring: a collection it triggers may run
     * finalizers, even one that closes this channel. */
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    if (chan_check(self) < 0 || ensure_receiver(self) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    uint64_t pos, len;
    const uint8_t *p;
    if (next_record(self, timeout_ns, &pos, &p, &len) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    for (Py_ssize_t i = 0;; i++) {
        PyObject *m = make_message(self, pos, p, len);
        if (m == NULL || PyList_Append(list, m) < 0) {
            Py_XDECREF(m);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(m);
        if (i + 1 >= max_count)
            break;
        int rc = il_ring_peek(&self->ring, &pos, &p, &len);
        if (rc != IL_OK)
            break;
    }
    return list;
}

static const char *const wait_kw[] = {"timeout", NULL};

PyDoc_STRVAR(chan_wait_readable_doc,
             "wait_readable($self, timeout=None)\n--\n\n"
             "Block until recv_nowait() would not raise Empty (a message is ready, or the "
             "channel is closed for receiving); True then, False on timeout.  Takes the "
             "receiver role.  Consumes nothing.");

static PyObject *chan_wait_readable(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *a[1];
    int64_t timeout_ns;
    if (fast_args("wait_readable", args, nargs, kwnames, wait_kw, 0, a) < 0 ||
        parse_timeout(a[0], &timeout_ns) < 0 || chan_check(self) < 0 ||
        ensure_receiver(self) < 0)
        return NULL;
    int64_t deadline = deadline_for(timeout_ns);
    il_ring_reader_flush(&self->ring);
    int64_t stuck_since = 0;
    uint64_t stuck_at = 0;
    for (;;) {
        if (il_ring_readable(&self->ring, self->ring.head))
            Py_RETURN_TRUE;
        uint64_t w = atomic_load_explicit(&self->ring.ctrl->write_pos, memory_order_acquire);
        int empty = w == self->ring.head;
        if (!empty && check_stuck(self, &stuck_since, &stuck_at) < 0)
            return NULL;
        if (empty && closed_for_recv(self))
            Py_RETURN_TRUE;
        if (il_now_ns() >= deadline)
            Py_RETURN_FALSE;
        int wrc = block(self, 0, 0, deadline, empty ? SLICE_EMPTY_NS : SLICE_STUCK_NS);
        if (after_wait(self, wrc, !empty) < 0)
            return NULL;
    }
}

static const char *const wait_space_kw[] = {"size", "timeout", NULL};

PyDoc_STRVAR(chan_wait_writable_doc,
             "wait_writable($self, size, timeout=None)\n--\n\n"
             "Block until a message of `size` bytes may fit, or the receiver has gone; True "
             "then, False on timeout.  Reserves nothing.");

static PyObject *chan_wait_writable(ChanObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *a[2];
    int64_t timeout_ns;
    if (fast_args("wait_writable", args, nargs, kwnames, wait_space_kw, 1, a) < 0 ||
        parse_timeout(a[1], &timeout_ns) < 0)
        return NULL;
    Py_ssize_t size = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0)
        size = 0;
    if (chan_check(self) < 0)
        return NULL;
    if ((uint64_t)size > il_ring_max_payload(&self->ring)) {
        PyErr_Format(self->st->MessageTooLarge,
                     "a message of %zd bytes can never fit: this channel carries at most %llu "
                     "bytes per message",
                     size, (unsigned long long)il_ring_max_payload(&self->ring));
        return NULL;
    }
    uint64_t need = il_rec_size((uint64_t)size);
    int64_t deadline = deadline_for(timeout_ns);
    for (;;) {
        if (il_ring_free_bytes(&self->ring) >= need || closed_for_send(self))
            Py_RETURN_TRUE;
        if (il_now_ns() >= deadline)
            Py_RETURN_FALSE;
        int wrc = block(self, 1, need, deadline, SLICE_EMPTY_NS);
        if (after_wait(self, wrc, 0) < 0)
            return NULL;
    }
}

PyDoc_STRVAR(chan_lend_doc,
             "_lend($self, ttl=60.0, /)\n--\n\n"
             "Reserve a sender slot for a process that will open this channel from a pickle "
             "within `ttl` seconds; returns the (slot, word) token to pass to _bind.  Until "
             "adopted or expired, the slot counts as a sender, so the receiver does not see "
             "end-of-stream while the handle is in flight.");

static PyObject *chan_lend(ChanObject *self, PyObject *args)
{
    double ttl = 60.0;
    if (!PyArg_ParseTuple(args, "|d:_lend", &ttl))
        return NULL;
    if (chan_check(self) < 0)
        return NULL;
    if (!(ttl > 0.0) || ttl > 86400.0) {
        PyErr_SetString(PyExc_ValueError, "ttl must be within (0, 86400] seconds");
        return NULL;
    }
    int rc = il_ring_lend(&self->ring, self->ident, il_boottime_ms() + (uint64_t)(ttl * 1000.0),
                          &self->lend_slot, &self->lend_word);
    if (rc != IL_OK)
        return raise_status(self->st, rc, "pickle");
    return Py_BuildValue("(IK)", self->lend_slot, (unsigned long long)self->lend_word);
}

PyDoc_STRVAR(chan_reclaim_doc,
             "_reclaim($self, /)\n--\n\n"
             "Free attach slots of dead processes (and a dead receiver's role); returns how "
             "many.");

static PyObject *chan_reclaim(ChanObject *self, PyObject *Py_UNUSED(ignored))
{
    if (chan_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(il_ring_reclaim_dead(&self->ring));
}

PyDoc_STRVAR(chan_stats_doc,
             "_stats($self, /)\n--\n\n"
             "A dict of counters: capacity, used, senders, receiver_pid, skipped, sent, "
             "received, write_pos, read_pos.");

static PyObject *chan_stats(ChanObject *self, PyObject *Py_UNUSED(ignored))
{
    if (chan_check(self) < 0)
        return NULL;
    il_ring_ctrl *c = self->ring.ctrl;
    if (self->receiver && self->fork_gen == il_fork_generation())
        il_ring_reader_flush(&self->ring);
    uint64_t rp = atomic_load_explicit(&c->read_pos, memory_order_acquire);
    uint64_t wp = atomic_load_explicit(&c->write_pos, memory_order_acquire);
    uint64_t rid = atomic_load_explicit(&c->receiver, memory_order_acquire);
    unsigned senders = 0;
    for (uint32_t i = 0; i < IL_SEG_SLOTS && i < self->ring.hdr->nslots; i++) {
        uint64_t word =
            atomic_load_explicit(&self->ring.hdr->slots[i].ident, memory_order_acquire);
        if (word != 0 && (il_ident_roles(word) & IL_ROLE_SENDER))
            senders++;
    }
    return Py_BuildValue(
        "{s:K,s:K,s:I,s:I,s:K,s:K,s:K,s:K,s:K}", "capacity", (unsigned long long)self->ring.cap,
        "used", (unsigned long long)(wp - rp), "senders", senders, "receiver_pid",
        rid ? il_ident_pid(rid) : 0u, "skipped",
        (unsigned long long)atomic_load_explicit(&c->skipped, memory_order_relaxed), "sent",
        (unsigned long long)self->n_sent, "received", (unsigned long long)self->n_received,
        "write_pos", (unsigned long long)wp, "read_pos", (unsigned long long)rp);
}

static PyObject *chan_get_capacity(ChanObject *self, void *Py_UNUSED(closure))
{
    if (!self->has_buf)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(self->ring.cap);
}

static PyObject *chan_get_max_message_size(ChanObject *self, void *Py_UNUSED(closure))
{
    if (!self->has_buf)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(il_ring_max_payload(&self->ring));
}

static PyObject *chan_get_closed(ChanObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyMethodDef chan_methods[] = {
    {"_bind", (PyCFunction)chan_bind, METH_VARARGS, chan_bind_doc},
    {"_lend", (PyCFunction)chan_lend, METH_VARARGS, chan_lend_doc},
    {"_close", (PyCFunction)chan_close, METH_NOARGS, chan_close_doc},
    {"send", (PyCFunction)(void (*)(void))chan_send, METH_FASTCALL | METH_KEYWORDS,
     chan_send_doc},
    {"send_nowait", (PyCFunction)chan_send_nowait, METH_O, chan_send_nowait_doc},
    {"send_many", (PyCFunction)(void (*)(void))chan_send_many, METH_FASTCALL | METH_KEYWORDS,
     chan_send_many_doc},
    {"loan", (PyCFunction)(void (*)(void))chan_loan, METH_FASTCALL | METH_KEYWORDS,
     chan_loan_doc},
    {"recv", (PyCFunction)(void (*)(void))chan_recv, METH_FASTCALL | METH_KEYWORDS,
     chan_recv_doc},
    {"recv_nowait", (PyCFunction)chan_recv_nowait, METH_NOARGS, chan_recv_nowait_doc},
    {"recv_many", (PyCFunction)(void (*)(void))chan_recv_many, METH_FASTCALL | METH_KEYWORDS,
     chan_recv_many_doc},
    {"wait_readable", (PyCFunction)(void (*)(void))chan_wait_readable,
     METH_FASTCALL | METH_KEYWORDS, chan_wait_readable_doc},
    {"wait_writable", (PyCFunction)(void (*)(void))chan_wait_writable,
     METH_FASTCALL | METH_KEYWORDS, chan_wait_writable_doc},
    {"_reclaim", (PyCFunction)chan_reclaim, METH_NOARGS, chan_reclaim_doc},
    {"_stats", (PyCFunction)chan_stats, METH_NOARGS, chan_stats_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef chan_getset[] = {
    {"capacity", (getter)chan_get_capacity, NULL, "Data bytes of the ring.", NULL},
    {"max_message_size", (getter)chan_get_max_message_size, NULL,
     "Largest message the channel can ever carry.", NULL},
    {"closed", (getter)chan_get_closed, NULL, "Whether this handle is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef chan_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ChanObject, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(ChanObject, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot chan_slots[] = {
    {Py_tp_doc, "The native half of interlink.Channel: one handle on a channel segment."},
    {Py_tp_new, chan_new},
    {Py_tp_dealloc, chan_dealloc},
    {Py_tp_traverse, chan_traverse},
    {Py_tp_clear, chan_clear},
    {Py_tp_methods, chan_methods},
    {Py_tp_getset, chan_getset},
    {Py_tp_members, chan_members},
    {0, NULL},
};

static PyType_Spec chan_spec = {
    "interlink._native.ChannelCore",
    sizeof(ChanObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    chan_slots,
};

/* ======================================================================= */
/* Message                                                                 */
/* ======================================================================= */

static void message_do_release(MessageObject *m)
{
    ChanObject *c = m->chan;
    m->state = 2;
    if (c->has_buf && c->receiver && !c->closed && m->epoch == c->epoch &&
        c->fork_gen == il_fork_generation())
        il_ring_release(&c->ring, m->pos, m->len);
    c->live--;
    chan_maybe_release_buffer(c);
}

static void message_dealloc(MessageObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    if (m->state != 2)
        message_do_release(m);
    Py_DECREF(m->chan);
    PyObject_Free(m);
    Py_DECREF(tp);
}

static int message_getbuffer(MessageObject *m, Py_buffer *view, int flags)
{
    if (m->state != 0) {
        PyErr_SetString(PyExc_BufferError, "message has been released");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)m, (void *)m->ptr, (Py_ssize_t)m->len, 1, flags) <
        0)
        return -1;
    m->exports++;
    return 0;
}

static void message_releasebuffer(MessageObject *m, Py_buffer *Py_UNUSED(view))
{
    m->exports--;
    if (m->exports == 0 && m->state == 1)
        message_do_release(m);
}

PyDoc_STRVAR(message_release_doc,
             "release($self, /)\n--\n\n"
             "Give the message's space back to the channel.  If views of it (memoryview, "
             "numpy arrays) are still alive, the space is given back when the last one goes; "
             "new views can no longer be made.  Idempotent.");

static PyObject *message_release(MessageObject *m, PyObject *Py_UNUSED(ignored))
{
    if (m->state == 0) {
        m->state = 1;
        if (m->exports == 0)
            message_do_release(m);
    }
    Py_RETURN_NONE;
}

static PyObject *message_enter(MessageObject *m, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(m);
}

static PyObject *message_exit(MessageObject *m, PyObject *const *Py_UNUSED(args),
                              Py_ssize_t Py_UNUSED(nargs))
{
    return message_release(m, NULL);
}

PyDoc_STRVAR(message_tobytes_doc,
             "tobytes($self, /)\n--\n\nA copy of the message's bytes.");

static PyObject *message_tobytes(MessageObject *m, PyObject *Py_UNUSED(ignored))
{
    if (m->state != 0) {
        PyErr_SetString(PyExc_BufferError, "message has been released");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)m->ptr, (Py_ssize_t)m->len);
}

static Py_ssize_t message_len(MessageObject *m) { return (Py_ssize_t)m->len; }

static PyObject *message_get_released(MessageObject *m, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(m->state != 0);
}

static PyObject *message_get_nbytes(MessageObject *m, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(m->len);
}

static PyObject *message_repr(MessageObject *m)
{
    return PyUnicode_FromFormat("<interlink.Message %llu bytes%s>", (unsigned long long)m->len,
                                m->state ? " released" : "");
}

static PyMethodDef message_methods[] = {
    {"release", (PyCFunction)message_release, METH_NOARGS, message_release_doc},
    {"tobytes", (PyCFunction)message_tobytes, METH_NOARGS, message_tobytes_doc},
    {"__enter__", (PyCFunction)message_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))message_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef message_getset[] = {
    {"released", (getter)message_get_released, NULL, "Whether release() was called.", NULL},
    {"nbytes", (getter)message_get_nbytes, NULL, "Length of the message in bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot message_slots[] = {
    {Py_tp_doc, "A received message: a read-only buffer that views the channel's shared "
                "memory until released."},
    {Py_tp_dealloc, message_dealloc},
    {Py_tp_methods, message_methods},
    {Py_tp_getset, message_getset},
    {Py_tp_repr, message_repr},
    {Py_bf_getbuffer, message_getbuffer},
    {Py_bf_releasebuffer, message_releasebuffer},
    {Py_sq_length, message_len},
    {0, NULL},
};

static PyType_Spec message_spec = {
    "interlink.Message",
    sizeof(MessageObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    message_slots,
};

/* ======================================================================= */
/* Loan                                                                    */
/* ======================================================================= */

static void loan_uncount(LoanObject *l)
{
    /* The mapping must outlive every view of the loan, committed or not. */
    if (l->counted && l->state != 0 && l->exports == 0) {
        l->counted = 0;
        l->chan->live--;
        chan_maybe_release_buffer(l->chan);
    }
}

static void loan_finish(LoanObject *l, int commit, uint64_t len)
{
    ChanObject *c = l->chan;
    if (l->prev)
        l->prev->next = l->next;
    else if (c->loans == l)
        c->loans = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    if (c->has_buf && !c->closed && l->fork_gen == il_fork_generation()) {
        if (commit)
            il_ring_commit(&c->ring, l->pos, l->reserved, len);
        else
            il_ring_abort(&c->ring, l->pos, l->reserved);
        il_ring_notify_reader(&c->ring);
        if (commit)
            c->n_sent++;
    }
    l->state = commit ? 1 : 2;
    loan_uncount(l);
}

static void abort_open_loans(ChanObject *self)
{
    /* A reservation must never outlive its slot: once the slot is free, a new
     * holder would look like the live writer of the record. */
    while (self->loans)
        loan_finish(self->loans, 0, 0);
}

static void loan_dealloc(LoanObject *l)
{
    PyTypeObject *tp = Py_TYPE(l);
    if (l->state == 0)
        loan_finish(l, 0, 0); /* a loan never committed must not block the reader */
    Py_XDECREF(l->view);
    Py_DECREF(l->chan);
    PyObject_Free(l);
    Py_DECREF(tp);
}

static int loan_getbuffer(LoanObject *l, Py_buffer *view, int flags)
{
    if (l->state != 0) {
        PyErr_SetString(PyExc_BufferError, "loan has been committed or aborted");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)l, l->ptr, (Py_ssize_t)l->reserved, 0, flags) < 0)
        return -1;
    l->exports++;
    return 0;
}

static void loan_releasebuffer(LoanObject *l, Py_buffer *Py_UNUSED(view))
{
    l->exports--;
    loan_uncount(l);
}

static const char *const commit_kw[] = {"nbytes", NULL};

PyDoc_STRVAR(loan_commit_doc,
             "commit($self, nbytes=None)\n--\n\n"
             "Send the loan's first `nbytes` bytes (default: all) as one message.  Views "
             "made of the loan must not be written afterwards.");

static PyObject *loan_commit(LoanObject *l, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *a[1];
    if (fast_args("commit", args, nargs, kwnames, commit_kw, 0, a) < 0)
        return NULL;
    Py_ssize_t v = -1;
    if (a[0] != NULL && a[0] != Py_None) {
        /* Convert first: __index__ may run arbitrary code (even close()). */
        v = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 0) {
            PyErr_SetString(PyExc_ValueError, "nbytes must be >= 0");
            return NULL;
        }
    }
    if (l->chan->closed) {
        PyErr_SetString(l->chan->st->Closed,
                        "the channel handle was closed; the loan was dropped");
        return NULL;
    }
    if (l->state != 0) {
        PyErr_SetString(l->chan->st->InterlinkError, "loan already committed or aborted");
        return NULL;
    }
    uint64_t n = l->reserved;
    if (v >= 0) {
        if ((uint64_t)v > l->reserved) {
            PyErr_Format(PyExc_ValueError, "nbytes must be between 0 and %llu",
                         (unsigned long long)l->reserved);
            return NULL;
        }
        n = (uint64_t)v;
    }
    loan_finish(l, 1, n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(loan_abort_doc,
             "abort($self, /)\n--\n\nDrop the loan: nothing is sent.  Idempotent after commit "
             "or abort.");

static PyObject *loan_abort(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (l->state == 0)
        loan_finish(l, 0, 0);
    Py_RETURN_NONE;
}

static PyObject *loan_enter(LoanObject *l, PyObject *Py_UNUSED(ignored))
{
    if (l->state != 0) {
        PyErr_SetString(l->chan->st->InterlinkError, "loan already committed or aborted");
        return NULL;
    }
    if (l->view == NULL) {
        l->view = PyMemoryView_FromObject((PyObject *)l);
        if (l->view == NULL)
            return NULL;
    }
    return Py_NewRef(l->view);
}

static PyObject *loan_exit(LoanObject *l, PyObject *const *args, Py_ssize_t nargs)
{
    int failed = nargs > 0 && args[0] != Py_None;
    if (l->view != NULL) {
        PyObject *r = PyObject_CallMethod(l->view, "release", NULL);
        if (r == NULL)
            PyErr_Clear(); /* views made from it are still alive; harmless */
        Py_XDECREF(r);
        Py_CLEAR(l->view);
    }
    if (l->state == 0)
        loan_finish(l, !failed, l->reserved);
    Py_RETURN_FALSE;
}

static Py_ssize_t loan_len(LoanObject *l) { return (Py_ssize_t)l->reserved; }

static PyMethodDef loan_methods[] = {
    {"commit", (PyCFunction)(void (*)(void))loan_commit, METH_FASTCALL | METH_KEYWORDS,
     loan_commit_doc},
    {"abort", (PyCFunction)loan_abort, METH_NOARGS, loan_abort_doc},
    {"__enter__", (PyCFunction)loan_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))loan_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot loan_slots[] = {
    {Py_tp_doc, "Room reserved in a channel, written in place, then committed as a message."},
    {Py_tp_dealloc, loan_dealloc},
    {Py_tp_methods, loan_methods},
    {Py_bf_getbuffer, loan_getbuffer},
    {Py_bf_releasebuffer, loan_releasebuffer},
    {Py_sq_length, loan_len},
    {0, NULL},
};

static PyType_Spec loan_spec = {
    "interlink.Loan",
    sizeof(LoanObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    loan_slots,
};

/* ======================================================================= */
/* Module-level functions: segments, identities                            */
/* ======================================================================= */

static int get_header(PyObject *obj, Py_buffer *view, il_seg_header **h)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return -1;
    if ((size_t)view->len < IL_SEG_HEADER_SIZE) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "buffer smaller than a segment header");
        return -1;
    }
    *h = (il_seg_header *)view->buf;
    return 0;
}

PyDoc_STRVAR(self_ident_doc, "self_ident($module, /)\n--\n\nThis process's identity word.");

static PyObject *mod_self_ident(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    uint64_t id = il_ident_self();
    if (id == 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLongLong(id);
}

PyDoc_STRVAR(ident_alive_doc,
             "ident_alive($module, ident, /)\n--\n\nWhether the process named by an identity "
             "word is running (zombies are dead).");

static PyObject *mod_ident_alive(PyObject *Py_UNUSED(m), PyObject *arg)
{
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (id == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int alive;
    Py_BEGIN_ALLOW_THREADS
    alive = il_ident_alive(id);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(alive);
}

PyDoc_STRVAR(seg_publish_doc,
             "seg_publish($module, buffer, /)\n--\n\nStore the header magic (release): the "
             "segment is ready for others.");

static PyObject *mod_seg_publish(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    il_seg_header *h;
    if (get_header(arg, &v, &h) < 0)
        return NULL;
    il_seg_publish(h);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(seg_magic_doc,
             "seg_magic($module, buffer, /)\n--\n\nThe header magic, read with acquire "
             "(0 while the creator is formatting).");

static PyObject *mod_seg_magic(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    il_seg_header *h;
    if (get_header(arg, &v, &h) < 0)
        return NULL;
    uint64_t magic = il_seg_magic(h);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLongLong(magic);
}

PyDoc_STRVAR(seg_attach_doc,
             "seg_attach($module, buffer, roles=0, /)\n--\n\nClaim a free attach slot for this "
             "process; returns its index, or -1 when every slot is taken.");

static PyObject *mod_seg_attach(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned int roles = 0;
    if (!PyArg_ParseTuple(args, "O|I:seg_attach", &obj, &roles))
        return NULL;
    Py_buffer v;
    il_seg_header *h;
    if (get_header(obj, &v, &h) < 0)
        return NULL;
    uint64_t id = il_ident_self();
    uint32_t slot = 0;
    int rc = id ? il_seg_attach(h, id, roles & 15u, &slot) : IL_INVALID;
    PyBuffer_Release(&v);
    if (rc == IL_INVALID)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(rc == IL_OK ? (long)slot : -1L);
}

PyDoc_STRVAR(seg_detach_doc,
             "seg_detach($module, buffer, slot, /)\n--\n\nFree an attach slot this process "
             "holds.");

static PyObject *mod_seg_detach(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned int slot;
    if (!PyArg_ParseTuple(args, "OI:seg_detach", &obj, &slot))
        return NULL;
    Py_buffer v;
    il_seg_header *h;
    if (get_header(obj, &v, &h) < 0)
        return NULL;
    il_seg_detach(h, slot, il_ident_self());
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(seg_users_doc,
             "seg_users($module, buffer, /)\n--\n\nThe attach table: a list of (slot, pid, "
             "ident, roles, alive) for every taken slot.");

static PyObject *mod_seg_users(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    il_seg_header *h;
    if (get_header(arg, &v, &h) < 0)
        return NULL;
    uint64_t words[IL_SEG_SLOTS];
    uint32_t n = h->nslots > IL_SEG_SLOTS ? IL_SEG_SLOTS : h->nslots;
    for (uint32_t i = 0; i < n; i++)
        words[i] = atomic_load_explicit(&h->slots[i].ident, memory_order_acquire);
    PyBuffer_Release(&v);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (words[i] == 0)
            continue;
        int alive;
        Py_BEGIN_ALLOW_THREADS
        alive = il_ident_alive(words[i]);
        Py_END_ALLOW_THREADS
        PyObject *t = Py_BuildValue("(IIKIO)", i, il_ident_pid(words[i]),
                                    (unsigned long long)il_ident_bare(words[i]),
                                    il_ident_roles(words[i]), alive ? Py_True : Py_False);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

PyDoc_STRVAR(seg_reclaim_plain_doc,
             "seg_reclaim_plain($module, buffer, /)\n--\n\nFree the slots of dead processes "
             "(for kinds without per-slot state); returns how many.");

static PyObject *mod_seg_reclaim_plain(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_buffer v;
    il_seg_header *h;
    if (get_header(arg, &v, &h) < 0)
        return NULL;
    uint32_t n = il_seg_reclaim_plain(h);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(n);
}

PyDoc_STRVAR(ring_segment_size_doc,
             "ring_segment_size($module, capacity, /)\n--\n\nBytes of a channel segment whose "
             "ring holds `capacity` data bytes.");

static PyObject *mod_ring_segment_size(PyObject *Py_UNUSED(m), PyObject *arg)
{
    unsigned long long cap = PyLong_AsUnsignedLongLong(arg);
    if (cap == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(il_ring_segment_size(cap));
}

PyDoc_STRVAR(ring_format_doc,
             "ring_format($module, buffer, capacity, key, /)\n--\n\nFormat the ring area of a "
             "new channel segment.");

static PyObject *mod_ring_format(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned long long cap, key;
    if (!PyArg_ParseTuple(args, "OKK:ring_format", &obj, &cap, &key))
        return NULL;
    Py_buffer v;
    il_seg_header *h;
    if (get_header(obj, &v, &h) < 0)
        return NULL;
    int rc = il_ring_format(v.buf, (uint64_t)v.len, cap, key);
    PyBuffer_Release(&v);
    if (rc != IL_OK) {
        PyErr_SetString(PyExc_ValueError, "invalid ring capacity or segment size");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"self_ident", mod_self_ident, METH_NOARGS, self_ident_doc},
    {"ident_alive", mod_ident_alive, METH_O, ident_alive_doc},
    {"seg_publish", mod_seg_publish, METH_O, seg_publish_doc},
    {"seg_magic", mod_seg_magic, METH_O, seg_magic_doc},
    {"seg_attach", mod_seg_attach, METH_VARARGS, seg_attach_doc},
    {"seg_detach", mod_seg_detach, METH_VARARGS, seg_detach_doc},
    {"seg_users", mod_seg_users, METH_O, seg_users_doc},
    {"seg_reclaim_plain", mod_seg_reclaim_plain, METH_O, seg_reclaim_plain_doc},
    {"ring_segment_size", mod_ring_segment_size, METH_O, ring_segment_size_doc},
    {"ring_format", mod_ring_format, METH_VARARGS, ring_format_doc},
    {NULL, NULL, 0, NULL},
};

/* ======================================================================= */
/* Module init                                                             */
/* ======================================================================= */

static int load_error(PyObject *errors, const char *name, PyObject **slot)
{
    *slot = PyObject_GetAttrString(errors, name);
    return *slot ? 0 : -1;
}

static int add_int(PyObject *m, const char *name, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(m, name, o);
    Py_DECREF(o);
    return rc;
}

int il_queue_exec(PyObject *m, module_state *st); /* module_queue.c */
int il_topic_exec(PyObject *m, module_state *st); /* module_topic.c */

static int native_exec(PyObject *m)
{
    module_state *st = (module_state *)PyModule_GetState(m);
    PyObject *errors = PyImport_ImportModule("interlink.errors");
    if (errors == NULL)
        return -1;
    int bad = load_error(errors, "InterlinkError", &st->InterlinkError) ||
              load_error(errors, "Timeout", &st->Timeout) ||
              load_error(errors, "Empty", &st->Empty) || load_error(errors, "Full", &st->Full) ||
              load_error(errors, "Closed", &st->Closed) ||
              load_error(errors, "Corrupt", &st->Corrupt) ||
              load_error(errors, "MessageTooLarge", &st->MessageTooLarge) ||
              load_error(errors, "Busy", &st->Busy);
    Py_DECREF(errors);
    if (bad)
        return -1;
    st->ChannelCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &chan_spec, NULL);
    st->MessageType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &message_spec, NULL);
    st->LoanType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &loan_spec, NULL);
    if (!st->ChannelCoreType || !st->MessageType || !st->LoanType)
        return -1;
    if (PyModule_AddType(m, st->ChannelCoreType) < 0 ||
        PyModule_AddType(m, st->MessageType) < 0 || PyModule_AddType(m, st->LoanType) < 0)
        return -1;
    if (add_int(m, "SEG_MAGIC", (long long)IL_SEG_MAGIC) < 0 ||
        add_int(m, "SEG_LAYOUT", IL_SEG_LAYOUT) < 0 ||
        add_int(m, "SEG_HEADER_SIZE", IL_SEG_HEADER_SIZE) < 0 ||
        add_int(m, "SEG_SLOTS", IL_SEG_SLOTS) < 0 ||
        add_int(m, "KIND_CHANNEL", IL_KIND_CHANNEL) < 0 ||
        add_int(m, "KIND_LOCK", IL_KIND_LOCK) < 0 || add_int(m, "KIND_RLOCK", IL_KIND_RLOCK) < 0 ||
        add_int(m, "KIND_SEMAPHORE", IL_KIND_SEMAPHORE) < 0 ||
        add_int(m, "KIND_BOUNDED_SEMAPHORE", IL_KIND_BOUNDED_SEMAPHORE) < 0 ||
        add_int(m, "ROLE_SENDER", IL_ROLE_SENDER) < 0 ||
        add_int(m, "ROLE_PENDING", IL_ROLE_PENDING) < 0 ||
        add_int(m, "ROLE_LENT", IL_ROLE_LENT) < 0 ||
        add_int(m, "RING_MIN_CAPACITY", IL_RING_MIN_CAPACITY) < 0 ||
        add_int(m, "RING_MAX_CAPACITY", (long long)IL_RING_MAX_CAPACITY) < 0 ||
        add_int(m, "RING_CTRL_OFFSET", IL_SEG_HEADER_SIZE) < 0 ||
        add_int(m, "RING_DATA_OFFSET", IL_RING_DATA_OFFSET) < 0 ||
        add_int(m, "RING_WRITE_POS_OFFSET",
                IL_SEG_HEADER_SIZE + offsetof(il_ring_ctrl, write_pos)) < 0 ||
        add_int(m, "RING_READ_POS_OFFSET",
                IL_SEG_HEADER_SIZE + offsetof(il_ring_ctrl, read_pos)) < 0 ||
        add_int(m, "RING_CAPACITY_OFFSET",
                IL_SEG_HEADER_SIZE + offsetof(il_ring_ctrl, capacity)) < 0 ||
        add_int(m, "RING_RECEIVER_OFFSET",
                IL_SEG_HEADER_SIZE + offsetof(il_ring_ctrl, receiver)) < 0 ||
        add_int(m, "REC_HEADER", IL_REC_HDR) < 0)
        return -1;
    if (il_sync_exec(m, st) < 0 || il_rwlock_exec(m, st) < 0 || il_queue_exec(m, st) < 0 ||
        il_topic_exec(m, st) < 0)
        return -1;
    return il_events_exec(m, st);
}

static int native_traverse(PyObject *m, visitproc visit, void *arg)
{
    module_state *st = (module_state *)PyModule_GetState(m);
    Py_VISIT(st->InterlinkError);
    Py_VISIT(st->Timeout);
    Py_VISIT(st->Empty);
    Py_VISIT(st->Full);
    Py_VISIT(st->Closed);
    Py_VISIT(st->Corrupt);
    Py_VISIT(st->MessageTooLarge);
    Py_VISIT(st->Busy);
    Py_VISIT(st->ChannelCoreType);
    Py_VISIT(st->MessageType);
    Py_VISIT(st->LoanType);
    Py_VISIT(st->LockCoreType);
    Py_VISIT(st->SemaphoreCoreType);
    return 0;
}

static int native_clear(PyObject *m)
{
    module_state *st = (module_state *)PyModule_GetState(m);
    Py_CLEAR(st->InterlinkError);
    Py_CLEAR(st->Timeout);
    Py_CLEAR(st->Empty);
    Py_CLEAR(st->Full);
    Py_CLEAR(st->Closed);
    Py_CLEAR(st->Corrupt);
    Py_CLEAR(st->MessageTooLarge);
    Py_CLEAR(st->Busy);
    Py_CLEAR(st->ChannelCoreType);
    Py_CLEAR(st->MessageType);
    Py_CLEAR(st->LoanType);
    Py_CLEAR(st->LockCoreType);
    Py_CLEAR(st->SemaphoreCoreType);
    return 0;
}

static void native_free(void *m) { native_clear((PyObject *)m); }

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {0, NULL},
};

struct PyModuleDef il_native_module = {
    PyModuleDef_HEAD_INIT,
    "interlink._native",
    "The compiled core of interlink: rings, futexes and segment headers.",
    sizeof(module_state),
    module_methods,
    native_slots,
    native_traverse,
    native_clear,
    native_free,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&il_native_module); }
