/* module_queue.c - the CPython glue of queueword.c: QueueCore and
 * QueueMessage (the compiled halves of interlink.Queue / JoinableQueue /
 * SimpleQueue; _queue.py adds naming, codecs, life cycle and pickling).
 *
 * Segment layout: page 0 is the header (seg.h), the queue (queueword.h)
 * follows at IL_SEG_HEADER_SIZE.
 *
 * Calls follow module_sync.c / module_events.c: a first attempt under the GIL
 * with a spin-only mutex budget (no syscalls); if that cannot finish, the GIL
 * is released around one bounded step at a time (the operation with a mutex
 * budget of one slice, then a futex sleep of at most one slice); back under
 * the GIL, PyErr_CheckSignals() runs, a handle closed meanwhile raises Closed,
 * and after an elapsed sleep dead owners are recovered (at most once per
 * RECOVER_INTERVAL per queue).  docs/design/queue-core.md section 10.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "glue.h"
#include "il_common.h"
#include "proc.h"
#include "queueword.h"
#include "seg.h"

#define Q_SLICE_NS (20 * 1000 * 1000LL)
#define Q_RECOVER_INTERVAL_NS (50 * 1000 * 1000LL)
#define Q_MANY_MAX 256u
#define Q_SPIN_MIN_NS 2000LL
#define Q_SPIN_MAX_NS 100000LL

typedef struct {
    il_handle base;  /* base.live: QueueMessage objects that view the mapping */
    il_qh h;
    int64_t spin_ns; /* adaptive spin of a consumer before it registers and sleeps */
    /* The object path (_fast_setup; docs/design/queue.md section 7): small
     * pickles are framed on put and unframed on get here, in one call;
     * everything else is handed to the Queue's own Python path. */
    il_pickler pk;          /* pk.dumps NULL: _put_obj always defers */
    PyObject *f_loads;      /* pickle.loads, or NULL: _get_obj hands every record to f_decode */
    PyObject *f_encode_name; /* "encode" */
    PyObject *f_decode;     /* record -> object: every record the fast path does not take */
    PyObject *f_errors;     /* payload parser errors: reported as Corrupt */
    PyObject *f_owner;      /* weak reference to the Queue (no cycle) */
    PyObject *f_put_slow;   /* (queue, obj, block, timeout, priority): the Python put */
    PyObject *f_get_slow;   /* (queue, block, timeout): the Python get */
    PyObject *f_closed;     /* exception type raised when the Queue is gone */
    int f_defer;            /* _put_obj / _get_obj always defer (e.g. a sync="always" queue) */
    uint8_t f_tail[8];      /* the codec's trailer of a plain pickle record */
} QObject;

typedef struct {
    PyObject_HEAD
    QObject *q;
    il_q_msg m;
    const uint8_t *ptr;
    uint64_t ident;   /* the identity that took it */
    int state;        /* 0 live, 1 release requested (views alive), 2 done */
    int nack;         /* the pending release is a nack */
    Py_ssize_t exports;
} QMsgObject;

static PyTypeObject *g_qmsg_type; /* set by il_queue_exec (a strong reference) */

/* ======================================================================= */
/* handle life cycle                                                       */
/* ======================================================================= */

static void q_free_extra(il_handle *h);

static const il_handle_ops q_ops = {
    .closed_msg = "this queue handle is closed",
    .closed_meanwhile_msg = "this queue handle was closed while in use",
    .fork_gen = il_fork_generation,
    .free_extra = q_free_extra,
};

static PyObject *q_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    QObject *self = (QObject *)il_handle_new(type, &q_ops);
    if (self != NULL)
        self->spin_ns = 20000;
    return (PyObject *)self;
}

/* Refuse a closed handle; a forked child attaches as a new user. */
static int q_check(QObject *self) { return il_handle_check(&self->base, il_fork_generation()); }

static int q_attach_area(void *area, void *mem, uint64_t len)
{
    return il_q_attach((il_qh *)area, mem, len);
}

static PyObject *q_bind(QObject *self, PyObject *buffer)
{
    if (il_handle_bind_area(&self->base, buffer, "queue", q_attach_area, &self->h) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int q_traverse(QObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base.dict);
    Py_VISIT(self->f_loads);
    Py_VISIT(self->f_encode_name);
    Py_VISIT(self->f_decode);
    Py_VISIT(self->f_errors);
    Py_VISIT(self->f_owner);
    Py_VISIT(self->f_put_slow);
    Py_VISIT(self->f_get_slow);
    Py_VISIT(self->f_closed);
    return il_pickler_traverse(&self->pk, visit, arg);
}

/* The object path's references but the pickler's (il_pickler_set replaces
 * that one). */
static void q_fast_clear(QObject *self)
{
    Py_CLEAR(self->f_loads);
    Py_CLEAR(self->f_encode_name);
    Py_CLEAR(self->f_decode);
    Py_CLEAR(self->f_errors);
    Py_CLEAR(self->f_owner);
    Py_CLEAR(self->f_put_slow);
    Py_CLEAR(self->f_get_slow);
    Py_CLEAR(self->f_closed);
}

static int q_clear(QObject *self)
{
    Py_CLEAR(self->base.dict);
    il_pickler_clear(&self->pk);
    q_fast_clear(self);
    return 0;
}

static void q_free_extra(il_handle *h)
{
    il_pickler_clear(&((QObject *)h)->pk);
    q_fast_clear((QObject *)h);
}

/* ======================================================================= */
/* status -> exception                                                     */
/* ======================================================================= */

static PyObject *q_raise(QObject *self, int rc, const char *what)
{
    module_state *st = self->base.st;
    switch (rc) {
    case IL_EMPTY:
    case IL_TIMEOUT:
        if (what && strcmp(what, "put") == 0)
            PyErr_SetString(st->Full, "the queue is full");
        else
            PyErr_SetString(st->Empty, "the queue is empty");
        break;
    case IL_FULL:
        PyErr_SetString(st->Full, "the queue is full");
        break;
    case IL_TOOBIG:
        PyErr_Format(st->MessageTooLarge,
                     "message of this size can never fit the queue's arena (%llu bytes)",
                     (unsigned long long)self->h.arena_bytes);
        break;
    case IL_CORRUPT:
        PyErr_SetString(st->Corrupt, "the queue's shared memory failed a consistency check");
        break;
    case IL_INVALID:
        PyErr_Format(PyExc_ValueError, "%s: invalid for this message or queue state",
                     what ? what : "queue");
        break;
    default:
        PyErr_Format(st->InterlinkError, "%s: unexpected status %d", what ? what : "queue", rc);
        break;
    }
    return NULL;
}

/* ======================================================================= */
/* the blocking driver                                                     */
/* ======================================================================= */

/* One attempt of an operation with a mutex budget; called with or without
 * the GIL (it must touch no Python object). */
typedef int (*q_attempt_fn)(QObject *self, void *ctx, int64_t lock_ns);

static inline int64_t q_slice(int64_t deadline)
{
    int64_t left = deadline - il_now_ns();
    if (left < 0)
        left = 0;
    return left < Q_SLICE_NS ? left : Q_SLICE_NS;
}

/* Run `attempt` until it returns something other than IL_BUSY / IL_EINTR /
 * `retry_rc` (IL_EMPTY for consumers, IL_FULL for producers), or the timeout
 * passes (then `retry_rc` is returned).  timeout_ns: -1 forever, 0 a single
 * try.  Returns the status, or -1 with a Python exception set (signal
 * handler raised, handle closed). */
static int q_drive(QObject *self, int kind, int retry_rc, int64_t timeout_ns,
                   q_attempt_fn attempt, void *ctx)
{
    int rc = attempt(self, ctx, 0); /* GIL held: spin-only mutex, no syscalls */
    if (rc != IL_BUSY && rc != IL_EINTR && rc != retry_rc)
        return rc;
    int64_t deadline = deadline_for(timeout_ns);
    if (timeout_ns == 0) {
        /* non-blocking: still get past a busy mutex, and give dead owners'
         * messages / room back if that is due */
        int did = 0;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        if (rc == retry_rc && il_q_recover_due(&self->h, Q_RECOVER_INTERVAL_NS)) {
            il_q_recover_dead(&self->h, self->base.ident, Q_SLICE_NS, NULL);
            did = 1;
        }
        if (rc != retry_rc || did)
            rc = attempt(self, ctx, Q_SLICE_NS);
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (il_handle_closed_meanwhile(&self->base))
            return -1;
        if (rc == IL_BUSY || rc == IL_EINTR)
            rc = retry_rc;
        return rc;
    }
    /* maintenance calls pass retry_rc < 0: they only wait for the mutex and
     * register as no kind of waiter */
    const int reg = retry_rc >= 0;
    il_q_waiter w;
    if (reg)
        il_q_wait_begin(&w, &self->h, self->base.ident, kind);
    if (kind == IL_Q_WAIT_GET && rc == IL_EMPTY) {
        /* A consumer first spins a little, GIL released, registered and
         * flagged as spinning: producers then make no wake syscall (a futex
         * sleep + wake costs several microseconds and a context switch, for
         * the sleeper and the producer).  The spin adapts: doubled when it
         * pays, halved when not. */
        int64_t spin = self->spin_ns;
        int found = 0;
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        il_q_wait_spinning(&w, 1);
        int64_t until = il_now_ns() + spin;
        if (until > deadline)
            until = deadline;
        do {
            for (int k = 0; k < 64; k++)
                il_cpu_relax();
            if (il_q_qsize(&self->h) > 0) {
                found = 1;
                break;
            }
        } while (il_now_ns() < until);
        il_q_wait_spinning(&w, 0); /* then the loop below retries before sleeping */
        Py_END_ALLOW_THREADS
        self->base.busy--;
        self->spin_ns = found ? (spin * 2 > Q_SPIN_MAX_NS ? Q_SPIN_MAX_NS : spin * 2)
                              : (spin / 2 < Q_SPIN_MIN_NS ? Q_SPIN_MIN_NS : spin / 2);
        if (il_handle_closed_meanwhile(&self->base)) {
            il_q_wait_end(&w, 0);
            return -1;
        }
    }
    for (;;) {
        int wrc = IL_OK;
        int64_t slice = q_slice(deadline);
        self->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        rc = attempt(self, ctx, slice > 0 ? slice : 0);
        if (reg && rc == retry_rc) {
            slice = q_slice(deadline);
            if (slice > 0) {
                wrc = il_q_wait_sleep(&w, slice);
                if (wrc == IL_TIMEOUT && il_q_recover_due(&self->h, Q_RECOVER_INTERVAL_NS))
                    il_q_recover_dead(&self->h, self->base.ident, Q_SLICE_NS, NULL);
            }
        }
        Py_END_ALLOW_THREADS
        self->base.busy--;
        if (rc != IL_BUSY && rc != IL_EINTR && rc != retry_rc)
            break;
        if (PyErr_CheckSignals() < 0 || il_handle_closed_meanwhile(&self->base)) {
            if (reg)
                il_q_wait_end(&w, 0);
            return -1;
        }
        if (il_now_ns() >= deadline) {
            rc = retry_rc;
            break;
        }
    }
    if (reg)
        il_q_wait_end(&w, rc == IL_OK);
    return rc;
}

/* ======================================================================= */
/* QueueMessage                                                            */
/* ======================================================================= */

/* Run an ack/nack/release to completion (it must not be dropped: a TAKEN
 * entry left behind would never come back while this process lives). */
static int q_finish(QObject *q, const il_q_msg *m, uint64_t ident, int nack)
{
    int rc = nack ? il_q_nack(&q->h, ident, m, 0) : il_q_release(&q->h, ident, m, 0);
    if (rc != IL_BUSY && rc != IL_EINTR)
        return rc;
    q->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    do
        rc = nack ? il_q_nack(&q->h, ident, m, -1) : il_q_release(&q->h, ident, m, -1);
    while (rc == IL_EINTR || rc == IL_BUSY);
    Py_END_ALLOW_THREADS
    q->base.busy--;
    return rc;
}

/* Release (nack = 0) or nack n taken messages, to completion. */
static void settle_many(QObject *q, const il_q_msg *ms, uint32_t n, int nack)
{
    if (n == 0)
        return;
    if (nack) {
        for (uint32_t k = 0; k < n; k++)
            q_finish(q, &ms[k], q->base.ident, 1);
        return;
    }
    int rc = il_q_release_many(&q->h, q->base.ident, ms, n, 0);
    if (rc != IL_BUSY && rc != IL_EINTR)
        return;
    q->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    do
        rc = il_q_release_many(&q->h, q->base.ident, ms, n, -1);
    while (rc == IL_BUSY || rc == IL_EINTR);
    Py_END_ALLOW_THREADS
    q->base.busy--;
}

static int qmsg_do_release(QMsgObject *m)
{
    QObject *q = m->q;
    m->state = 2;
    int rc = IL_OK;
    /* Only the process that took it can give it back; in a forked child the
     * entry still belongs to the parent. */
    if (q->base.has_buf && il_ident_self() == m->ident)
        rc = q_finish(q, &m->m, m->ident, m->nack);
    q->base.live--;
    il_handle_maybe_release(&q->base);
    return rc;
}

static QMsgObject *qmsg_make(QObject *q, const il_q_msg *m)
{
    QMsgObject *o = PyObject_New(QMsgObject, g_qmsg_type);
    if (o == NULL)
        return NULL;
    o->q = (QObject *)Py_NewRef(q);
    o->m = *m;
    o->ptr = il_q_payload(&q->h, m);
    o->ident = q->base.ident;
    o->state = 0;
    o->nack = (q->h.flags & IL_Q_DURABLE) != 0; /* dropped unacked: back to the queue */
    o->exports = 0;
    q->base.live++;
    return o;
}

static void qmsg_dealloc(QMsgObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    if (m->state != 2) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        qmsg_do_release(m);
        PyErr_Restore(et, ev, tb);
    }
    Py_DECREF(m->q);
    PyObject_Free(m);
    Py_DECREF(tp);
}

static int qmsg_getbuffer(QMsgObject *m, Py_buffer *view, int flags)
{
    if (m->state != 0 || m->ptr == NULL) {
        PyErr_SetString(PyExc_BufferError, "message has been released");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)m, (void *)m->ptr, (Py_ssize_t)m->m.len, 1, flags) <
        0)
        return -1;
    m->exports++;
    return 0;
}

static void qmsg_releasebuffer(QMsgObject *m, Py_buffer *Py_UNUSED(view))
{
    m->exports--;
    if (m->exports == 0 && m->state == 1)
        qmsg_do_release(m);
}

/* Request the end of the message: ack/release (nack = 0) or nack. */
static PyObject *qmsg_end(QMsgObject *m, int nack, const char *what)
{
    if (m->state != 0) {
        if (m->nack == nack)
            Py_RETURN_NONE; /* idempotent */
        PyErr_Format(PyExc_ValueError, "%s: the message was already settled", what);
        return NULL;
    }
    m->nack = nack;
    m->state = 1;
    if (m->exports == 0) {
        int rc = qmsg_do_release(m);
        if (rc != IL_OK && rc != IL_INVALID)
            return q_raise(m->q, rc, what);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(qmsg_ack_doc,
             "ack($self, /)\n--\n\n"
             "The message was handled: remove it from the queue for good (same as release()). "
             "If views of it are still alive, this happens when the last one goes.  "
             "Idempotent.");

static PyObject *qmsg_ack(QMsgObject *m, PyObject *Py_UNUSED(ignored))
{
    return qmsg_end(m, 0, "ack");
}

PyDoc_STRVAR(qmsg_nack_doc,
             "nack($self, /)\n--\n\n"
             "Give the message back: it becomes available again at its original place "
             "(same priority, same FIFO position).");

static PyObject *qmsg_nack(QMsgObject *m, PyObject *Py_UNUSED(ignored))
{
    return qmsg_end(m, 1, "nack");
}

static PyObject *qmsg_enter(QMsgObject *m, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(m);
}

static PyObject *qmsg_exit(QMsgObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    /* an exception inside the with-block gives the message back (durable:
     * redelivered), a normal exit acks it */
    int failed = nargs > 0 && args[0] != Py_None;
    if (m->state != 0)
        Py_RETURN_NONE;
    return qmsg_end(m, failed && (m->q->h.flags & IL_Q_DURABLE), failed ? "nack" : "ack");
}

PyDoc_STRVAR(qmsg_tobytes_doc, "tobytes($self, /)\n--\n\nA copy of the message's bytes.");

static PyObject *qmsg_tobytes(QMsgObject *m, PyObject *Py_UNUSED(ignored))
{
    if (m->state != 0 || m->ptr == NULL) {
        PyErr_SetString(PyExc_BufferError, "message has been released");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)m->ptr, (Py_ssize_t)m->m.len);
}

static Py_ssize_t qmsg_len(QMsgObject *m) { return (Py_ssize_t)m->m.len; }

static PyObject *qmsg_get_released(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyBool_FromLong(m->state != 0);
}
static PyObject *qmsg_get_priority(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyLong_FromLong(m->m.prio);
}
static PyObject *qmsg_get_tag(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(m->m.tag);
}
static PyObject *qmsg_get_deliveries(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(m->m.deliveries);
}
static PyObject *qmsg_get_seq(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(m->m.seq);
}
static PyObject *qmsg_get_nbytes(QMsgObject *m, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(m->m.len);
}

static PyObject *qmsg_repr(QMsgObject *m)
{
    return PyUnicode_FromFormat("<interlink.QueueMessage %llu bytes priority %d%s>",
                                (unsigned long long)m->m.len, (int)m->m.prio,
                                m->state ? " settled" : "");
}

static PyMethodDef qmsg_methods[] = {
    {"ack", (PyCFunction)qmsg_ack, METH_NOARGS, qmsg_ack_doc},
    {"release", (PyCFunction)qmsg_ack, METH_NOARGS, qmsg_ack_doc},
    {"nack", (PyCFunction)qmsg_nack, METH_NOARGS, qmsg_nack_doc},
    {"tobytes", (PyCFunction)qmsg_tobytes, METH_NOARGS, qmsg_tobytes_doc},
    {"__enter__", (PyCFunction)qmsg_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))qmsg_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef qmsg_getset[] = {
    {"released", (getter)qmsg_get_released, NULL, "Whether ack/nack/release was called.", NULL},
    {"priority", (getter)qmsg_get_priority, NULL, "The priority it was put with.", NULL},
    {"tag", (getter)qmsg_get_tag, NULL, "The tag it was put with (codec id).", NULL},
    {"deliveries", (getter)qmsg_get_deliveries, NULL,
     "How many times it was taken (> 1: redelivered or nacked before).", NULL},
    {"seq", (getter)qmsg_get_seq, NULL, "Its commit sequence number (FIFO order).", NULL},
    {"nbytes", (getter)qmsg_get_nbytes, NULL, "Length of the payload in bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot qmsg_slots[] = {
    {Py_tp_doc, "A message taken from a queue: a read-only buffer viewing shared memory "
                "until ack()/release() (or nack())."},
    {Py_tp_dealloc, qmsg_dealloc},
    {Py_tp_methods, qmsg_methods},
    {Py_tp_getset, qmsg_getset},
    {Py_tp_repr, qmsg_repr},
    {Py_bf_getbuffer, qmsg_getbuffer},
    {Py_bf_releasebuffer, qmsg_releasebuffer},
    {Py_sq_length, qmsg_len},
    {0, NULL},
};

static PyType_Spec qmsg_spec = {
    "interlink.QueueMessage",
    sizeof(QMsgObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    qmsg_slots,
};

/* ======================================================================= */
/* QueueCore: put                                                          */
/* ======================================================================= */

typedef struct {
    const il_q_item *items;
    uint32_t n;
    uint32_t done;
} put_ctx;

static int attempt_put(QObject *self, void *vctx, int64_t lock_ns)
{
    put_ctx *c = vctx;
    uint32_t d = 0;
    int rc = il_q_put_many(&self->h, self->base.ident, c->items + c->done, c->n - c->done,
                           lock_ns, &d);
    c->done += d;
    return rc;
}

typedef struct {
    uint64_t len;
    int32_t prio;
    uint32_t tag;
    il_q_msg m;
} reserve_ctx;

static int attempt_reserve(QObject *self, void *vctx, int64_t lock_ns)
{
    reserve_ctx *c = vctx;
    return il_q_reserve(&self->h, self->base.ident, c->len, c->prio, c->tag, lock_ns, &c->m);
}

static int parse_prio(PyObject *o, int32_t *out)
{
    if (o == NULL || o == Py_None) {
        *out = 0;
        return 0;
    }
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "priority must fit in a signed 32-bit integer");
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

static int parse_tag(PyObject *o, uint32_t *out)
{
    if (o == NULL || o == Py_None) {
        *out = 0;
        return 0;
    }
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "tag must fit in an unsigned 32-bit integer");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* block=True, timeout=None (multiprocessing's put/get spelling). */
static int parse_block_timeout(PyObject *block, PyObject *timeout, int64_t *timeout_ns)
{
    int b = 1;
    if (block) {
        b = PyObject_IsTrue(block);
        if (b < 0)
            return -1;
    }
    if (!b) {
        *timeout_ns = 0;
        return 0;
    }
    if (timeout != NULL && timeout != Py_None) {
        double d = PyFloat_AsDouble(timeout);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (d < 0) {
            PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
            return -1;
        }
    }
    return parse_timeout(timeout, timeout_ns);
}

/* Put one payload that is copied outside the mutex: reserve (blocking as
 * asked), copy with the GIL released, commit (always completes). */
static int put_large(QObject *self, const void *data, uint64_t len, int32_t prio, uint32_t tag,
                     int64_t timeout_ns)
{
    reserve_ctx c = {len, prio, tag, {0}};
    int rc = q_drive(self, IL_Q_WAIT_PUT, IL_FULL, timeout_ns, attempt_reserve, &c);
    if (rc != IL_OK)
        return rc;
    void *dst = il_q_payload(&self->h, &c.m);
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    if (dst != NULL)
        memcpy(dst, data, (size_t)len);
    do
        rc = dst != NULL ? il_q_commit(&self->h, self->base.ident, &c.m, -1)
                         : il_q_abort(&self->h, self->base.ident, &c.m, -1);
    while (rc == IL_EINTR || rc == IL_BUSY);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if (dst == NULL && rc == IL_OK)
        rc = IL_CORRUPT;
    return rc;
}

/* Put one payload: copied under the mutex up to IL_Q_INLINE_COPY bytes,
 * else reserve / copy outside / commit (put_large). */
static int put_payload(QObject *self, const void *data, uint64_t len, int32_t prio,
                       uint32_t tag, int64_t timeout_ns)
{
    if (len > IL_Q_INLINE_COPY)
        return put_large(self, data, len, prio, tag, timeout_ns);
    il_q_item it = {data, len, prio, tag};
    put_ctx c = {&it, 1, 0};
    return q_drive(self, IL_Q_WAIT_PUT, IL_FULL, timeout_ns, attempt_put, &c);
}

PyDoc_STRVAR(q_put_doc,
             "put($self, data, block=True, timeout=None, priority=0, tag=0)\n--\n\n"
             "Append the bytes of `data` (any buffer) with `priority` (higher first, FIFO "
             "within a priority).  Blocks while the queue is full (maxsize, entries or arena "
             "space), at most `timeout` seconds; raises Full (non-blocking or timed out), "
             "MessageTooLarge (can never fit), Corrupt, Closed.");

static PyObject *q_put(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    static const char *const names[] = {"data", "block", "timeout", "priority", "tag", NULL};
    PyObject *a[5];
    if (fast_args("put", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    int64_t timeout_ns;
    int32_t prio;
    uint32_t tag;
    if (parse_block_timeout(a[1], a[2], &timeout_ns) < 0 || parse_prio(a[3], &prio) < 0 ||
        parse_tag(a[4], &tag) < 0 || q_check(self) < 0)
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(a[0], &v, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = put_payload(self, v.buf, (uint64_t)v.len, prio, tag, timeout_ns);
    PyBuffer_Release(&v);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "put");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_put_into_doc,
             "_put_into($self, nbytes, writer, block=True, timeout=None, priority=0, tag=0)\n--\n\n"
             "Reserve `nbytes` of the arena (waiting like put), call `writer(view)` with a "
             "writable memoryview of exactly that space, then commit it: the message is "
             "written once, straight into shared memory (no intermediate copy).  If `writer` "
             "raises, the reservation is aborted and the exception propagates.  `writer` must "
             "not keep the view or views derived from it: if it does, BufferError is raised "
             "and the reservation is left reserved (never reused) until this process exits.");

static PyObject *q_put_into(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"nbytes", "writer", "block", "timeout",
                                        "priority", "tag", NULL};
    PyObject *a[6];
    if (fast_args("_put_into", args, nargs, kwnames, names, 2, a) < 0)
        return NULL;
    int64_t timeout_ns;
    int32_t prio;
    uint32_t tag;
    Py_ssize_t nbytes = PyLong_AsSsize_t(a[0]);
    if (nbytes == -1 && PyErr_Occurred())
        return NULL;
    if (nbytes <= 0) {
        PyErr_SetString(PyExc_ValueError, "nbytes must be positive");
        return NULL;
    }
    if (parse_block_timeout(a[2], a[3], &timeout_ns) < 0 || parse_prio(a[4], &prio) < 0 ||
        parse_tag(a[5], &tag) < 0 || q_check(self) < 0)
        return NULL;
    reserve_ctx c = {(uint64_t)nbytes, prio, tag, {0}};
    int rc = q_drive(self, IL_Q_WAIT_PUT, IL_FULL, timeout_ns, attempt_reserve, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "put");
    void *dst = il_q_payload(&self->h, &c.m);
    int ok = 0;
    if (dst == NULL) {
        PyErr_SetString(self->base.st->Corrupt,
                        "the queue's shared memory failed a consistency check");
    } else {
        /* the mapping must outlive the call even if the handle is closed meanwhile */
        self->base.live++;
        PyObject *view = PyMemoryView_FromMemory((char *)dst, nbytes, PyBUF_WRITE);
        if (view != NULL) {
            PyObject *r = PyObject_CallOneArg(a[1], view);
            /* Views derived from `view` (slices, casts) register with its
             * managed buffer, not as exports of `view`: count both. */
            PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
            int kept = mv->exports > 0 || mv->mbuf->exports > 1;
            if (kept) {
                /* Memory safety first: the kept views may still write, so the
                 * reservation is neither committed nor freed (it stays WRITING,
                 * and is recovered as abandoned when this process exits) and the
                 * mapping is never released by this handle. */
                Py_XDECREF(r);
                Py_DECREF(view);
                PyErr_SetString(PyExc_BufferError,
                                "_put_into: the writer kept a view of the reservation; "
                                "it stays reserved until this process exits");
                return NULL; /* self->base.live stays raised: the mapping stays */
            }
            if (r != NULL) {
                PyObject *rel = PyObject_CallMethod(view, "release", NULL);
                ok = rel != NULL;
                Py_XDECREF(rel);
            }
            Py_XDECREF(r);
            Py_DECREF(view);
        }
        self->base.live--;
    }
    /* a started reservation always ends: commit or abort */
    PyObject *et = NULL, *ev = NULL, *etb = NULL;
    if (!ok)
        PyErr_Fetch(&et, &ev, &etb);
    self->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    do
        rc = ok ? il_q_commit(&self->h, self->base.ident, &c.m, -1)
                : il_q_abort(&self->h, self->base.ident, &c.m, -1);
    while (rc == IL_EINTR || rc == IL_BUSY);
    Py_END_ALLOW_THREADS
    self->base.busy--;
    if (!ok) {
        PyErr_Restore(et, ev, etb);
        il_handle_maybe_release(&self->base);
        return NULL;
    }
    if (il_handle_closed_meanwhile(&self->base))
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "put");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_put_many_doc,
             "put_many($self, items, block=True, timeout=None, priority=0, tag=0)\n--\n\n"
             "Put every buffer of the sequence `items` in order (small ones many per mutex "
             "hold).  Returns how many were put: all of them, unless the queue stayed full "
             "past `timeout` (or at once with block=False), then fewer (Full is raised only "
             "when none could be put).");

static PyObject *q_put_many(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"items", "block", "timeout", "priority", "tag", NULL};
    PyObject *a[5];
    if (fast_args("put_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    int64_t timeout_ns;
    int32_t prio;
    uint32_t tag;
    if (parse_block_timeout(a[1], a[2], &timeout_ns) < 0 || parse_prio(a[3], &prio) < 0 ||
        parse_tag(a[4], &tag) < 0 || q_check(self) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "put_many() expects a sequence of buffers");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > (Py_ssize_t)UINT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_OverflowError, "too many items");
        return NULL;
    }
    Py_buffer *views = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    il_q_item *items = PyMem_Calloc((size_t)n + 1, sizeof(il_q_item));
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    if (views == NULL || items == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) <
            0)
            goto out;
        items[got] = (il_q_item){views[got].buf, (uint64_t)views[got].len, prio, tag};
        if ((uint64_t)views[got].len > self->h.arena_bytes) {
            q_raise(self, IL_TOOBIG, "put_many");
            got++;
            goto out;
        }
    }
    uint32_t done = 0;
    int64_t deadline = deadline_for(timeout_ns);
    int rc = IL_OK;
    while (done < (uint32_t)n) {
        int64_t left = timeout_ns;
        if (timeout_ns > 0) {
            left = deadline - il_now_ns();
            if (left < 0)
                left = 0;
        }
        if (items[done].len > IL_Q_INLINE_COPY) {
            rc = put_large(self, views[done].buf, (uint64_t)views[done].len, prio, tag, left);
            if (rc == IL_OK)
                done++;
        } else {
            /* a run of small ones */
            uint32_t end = done;
            while (end < (uint32_t)n && items[end].len <= IL_Q_INLINE_COPY)
                end++;
            put_ctx c = {items + done, end - done, 0};
            rc = q_drive(self, IL_Q_WAIT_PUT, IL_FULL, left, attempt_put, &c);
            done += c.done;
        }
        if (rc != IL_OK)
            break;
    }
    if (rc < 0)
        goto out;
    if (rc != IL_OK && !(rc == IL_FULL && done > 0)) {
        q_raise(self, rc, "put");
        goto out;
    }
    result = PyLong_FromUnsignedLong(done);
out:
    if (views)
        for (Py_ssize_t i = 0; i < got; i++)
            PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(items);
    Py_DECREF(seq);
    return result;
}

/* ======================================================================= */
/* QueueCore: get                                                          */
/* ======================================================================= */

typedef struct {
    uint8_t *buf;   /* NULL: always zero-copy */
    uint64_t buflen;
    il_q_msg m;
} take_ctx;

static int attempt_take(QObject *self, void *vctx, int64_t lock_ns)
{
    take_ctx *c = vctx;
    return il_q_take(&self->h, self->base.ident, c->buf, c->buflen, lock_ns, &c->m);
}

/* bytes for a message copied out, a QueueMessage for one left TAKEN */
static PyObject *deliver(QObject *self, const take_ctx *c)
{
    if (c->m.copied)
        return PyBytes_FromStringAndSize((const char *)c->buf, (Py_ssize_t)c->m.len);
    QMsgObject *o = qmsg_make(self, &c->m);
    if (o == NULL) {
        q_finish(self, &c->m, self->base.ident, (self->h.flags & IL_Q_DURABLE) != 0);
        return NULL;
    }
    if (o->ptr == NULL) {
        Py_DECREF(o);
        return q_raise(self, IL_CORRUPT, "get");
    }
    return (PyObject *)o;
}

static int parse_get_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames, int64_t *timeout_ns)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *a[2];
    if (fast_args(fname, args, nargs, kwnames, names, 0, a) < 0)
        return -1;
    return parse_block_timeout(a[0], a[1], timeout_ns);
}

PyDoc_STRVAR(q_get_doc,
             "get($self, block=True, timeout=None)\n--\n\n"
             "Remove and return the highest-priority message (FIFO within a priority): "
             "`bytes` for a payload of at most QUEUE_INLINE_COPY bytes (copied, already "
             "removed), else a QueueMessage viewing shared memory (zero-copy; removed when "
             "released or garbage-collected).  Raises Empty (non-blocking or timed out), "
             "Corrupt, Closed.");

static PyObject *q_get(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    int64_t timeout_ns;
    if (parse_get_args("get", args, nargs, kwnames, &timeout_ns) < 0 || q_check(self) < 0)
        return NULL;
    uint8_t buf[IL_Q_INLINE_COPY];
    take_ctx c = {buf, sizeof buf, {0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, IL_EMPTY, timeout_ns, attempt_take, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "get");
    if (c.m.copied) /* a plain get() of a durable queue is taken and acked at once */
        return PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)c.m.len);
    PyObject *r = deliver(self, &c);
    if (r != NULL && (self->h.flags & IL_Q_DURABLE))
        ((QMsgObject *)r)->nack = 0; /* get() delivers: dropping the view acks it */
    return r;
}

PyDoc_STRVAR(q_get_message_doc,
             "get_message($self, block=True, timeout=None)\n--\n\n"
             "Take the highest-priority message without removing it: a QueueMessage to "
             "ack() (done) or nack() (give back).  On a durable queue a message dropped "
             "without ack, or held by a process that dies, is delivered again "
             "(at-least-once); on a plain queue dropping it acks it.");

static PyObject *q_get_message(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    int64_t timeout_ns;
    if (parse_get_args("get_message", args, nargs, kwnames, &timeout_ns) < 0 ||
        q_check(self) < 0)
        return NULL;
    take_ctx c = {NULL, 0, {0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, IL_EMPTY, timeout_ns, attempt_take, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "get_message");
    return deliver(self, &c);
}

typedef struct {
    il_q_msg *ms;
    uint32_t n;
    uint32_t got;
} many_ctx;

static int attempt_take_many(QObject *self, void *vctx, int64_t lock_ns)
{
    many_ctx *c = vctx;
    return il_q_take_many(&self->h, self->base.ident, c->ms, c->n, lock_ns, &c->got);
}

PyDoc_STRVAR(q_get_many_doc,
             "get_many($self, max_items, block=True, timeout=None)\n--\n\n"
             "Remove and return up to `max_items` (<= 256) messages in queue order, waiting "
             "(as get()) only while none is available.  Small payloads come as bytes, "
             "large ones as QueueMessage.");

static PyObject *q_get_many(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "block", "timeout", NULL};
    PyObject *a[3];
    if (fast_args("get_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    Py_ssize_t want = PyLong_AsSsize_t(a[0]);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    if (want < 1 || want > (Py_ssize_t)Q_MANY_MAX) {
        PyErr_Format(PyExc_ValueError, "max_items must be within 1..%u", Q_MANY_MAX);
        return NULL;
    }
    int64_t timeout_ns;
    if (parse_block_timeout(a[1], a[2], &timeout_ns) < 0 || q_check(self) < 0)
        return NULL;
    il_q_msg ms[Q_MANY_MAX];
    many_ctx c = {ms, (uint32_t)want, 0};
    int rc = q_drive(self, IL_Q_WAIT_GET, IL_EMPTY, timeout_ns, attempt_take_many, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "get_many");
    int durable = (self->h.flags & IL_Q_DURABLE) != 0;
    PyObject *list = PyList_New((Py_ssize_t)c.got);
    if (list == NULL) {
        settle_many(self, ms, c.got, durable); /* nothing delivered */
        return NULL;
    }
    il_q_msg small[Q_MANY_MAX];
    uint32_t nsmall = 0, k = 0;
    for (; k < c.got; k++) {
        PyObject *item;
        if (ms[k].len <= IL_Q_INLINE_COPY) {
            const void *p = il_q_payload(&self->h, &ms[k]);
            item = p ? PyBytes_FromStringAndSize(p, (Py_ssize_t)ms[k].len)
                     : q_raise(self, IL_CORRUPT, "get_many");
            small[nsmall++] = ms[k];
        } else {
            QMsgObject *o = qmsg_make(self, &ms[k]);
            if (o != NULL)
                o->nack = 0; /* delivered: dropping the view acks it */
            item = (PyObject *)o;
        }
        if (item == NULL)
            break;
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    if (k < c.got) {
        /* an error: deliver nothing; a durable queue gets everything back */
        for (uint32_t j = 0; j < k; j++) {
            PyObject *it = PyList_GET_ITEM(list, (Py_ssize_t)j);
            if (Py_IS_TYPE(it, g_qmsg_type))
                ((QMsgObject *)it)->nack = durable;
        }
        if (ms[k].len > IL_Q_INLINE_COPY) /* the one that failed, if not in small */
            small[nsmall++] = ms[k];
        for (uint32_t j = k + 1; j < c.got; j++)
            small[nsmall++] = ms[j];
        Py_DECREF(list); /* items not yet set are NULL: fine for list dealloc */
        settle_many(self, small, nsmall, durable);
        return NULL;
    }
    settle_many(self, small, nsmall, 0);
    return list;
}

/* ======================================================================= */
/* QueueCore: the codec fast path (objects in, objects out)                */
/* ======================================================================= */

PyObject *il_fetch_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException(); /* PyErr_Fetch is deprecated there */
#else
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev != NULL && tb != NULL)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    return ev;
#endif
}

void il_raise_from(PyObject *exc, PyObject *cause)
{
    if (exc == NULL) {
        Py_XDECREF(cause);
        return;
    }
    if (!PyExceptionInstance_Check(exc)) {
        Py_DECREF(exc);
        Py_XDECREF(cause);
        PyErr_SetString(PyExc_TypeError, "an error factory returned a non-exception");
        return;
    }
    if (cause != NULL) {
        PyException_SetContext(exc, Py_NewRef(cause)); /* steals */
        PyException_SetCause(exc, cause);              /* steals; suppresses the context */
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, NULL);
}

PyDoc_STRVAR(q_fast_setup_doc,
             "_fast_setup($self, *, owner, put_slow, get_slow, closed, codec, decode, "
             "errors, encode_error, dumps=None, loads=None, tail=b'', limit=0, watch=0, "
             "defer=False)\n--\n\n"
             "Configure _put_obj / _get_obj, the Queue's put and get.  They take the Queue's "
             "own Python path -- put_slow(queue, obj, block, timeout, priority) and "
             "get_slow(queue, block, timeout), with queue = owner() (a weak reference; "
             "`closed` is raised when it is gone) -- when the handle is closed or `defer` is "
             "true.  `dumps` (pickle.dumps, or None: put_slow always) pickles objects other "
             "than exact bytes/bytearray/memoryview while `codec._watch` is 0; a pickle "
             "shorter than `limit` is put as pickle + `tail` (8 bytes), a longer one sets "
             "`codec._watch = watch` and goes to put_slow.  `loads` (or None) unpickles a "
             "record whose last 8 bytes equal `tail`, copied out of the queue; its `errors` "
             "(a tuple) become Corrupt.  Every other record goes to `decode(record)`.  "
             "`encode_error(obj, exc)` builds the exception raised from a failed dumps.");

static PyObject *q_fast_setup(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"owner",  "put_slow", "get_slow",     "closed",
                                        "codec",  "decode",   "errors",       "encode_error",
                                        "dumps",  "loads",    "tail",         "limit",
                                        "watch",  "defer",    NULL};
    PyObject *a[14];
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "_fast_setup() takes keyword arguments only");
        return NULL;
    }
    if (fast_args("_fast_setup", args, nargs, kwnames, names, 8, a) < 0)
        return NULL;
    for (int i = 0; i < 3; i++) {
        if (!PyCallable_Check(a[i])) {
            PyErr_Format(PyExc_TypeError, "%s must be callable", names[i]);
            return NULL;
        }
    }
    if (!PyCallable_Check(a[5]) || !PyCallable_Check(a[7])) {
        PyErr_SetString(PyExc_TypeError, "decode and encode_error must be callable");
        return NULL;
    }
    if (!PyTuple_Check(a[6])) {
        PyErr_SetString(PyExc_TypeError, "errors must be a tuple of exception types");
        return NULL;
    }
    PyObject *dumps = a[8] == Py_None ? NULL : a[8];
    PyObject *loads = a[9] == Py_None ? NULL : a[9];
    if ((dumps || loads) && (a[10] == NULL || !PyBytes_Check(a[10]) ||
                             PyBytes_GET_SIZE(a[10]) != 8)) {
        PyErr_SetString(PyExc_ValueError, "tail must be 8 bytes");
        return NULL;
    }
    Py_ssize_t lim = 0;
    if (a[11] != NULL) {
        lim = PyLong_AsSsize_t(a[11]);
        if (lim == -1 && PyErr_Occurred())
            return NULL;
    }
    int defer = a[13] != NULL ? PyObject_IsTrue(a[13]) : 0;
    if (defer < 0)
        return NULL;
    PyObject *ename = PyUnicode_InternFromString("encode");
    if (ename == NULL)
        return NULL;
    if (il_pickler_set(&self->pk, a[4], a[7], dumps, lim, a[12]) < 0) {
        Py_DECREF(ename);
        return NULL;
    }
    q_fast_clear(self);
    self->f_owner = Py_NewRef(a[0]);
    self->f_put_slow = Py_NewRef(a[1]);
    self->f_get_slow = Py_NewRef(a[2]);
    self->f_closed = Py_NewRef(a[3]);
    self->f_decode = Py_NewRef(a[5]);
    self->f_errors = Py_NewRef(a[6]);
    self->f_loads = Py_XNewRef(loads);
    self->f_encode_name = ename;
    self->f_defer = defer;
    if (dumps || loads)
        memcpy(self->f_tail, PyBytes_AS_STRING(a[10]), 8);
    Py_RETURN_NONE;
}

/* The owner Queue (new reference), or NULL with `closed` raised. */
static PyObject *fast_owner(QObject *self)
{
    if (self->f_owner == NULL) {
        PyErr_SetString(self->base.st->Closed, "this queue handle is not set up for objects");
        return NULL;
    }
    PyObject *q = PyObject_CallNoArgs(self->f_owner);
    if (q == Py_None) {
        Py_DECREF(q);
        PyErr_SetString(self->f_closed, "the queue handle is closed (its Queue is gone)");
        return NULL;
    }
    return q;
}

/* The Queue's Python put with the caller's arguments (defaults filled in). */
static PyObject *put_slow(QObject *self, PyObject *const *a)
{
    PyObject *q = fast_owner(self);
    if (q == NULL)
        return NULL;
    PyObject *zero = a[3] ? NULL : PyLong_FromLong(0);
    if (a[3] == NULL && zero == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    PyObject *v[5] = {q, a[0], a[1] ? a[1] : Py_True, a[2] ? a[2] : Py_None,
                      a[3] ? a[3] : zero};
    PyObject *r = PyObject_Vectorcall(self->f_put_slow, v, 5, NULL);
    Py_XDECREF(zero);
    Py_DECREF(q);
    return r;
}

/* The Queue's Python get with the caller's arguments. */
static PyObject *get_slow(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *a[2];
    if (fast_args("get", args, nargs, kwnames, names, 0, a) < 0)
        return NULL;
    PyObject *q = fast_owner(self);
    if (q == NULL)
        return NULL;
    PyObject *v[3] = {q, a[0] ? a[0] : Py_True, a[1] ? a[1] : Py_None};
    PyObject *r = PyObject_Vectorcall(self->f_get_slow, v, 3, NULL);
    Py_DECREF(q);
    return r;
}

/* Pickle `obj` as PickleCodec.encode would without a buffer callback: 1 and
 * *data (a pickle shorter than the limit: the record is it + the tail); 0
 * when the codec must encode it (a raw bytes kind, the codec watching for
 * out-of-band buffers, or a pickle that long: then codec._watch is set, as
 * PickleCodec.encode does); -1 with an exception (EncodeError from dumps). */
static int fast_pickle(QObject *self, PyObject *obj, PyObject **data)
{
    /* the pickle codec sends these exact types unpickled (_codec._RAW_KINDS) */
    if (self->pk.dumps == NULL || Py_IS_TYPE(obj, &PyBytes_Type) ||
        Py_IS_TYPE(obj, &PyByteArray_Type) || Py_IS_TYPE(obj, &PyMemoryView_Type))
        return 0;
    int watching = il_pickler_watching(&self->pk);
    if (watching != 0)
        return watching < 0 ? -1 : 0;
    return il_pickler_dumps(&self->pk, obj, data);
}

PyDoc_STRVAR(q_put_obj_doc,
             "_put_obj($self, obj, block=True, timeout=None, priority=0)\n--\n\n"
             "Queue.put: put `obj`; when the queue is full wait up to `timeout` seconds.  "
             "A small pickle is encoded, framed and written in this one call; anything else goes "
             "through the Queue's codec path (see _fast_setup).  Raises queue.Full, "
             "MessageTooLarge, EncodeError, QueueClosed like Queue.put.");

static PyObject *q_put_obj(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout", "priority", NULL};
    PyObject *a[4];
    if (fast_args("put", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    if (self->base.closed || self->f_defer || self->pk.dumps == NULL)
        return put_slow(self, a);
    PyObject *data;
    int got = fast_pickle(self, a[0], &data);
    if (got < 0)
        return NULL;
    if (got == 0)
        return put_slow(self, a);
    /* Checked after pickling: pickling runs Python code, which may close
     * this handle (and unmap the queue). */
    if (self->base.closed) {
        Py_DECREF(data);
        return put_slow(self, a); /* raises QueueClosed */
    }
    int64_t timeout_ns;
    int32_t prio;
    if (parse_block_timeout(a[1], a[2], &timeout_ns) < 0 || parse_prio(a[3], &prio) < 0 ||
        q_check(self) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    uint64_t len = (uint64_t)n + 8;
    int rc;
    if (len <= IL_Q_INLINE_COPY) {
        uint8_t rec[IL_Q_INLINE_COPY];
        memcpy(rec, PyBytes_AS_STRING(data), (size_t)n);
        memcpy(rec + n, self->f_tail, 8);
        Py_DECREF(data);
        rc = put_payload(self, rec, len, prio, 0, timeout_ns);
    } else {
        PyObject *rec = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (rec == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(rec), PyBytes_AS_STRING(data), (size_t)n);
        memcpy(PyBytes_AS_STRING(rec) + n, self->f_tail, 8);
        Py_DECREF(data);
        rc = put_payload(self, PyBytes_AS_STRING(rec), len, prio, 0, timeout_ns);
        Py_DECREF(rec);
    }
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "put");
    Py_RETURN_NONE;
}

/* Unpickle the payload of a plain pickle record (the trailer checked). */
static PyObject *fast_loads(QObject *self, const uint8_t *payload, Py_ssize_t n)
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)payload, n);
    if (b == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(self->f_loads, b);
    Py_DECREF(b);
    if (r == NULL && PyErr_ExceptionMatches(self->f_errors))
        il_corrupt_from_current(self->base.st);
    return r;
}

PyDoc_STRVAR(q_get_obj_doc,
             "_get_obj($self, block=True, timeout=None)\n--\n\n"
             "Queue.get: remove and return the next object (highest priority, then "
             "oldest), waiting up to `timeout` seconds.  A small pickle of this user is "
             "checked and unpickled in this one call; every other record is decoded by the codec "
             "(see _fast_setup).  Raises queue.Empty, AccessDenied, Corrupt, QueueClosed "
             "like Queue.get.");

static PyObject *q_get_obj(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    if (self->base.closed || self->f_defer)
        return get_slow(self, args, nargs, kwnames);
    int64_t timeout_ns;
    if (parse_get_args("get", args, nargs, kwnames, &timeout_ns) < 0 || q_check(self) < 0)
        return NULL;
    uint8_t buf[IL_Q_INLINE_COPY];
    take_ctx c = {buf, sizeof buf, {0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, IL_EMPTY, timeout_ns, attempt_take, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "get");
    PyObject *data;
    if (c.m.copied) {
        Py_ssize_t n = (Py_ssize_t)c.m.len;
        if (self->f_loads != NULL && n >= 8 && memcmp(buf + n - 8, self->f_tail, 8) == 0)
            return fast_loads(self, buf, n - 8);
        data = PyBytes_FromStringAndSize((const char *)buf, n);
    } else {
        data = deliver(self, &c);
        if (data != NULL && (self->h.flags & IL_Q_DURABLE))
            ((QMsgObject *)data)->nack = 0; /* get() delivers: dropping the view acks it */
    }
    if (data == NULL || self->f_decode == NULL)
        return data;
    PyObject *r = PyObject_CallOneArg(self->f_decode, data);
    Py_DECREF(data);
    return r;
}

PyDoc_STRVAR(q_get_many_obj_doc,
             "_get_many_obj($self, max_items, block=True, timeout=None)\n--\n\n"
             "get_many() decoded: take up to `max_items` (<= 256) messages in one mutex hold "
             "(waiting as get() only while none is available), copy the small ones out and "
             "free them in one more, then decode each as _get_obj does.  An error while "
             "decoding raises it; the messages taken are consumed (as with get()).");

static PyObject *q_get_many_obj(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "block", "timeout", NULL};
    PyObject *a[3];
    if (fast_args("get_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    Py_ssize_t want = PyLong_AsSsize_t(a[0]);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    if (want < 1 || want > (Py_ssize_t)Q_MANY_MAX) {
        PyErr_Format(PyExc_ValueError, "max_items must be within 1..%u", Q_MANY_MAX);
        return NULL;
    }
    int64_t timeout_ns;
    if (parse_block_timeout(a[1], a[2], &timeout_ns) < 0 || q_check(self) < 0)
        return NULL;
    il_q_msg ms[Q_MANY_MAX];
    many_ctx c = {ms, (uint32_t)want, 0};
    int rc = q_drive(self, IL_Q_WAIT_GET, IL_EMPTY, timeout_ns, attempt_take_many, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "get_many");
    int durable = (self->h.flags & IL_Q_DURABLE) != 0;
    /* The mapping stays while entries are held here, even if a finalizer
     * run by an allocation closes the handle (il_handle_maybe_release). */
    self->base.busy++;
    PyObject *list = PyList_New((Py_ssize_t)c.got);
    if (list == NULL) {
        settle_many(self, ms, c.got, durable); /* nothing delivered */
        self->base.busy--;
        il_handle_maybe_release(&self->base);
        return NULL;
    }
    /* Pass 1, no Python code runs: small payloads copied out (a plain pickle
     * record's payload alone, flagged), large ones wrapped; then the small
     * entries are freed in one mutex hold.  Only then is anything decoded. */
    il_q_msg small[Q_MANY_MAX];
    uint8_t plain[Q_MANY_MAX];
    uint32_t nsmall = 0, k = 0;
    for (; k < c.got; k++) {
        PyObject *item;
        plain[k] = 0;
        if (ms[k].len <= IL_Q_INLINE_COPY) {
            const uint8_t *p = il_q_payload(&self->h, &ms[k]);
            Py_ssize_t n = (Py_ssize_t)ms[k].len;
            if (p == NULL) {
                item = q_raise(self, IL_CORRUPT, "get_many");
            } else if (self->f_loads != NULL && n >= 8 && memcmp(p + n - 8, self->f_tail, 8) == 0) {
                plain[k] = 1;
                item = PyBytes_FromStringAndSize((const char *)p, n - 8);
            } else {
                item = PyBytes_FromStringAndSize((const char *)p, n);
            }
            small[nsmall++] = ms[k];
        } else {
            QMsgObject *o = qmsg_make(self, &ms[k]);
            if (o != NULL)
                o->nack = 0; /* delivered: dropping the view acks it */
            item = (PyObject *)o;
        }
        if (item == NULL)
            break;
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    if (k < c.got) {
        /* an error: deliver nothing; a durable queue gets everything back */
        for (uint32_t j = 0; j < k; j++) {
            PyObject *it = PyList_GET_ITEM(list, (Py_ssize_t)j);
            if (Py_IS_TYPE(it, g_qmsg_type))
                ((QMsgObject *)it)->nack = durable;
        }
        if (ms[k].len > IL_Q_INLINE_COPY) /* the one that failed, if not in small */
            small[nsmall++] = ms[k];
        for (uint32_t j = k + 1; j < c.got; j++)
            small[nsmall++] = ms[j];
        settle_many(self, small, nsmall, durable);
        self->base.busy--;
        Py_DECREF(list); /* items not yet set are NULL: fine for list dealloc */
        il_handle_maybe_release(&self->base);
        return NULL;
    }
    settle_many(self, small, nsmall, 0);
    self->base.busy--;
    il_handle_maybe_release(&self->base);
    /* Pass 2: decode in place (Python code runs; nothing here reads the
     * queue's memory any more). */
    for (k = 0; k < c.got; k++) {
        PyObject *raw = PyList_GET_ITEM(list, (Py_ssize_t)k);
        PyObject *obj;
        if (plain[k]) {
            obj = PyObject_CallOneArg(self->f_loads, raw);
            if (obj == NULL && PyErr_ExceptionMatches(self->f_errors))
                il_corrupt_from_current(self->base.st);
        } else if (self->f_decode != NULL) {
            obj = PyObject_CallOneArg(self->f_decode, raw);
        } else {
            continue;
        }
        if (obj == NULL) {
            Py_DECREF(list); /* the rest are consumed, as by get() */
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, obj);
        Py_DECREF(raw);
    }
    return list;
}

PyDoc_STRVAR(q_encode_many_doc,
             "_encode_many($self, objs)\n--\n\n"
             "The records of `objs` (an iterable) as the codec encodes them, in order: "
             "small pickles framed here (bytes), everything else by codec.encode().");

static PyObject *q_encode_many(QObject *self, PyObject *objs)
{
    PyObject *seq = PySequence_Fast(objs, "put_many() expects an iterable of objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *data = NULL, *rec = NULL;
        int got = self->pk.codec == NULL ? -2 : fast_pickle(self, obj, &data);
        if (got == 1) {
            Py_ssize_t n = PyBytes_GET_SIZE(data);
            rec = PyBytes_FromStringAndSize(NULL, n + 8);
            if (rec != NULL) {
                memcpy(PyBytes_AS_STRING(rec), PyBytes_AS_STRING(data), (size_t)n);
                memcpy(PyBytes_AS_STRING(rec) + n, self->f_tail, 8);
            }
            Py_DECREF(data);
        } else if (got == 0) {
            rec = PyObject_CallMethodOneArg(self->pk.codec, self->f_encode_name, obj);
        } else if (got == -2) {
            PyErr_SetString(self->base.st->Closed, "this queue handle is not set up for objects");
        }
        if (rec == NULL) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(out, i, rec);
    }
    Py_DECREF(seq);
    return out;
}

/* ======================================================================= */
/* QueueCore: joinable, state, recovery                                    */
/* ======================================================================= */

typedef struct {
    uint64_t n;
} td_ctx;

static int attempt_task_done(QObject *self, void *vctx, int64_t lock_ns)
{
    return il_q_task_done(&self->h, self->base.ident, ((td_ctx *)vctx)->n, lock_ns);
}

PyDoc_STRVAR(q_task_done_doc,
             "task_done($self, n=1)\n--\n\n"
             "JoinableQueue.task_done(): `n` gotten messages are processed.  ValueError when "
             "called more times than messages were put.");

static PyObject *q_task_done(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"n", NULL};
    PyObject *a[1];
    if (fast_args("task_done", args, nargs, kwnames, names, 0, a) < 0 || q_check(self) < 0)
        return NULL;
    unsigned long long n = 1;
    if (a[0]) {
        n = PyLong_AsUnsignedLongLong(a[0]);
        if (n == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
    }
    td_ctx c = {n};
    int rc = q_drive(self, IL_Q_WAIT_PUT, -100, -1, attempt_task_done, &c);
    if (rc < 0)
        return NULL;
    if (rc == IL_INVALID) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    if (rc != IL_OK)
        return q_raise(self, rc, "task_done");
    Py_RETURN_NONE;
}

static int attempt_join(QObject *self, void *vctx, int64_t lock_ns)
{
    (void)vctx;
    (void)lock_ns;
    return atomic_load_explicit(&self->h.q->unfinished, memory_order_acquire) == 0 ? IL_OK
                                                                                  : IL_EMPTY;
}

PyDoc_STRVAR(q_join_doc,
             "join($self, timeout=None)\n--\n\n"
             "Wait until every message put has been task_done()'d: True, or False when "
             "`timeout` passed first.");

static PyObject *q_join(QObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *a[1];
    if (fast_args("join", args, nargs, kwnames, names, 0, a) < 0 || q_check(self) < 0)
        return NULL;
    int64_t timeout_ns;
    if (parse_timeout(a[0], &timeout_ns) < 0)
        return NULL;
    int rc = q_drive(self, IL_Q_WAIT_JOIN, IL_EMPTY, timeout_ns, attempt_join, NULL);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == IL_OK);
}

static PyObject *q_qsize(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(il_q_qsize(&self->h));
}

static PyObject *q_empty(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    return PyBool_FromLong(il_q_qsize(&self->h) == 0);
}

static PyObject *q_full(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    il_q_stats s;
    il_q_read_stats(&self->h, &s);
    return PyBool_FromLong((uint64_t)s.ready + s.writing >= s.maxsize || s.free_entries == 0);
}

static int dict_set(PyObject *d, const char *k, PyObject *v)
{
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, k, v);
    Py_DECREF(v);
    return rc;
}

#define U64(x) PyLong_FromUnsignedLongLong((unsigned long long)(x))

PyDoc_STRVAR(q_stats_doc,
             "stats($self, /)\n--\n\n"
             "A snapshot of the queue's counters (lock-free: fields may be mid-update).");

static PyObject *q_stats(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    il_q_stats s;
    il_q_read_stats(&self->h, &s);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (dict_set(d, "ready", U64(s.ready)) < 0 || dict_set(d, "writing", U64(s.writing)) < 0 ||
        dict_set(d, "taken", U64(s.taken)) < 0 ||
        dict_set(d, "free_entries", U64(s.free_entries)) < 0 ||
        dict_set(d, "nentries", U64(s.nentries)) < 0 ||
        dict_set(d, "maxsize", U64(s.maxsize)) < 0 ||
        dict_set(d, "unfinished", U64(s.unfinished)) < 0 ||
        dict_set(d, "arena_bytes", U64(s.arena_bytes)) < 0 ||
        dict_set(d, "arena_used", U64(s.arena_used)) < 0 || dict_set(d, "puts", U64(s.puts)) < 0 ||
        dict_set(d, "gets", U64(s.gets)) < 0 || dict_set(d, "acks", U64(s.acks)) < 0 ||
        dict_set(d, "nacks", U64(s.nacks)) < 0 ||
        dict_set(d, "redelivered", U64(s.redelivered)) < 0 ||
        dict_set(d, "dropped", U64(s.dropped)) < 0 ||
        dict_set(d, "abandoned", U64(s.abandoned)) < 0 ||
        dict_set(d, "owner_died", U64(s.owner_died)) < 0 ||
        dict_set(d, "wakes", U64(s.wakes)) < 0 ||
        dict_set(d, "lock_wakes", U64(s.lock_wakes)) < 0 ||
        dict_set(d, "lock_contended", U64(s.lock_contended)) < 0 ||
        dict_set(d, "durable", PyBool_FromLong((self->h.flags & IL_Q_DURABLE) != 0)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *recovered_dict(const il_q_recovered *r)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (dict_set(d, "abandoned", U64(r->abandoned)) < 0 ||
        dict_set(d, "redelivered", U64(r->redelivered)) < 0 ||
        dict_set(d, "dropped", U64(r->dropped)) < 0 ||
        dict_set(d, "waiters", U64(r->waiters)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* Run a mutex-taking maintenance call to completion with the GIL released. */
typedef struct {
    int which; /* 0 recover_dead, 1 check, 2 repair */
    il_q_recovered r;
} maint_ctx;

static int attempt_maint(QObject *self, void *vctx, int64_t lock_ns)
{
    maint_ctx *c = vctx;
    switch (c->which) {
    case 0: return il_q_recover_dead(&self->h, self->base.ident, lock_ns, &c->r);
    case 1: return il_q_check(&self->h, self->base.ident, lock_ns);
    default: return il_q_repair(&self->h, self->base.ident, lock_ns);
    }
}

PyDoc_STRVAR(q_recover_doc,
             "_recover($self, /)\n--\n\n"
             "Give back what dead processes hold: reservations of dead producers are freed, "
             "messages held by dead consumers are redelivered (durable) or dropped (plain), "
             "dead waiters are unregistered.  Returns the counts as a dict.");

static PyObject *q_recover(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    maint_ctx c = {0, {0, 0, 0, 0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, -100, -1, attempt_maint, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "recover");
    return recovered_dict(&c.r);
}

PyDoc_STRVAR(q_check_doc,
             "_check($self, /)\n--\n\n"
             "Verify the whole queue (entries against every derived structure) under its "
             "mutex; raises Corrupt if anything is inconsistent.");

static PyObject *q_check_all(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    maint_ctx c = {1, {0, 0, 0, 0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, -100, -1, attempt_maint, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "check");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_repair_doc,
             "_repair($self, /)\n--\n\n"
             "Rebuild the derived structures from the entry table; raises Corrupt if the "
             "entry table itself is inconsistent.");

static PyObject *q_repair(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    maint_ctx c = {2, {0, 0, 0, 0}};
    int rc = q_drive(self, IL_Q_WAIT_GET, -100, -1, attempt_maint, &c);
    if (rc < 0)
        return NULL;
    if (rc != IL_OK)
        return q_raise(self, rc, "repair");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_boot_doc,
             "_same_boot($self, /)\n--\n\n"
             "Whether the queue was last opened during this boot of the machine.");

static PyObject *q_same_boot(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    uint64_t boot[2];
    if (il_q_read_boot_id(boot) != IL_OK) {
        PyErr_SetString(PyExc_OSError, "cannot read /proc/sys/kernel/random/boot_id");
        return NULL;
    }
    return PyBool_FromLong(il_q_same_boot(&self->h, boot));
}

PyDoc_STRVAR(q_reboot_doc,
             "_reboot_recover($self, /)\n--\n\n"
             "After a machine restart: reset the mutex and waiters, free unfinished puts, "
             "make held messages available again, store this boot's id.  The caller must "
             "hold an exclusive lock on the queue file and no process of this boot may have "
             "used the queue yet.  Returns the counts as a dict.");

static PyObject *q_reboot_recover(QObject *self, PyObject *Py_UNUSED(ignored))
{
    if (q_check(self) < 0)
        return NULL;
    uint64_t boot[2];
    if (il_q_read_boot_id(boot) != IL_OK) {
        PyErr_SetString(PyExc_OSError, "cannot read /proc/sys/kernel/random/boot_id");
        return NULL;
    }
    il_q_recovered r;
    int rc = il_q_reboot_recover(&self->h, boot, &r);
    if (rc != IL_OK)
        return q_raise(self, rc, "reboot_recover");
    return recovered_dict(&r);
}

static PyObject *q_get_durable(QObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->base.has_buf && (self->h.flags & IL_Q_DURABLE) != 0);
}

static PyObject *q_get_maxsize(QObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(self->base.has_buf ? self->h.maxsize : 0);
}

static PyObject *q_get_arena_bytes(QObject *self, void *Py_UNUSED(c))
{
    return U64(self->base.has_buf ? self->h.arena_bytes : 0);
}

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef q_methods[] = {
    {"_bind", (PyCFunction)q_bind, METH_O, "Bind to a formatted queue segment."},
    {"_close", il_handle_close, METH_NOARGS, "Detach; the mapping is released when "
                                                  "no message views it any more."},
    {"put", (PyCFunction)(void (*)(void))q_put, FASTKW, q_put_doc},
    {"put_many", (PyCFunction)(void (*)(void))q_put_many, FASTKW, q_put_many_doc},
    {"_put_into", (PyCFunction)(void (*)(void))q_put_into, FASTKW, q_put_into_doc},
    {"_put_obj", (PyCFunction)(void (*)(void))q_put_obj, FASTKW, q_put_obj_doc},
    {"_get_obj", (PyCFunction)(void (*)(void))q_get_obj, FASTKW, q_get_obj_doc},
    {"_fast_setup", (PyCFunction)(void (*)(void))q_fast_setup, FASTKW, q_fast_setup_doc},
    {"_get_many_obj", (PyCFunction)(void (*)(void))q_get_many_obj, FASTKW, q_get_many_obj_doc},
    {"_encode_many", (PyCFunction)q_encode_many, METH_O, q_encode_many_doc},
    {"get", (PyCFunction)(void (*)(void))q_get, FASTKW, q_get_doc},
    {"get_message", (PyCFunction)(void (*)(void))q_get_message, FASTKW, q_get_message_doc},
    {"get_many", (PyCFunction)(void (*)(void))q_get_many, FASTKW, q_get_many_doc},
    {"task_done", (PyCFunction)(void (*)(void))q_task_done, FASTKW, q_task_done_doc},
    {"join", (PyCFunction)(void (*)(void))q_join, FASTKW, q_join_doc},
    {"qsize", (PyCFunction)q_qsize, METH_NOARGS, "Messages ready to be taken."},
    {"empty", (PyCFunction)q_empty, METH_NOARGS, "qsize() == 0."},
    {"full", (PyCFunction)q_full, METH_NOARGS, "Whether a put would have to wait now."},
    {"stats", (PyCFunction)q_stats, METH_NOARGS, q_stats_doc},
    {"_recover", (PyCFunction)q_recover, METH_NOARGS, q_recover_doc},
    {"_check", (PyCFunction)q_check_all, METH_NOARGS, q_check_doc},
    {"_repair", (PyCFunction)q_repair, METH_NOARGS, q_repair_doc},
    {"_same_boot", (PyCFunction)q_same_boot, METH_NOARGS, q_boot_doc},
    {"_reboot_recover", (PyCFunction)q_reboot_recover, METH_NOARGS, q_reboot_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef q_getset[] = {
    {"closed", il_handle_get_closed, NULL, "Whether this handle is closed.", NULL},
    {"durable", (getter)q_get_durable, NULL, "Whether the queue redelivers unacked messages.",
     NULL},
    {"maxsize", (getter)q_get_maxsize, NULL, "Ready + in-progress puts allowed.", NULL},
    {"arena_bytes", (getter)q_get_arena_bytes, NULL, "Payload space in bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot q_slots[] = {
    {Py_tp_doc, "The native half of interlink.Queue."},
    {Py_tp_new, q_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, q_traverse},
    {Py_tp_clear, q_clear},
    {Py_tp_methods, q_methods},
    {Py_tp_getset, q_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec q_spec = {
    "interlink._native.QueueCore",
    sizeof(QObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    q_slots,
};

/* ======================================================================= */
/* formatting and registration                                             */
/* ======================================================================= */

static PyObject *mod_queue_segment_size(PyObject *Py_UNUSED(m), PyObject *args)
{
    unsigned long n;
    unsigned long long arena;
    if (!PyArg_ParseTuple(args, "kK:queue_segment_size", &n, &arena))
        return NULL;
    uint64_t sz = n <= UINT32_MAX ? il_q_size_for((uint32_t)n, arena) : 0;
    if (sz == 0) {
        PyErr_Format(PyExc_ValueError,
                     "nentries must be within 1..%u and arena_bytes within 1..2**40",
                     (unsigned)IL_Q_MAX_ENTRIES);
        return NULL;
    }
    return U64(IL_SEG_HEADER_SIZE + ((sz + 4095u) & ~(uint64_t)4095u));
}

static PyObject *mod_queue_format(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned long n, maxsize;
    unsigned long long arena;
    int durable;
    if (!PyArg_ParseTuple(args, "OkKkp:queue_format", &obj, &n, &arena, &maxsize, &durable))
        return NULL;
    if (n > UINT32_MAX || maxsize > n) {
        PyErr_SetString(PyExc_ValueError, "maxsize must be within 0..nentries");
        return NULL;
    }
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_WRITABLE) < 0)
        return NULL;
    int rc = IL_INVALID;
    il_qh h;
    if ((size_t)v.len > IL_SEG_HEADER_SIZE)
        rc = il_q_init(&h, (char *)v.buf + IL_SEG_HEADER_SIZE,
                       (uint64_t)v.len - IL_SEG_HEADER_SIZE, (uint32_t)n, arena,
                       (uint32_t)maxsize, durable ? IL_Q_DURABLE : 0);
    if (rc == IL_OK) {
        uint64_t boot[2];
        if (il_q_read_boot_id(boot) == IL_OK)
            il_q_set_boot(&h, boot);
    }
    PyBuffer_Release(&v);
    if (rc != IL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "cannot format a queue with these sizes in this buffer "
                        "(see queue_segment_size)");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* For `interlink ls`: the ready count of a queue segment mapped read-only
 * (il_q_attach and il_q_qsize only read).  None if it does not validate. */
static PyObject *mod_queue_snapshot(PyObject *Py_UNUSED(m), PyObject *obj)
{
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    il_qh h;
    if ((size_t)v.len > IL_SEG_HEADER_SIZE &&
        il_q_attach(&h, (char *)v.buf + IL_SEG_HEADER_SIZE,
                    (uint64_t)v.len - IL_SEG_HEADER_SIZE) == IL_OK)
        result = PyLong_FromUnsignedLong(il_q_qsize(&h));
    PyBuffer_Release(&v);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static PyMethodDef queue_module_methods[] = {
    {"queue_snapshot", mod_queue_snapshot, METH_O,
     "queue_snapshot(buffer): the ready count of a queue segment (read-only is fine), "
     "or None if it does not validate."},
    {"queue_segment_size", mod_queue_segment_size, METH_VARARGS,
     "queue_segment_size(nentries, arena_bytes): bytes of a queue segment (header page "
     "included, rounded to pages)."},
    {"queue_format", mod_queue_format, METH_VARARGS,
     "queue_format(buffer, nentries, arena_bytes, maxsize, durable): format a new queue "
     "segment (maxsize 0: nentries) and record this boot's id."},
    {NULL, NULL, 0, NULL},
};

int il_queue_exec(PyObject *m, module_state *st);

int il_queue_exec(PyObject *m, module_state *st)
{
    (void)st;
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(m, &q_spec, NULL);
    if (tp == NULL)
        return -1;
    int rc = PyModule_AddType(m, tp);
    Py_DECREF(tp);
    if (rc < 0)
        return -1;
    PyTypeObject *mt = (PyTypeObject *)PyType_FromModuleAndSpec(m, &qmsg_spec, NULL);
    if (mt == NULL)
        return -1;
    if (PyModule_AddType(m, mt) < 0) {
        Py_DECREF(mt);
        return -1;
    }
    Py_XSETREF(g_qmsg_type, mt); /* keeps the reference */
    if (PyModule_AddFunctions(m, queue_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "QUEUE_INLINE_COPY", IL_Q_INLINE_COPY) < 0 ||
        PyModule_AddIntConstant(m, "QUEUE_MAX_ENTRIES", IL_Q_MAX_ENTRIES) < 0 ||
        PyModule_AddIntConstant(m, "QUEUE_MANY_MAX", Q_MANY_MAX) < 0 ||
        PyModule_AddIntConstant(m, "KIND_QUEUE", IL_KIND_QUEUE) < 0 ||
        PyModule_AddIntConstant(m, "SEG_QUEUE_DESC", IL_SEG_QUEUE_DESC) < 0)
        return -1;
    return 0;
}
