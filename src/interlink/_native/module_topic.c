/* module_topic.c - the CPython glue of topicword.c: TopicCore (a handle, and
 * the publisher side) and TopicSubscriberCore (one subscription).  _topic.py
 * adds naming, codecs, life cycle, pickling and asyncio.
 *
 * Segment layout: page 0 is the header (seg.h; the codec descriptor at
 * IL_SEG_TOPIC_DESC), the topic area (topicword.h) follows at
 * IL_SEG_HEADER_SIZE.
 *
 * Waiting follows module_queue.c: a first attempt under the GIL; then, GIL
 * released, a short adaptive spin (subscribers) and futex sleeps of at most
 * one slice; back under the GIL between slices PyErr_CheckSignals() runs (so
 * Ctrl-C interrupts within a slice) and a handle closed meanwhile raises
 * Closed.  A BLOCK publisher that stays full checks the subscribers'
 * liveness every TOPIC_REAP_NS, so a killed subscriber leaves the wait set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "glue.h"
#include "handle_lock.h"
#include "il_common.h"
#include "proc.h"
#include "seg.h"
#include "topicword.h"

#define T_SLICE_NS (20 * 1000 * 1000LL)     /* sleep slice (signals checked between) */
#define T_PUB_SLICE_NS (10 * 1000 * 1000LL) /* a blocked publisher's slice */
#define T_REAP_NS (30 * 1000 * 1000LL)      /* liveness scan period while blocked */
#define T_SPIN_MIN_NS 2000LL
#define T_SPIN_MAX_NS 100000LL
#define T_VIEW_MIN 65536u /* block policy: records this big are received in place */

#define U64(x) PyLong_FromUnsignedLongLong((unsigned long long)(x))

typedef struct {
    il_handle base;  /* base.live: open subscriptions that use the mapping */
    il_topic t;
    il_topic_writer w;
    int has_writer;
    uint64_t w_fork_gen;
    il_hlock wlock; /* one publishing thread at a time */
    /* The object path (_fast_setup; docs/design/topic.md "Object fast
     * path"): _publish_obj frames exact bytes and small pickles itself. */
    PyObject *f_owner;      /* weakref.ref(Topic) */
    PyObject *f_slow;       /* Topic._publish_slow(topic, obj, timeout) */
    PyObject *f_closed;     /* raised when the Topic is gone */
    il_pickler pk;          /* pickles shorter than pk.limit are records as they are */
    int f_has_bytes;        /* exact bytes are sent as obj + f_bytes_tail */
    uint8_t f_bytes_tail[8];
    uint8_t f_plain_tail[8];
} TObject;

typedef struct {
    PyObject_HEAD
    TObject *topic;
    il_topic_reader r;
    uint64_t fork_gen;
    int joined;
    int64_t spin_ns;
    il_hlock lock; /* one receiving thread at a time */
    PyObject *weakreflist;
    /* _recv_obj (see _fast_setup): records whose trailer is one of f_tail
     * are decoded here (f_kind: FK_*); every other goes to f_decode. */
    PyObject *f_decode;
    PyObject *f_loads;
    PyObject *f_errors;
    int f_n;
    int f_kind[3];
    uint8_t f_tail[3][8];
    PyObject *f_failed; /* an error _recv_many_obj met after items it returned */
} SObject;

/* Most records one _recv_many_obj call takes. */
#define T_MANY_MAX 256

enum { FK_NONE = 0, FK_LOADS = 1, FK_BYTES = 2, FK_VIEW = 3 };
/* Records up to this size are decoded by _recv_obj (the codec's INLINE_MAX:
 * bigger ones are Encoded, or held in place). */
#define T_FAST_MAX 65536u

/* A message received in place (block policy, >= T_VIEW_MIN bytes): a
 * read-only buffer over the ring; the record is held (publishers do not
 * overwrite it) until released -- deferred while views of it live. */
typedef struct {
    PyObject_HEAD
    SObject *sub;
    const uint8_t *ptr;
    Py_ssize_t len;
    uint64_t pos;
    uint32_t ring;
    int state; /* 0 live, 1 release requested (views alive), 2 done */
    Py_ssize_t exports;
} MObject;

static PyTypeObject *g_sub_type; /* set by il_topic_exec (a strong reference) */
static PyTypeObject *g_msg_type; /* idem */

/* ======================================================================= */
/* helpers                                                                 */
/* ======================================================================= */

/* Take a handle's thread lock (handle_lock.h): 0, or -1 with an exception. */
static inline int hold(il_hlock *lock) { return il_hlock_hold(lock, T_SLICE_NS); }

static inline int64_t slice_left(int64_t deadline, int64_t slice)
{
    int64_t left = deadline - il_now_ns();
    if (left < 0)
        left = 0;
    return left < slice ? left : slice;
}

static PyObject *corrupt(module_state *st)
{
    PyErr_SetString(st->Corrupt, "the topic's shared memory failed a consistency check");
    return NULL;
}

/* ======================================================================= */
/* TopicCore: life cycle                                                   */
/* ======================================================================= */

/* A forked child: the parent's publisher slot stays the parent's. */
static void t_forked(il_handle *h) { ((TObject *)h)->has_writer = 0; }

static int t_release_slot(il_handle *h)
{
    TObject *self = (TObject *)h;
    if (self->has_writer && self->w_fork_gen == il_fork_generation())
        il_topic_pub_release(&self->w);
    self->has_writer = 0;
    return 0;
}

static void t_free_extra(il_handle *h);

static const il_handle_ops t_ops = {
    .closed_msg = "this topic handle is closed",
    .closed_meanwhile_msg = "this topic handle was closed while in use",
    .fork_gen = il_fork_generation,
    .forked = t_forked,
    .release_slot = t_release_slot,
    .free_extra = t_free_extra,
};

static PyObject *t_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    TObject *self = (TObject *)il_handle_new(type, &t_ops);
    if (self == NULL)
        return NULL;
    atomic_init(&self->wlock.held, 0);
    self->wlock.waiters = 0;
    return (PyObject *)self;
}

/* Refuse a closed handle; a forked child attaches as a new user. */
static int t_check(TObject *self) { return il_handle_check(&self->base, il_fork_generation()); }

static int t_attach_area(void *area, void *mem, uint64_t len)
{
    return il_topic_attach((il_topic *)area, mem, len);
}

static PyObject *t_bind(TObject *self, PyObject *buffer)
{
    if (il_handle_bind_area(&self->base, buffer, "topic", t_attach_area, &self->t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int t_traverse(TObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base.dict);
    Py_VISIT(self->f_owner);
    Py_VISIT(self->f_slow);
    Py_VISIT(self->f_closed);
    return il_pickler_traverse(&self->pk, visit, arg);
}

/* The object path's references but the pickler's (il_pickler_set replaces
 * that one). */
static void t_fast_clear(TObject *self)
{
    Py_CLEAR(self->f_owner);
    Py_CLEAR(self->f_slow);
    Py_CLEAR(self->f_closed);
    self->f_has_bytes = 0;
}

static int t_clear(TObject *self)
{
    Py_CLEAR(self->base.dict);
    il_pickler_clear(&self->pk);
    t_fast_clear(self);
    return 0;
}

static void t_free_extra(il_handle *h)
{
    TObject *self = (TObject *)h;
    il_pickler_clear(&self->pk);
    t_fast_clear(self);
}

/* ======================================================================= */
/* TopicCore: publishing                                                   */
/* ======================================================================= */

static int ensure_writer(TObject *self)
{
    if (self->has_writer && self->w_fork_gen == il_fork_generation())
        return 0;
    int rc = il_topic_pub_claim(&self->t, &self->w, self->base.ident);
    if (rc == IL_NOSLOT) {
        PyErr_Format(self->base.st->Busy,
                     "every publisher slot of this topic (%u) is held by a live process",
                     (unsigned)self->t.npub);
        return -1;
    }
    if (rc != IL_OK) {
        corrupt(self->base.st);
        return -1;
    }
    self->has_writer = 1;
    self->w_fork_gen = il_fork_generation();
    return 0;
}

/* Reserve room for len bytes, waiting up to timeout_ns (-1: forever).
 * IL_OK and *ptr, or -1 with an exception set. */
static int reserve(TObject *self, uint64_t len, int64_t timeout_ns, uint8_t **ptr)
{
    int rc = il_topic_pub_reserve(&self->w, len, ptr);
    if (rc == IL_FULL && timeout_ns != 0) {
        int64_t deadline = deadline_for(timeout_ns);
        int64_t next_reap = il_now_ns() + T_REAP_NS;
        for (;;) {
            int64_t slice = slice_left(deadline, T_PUB_SLICE_NS);
            self->base.busy++;
            Py_BEGIN_ALLOW_THREADS
            rc = il_topic_pub_reserve_wait(&self->w, len, ptr, slice);
            if (rc == IL_FULL && il_now_ns() >= next_reap) {
                /* a subscriber killed -9 leaves the wait set */
                if (il_topic_reap_subs(&self->t) > 0)
                    self->w.minc = 0;
                next_reap = il_now_ns() + T_REAP_NS;
                rc = il_topic_pub_reserve(&self->w, len, ptr);
            }
            Py_END_ALLOW_THREADS
            self->base.busy--;
            if (rc != IL_FULL && rc != IL_EINTR)
                break;
            if (PyErr_CheckSignals() < 0 || il_handle_closed_meanwhile(&self->base))
                return -1;
            if (il_now_ns() >= deadline)
                break;
        }
    }
    switch (rc) {
    case IL_OK:
        return IL_OK;
    case IL_FULL:
    case IL_EINTR:
        PyErr_SetString(self->base.st->Timeout,
                        "publish timed out: a subscriber has not consumed what it would "
                        "overwrite (policy 'block')");
        return -1;
    case IL_TOOBIG:
        PyErr_Format(self->base.st->MessageTooLarge,
                     "a message of %llu bytes can never fit this topic (at most %llu)",
                     (unsigned long long)len, (unsigned long long)il_topic_max_payload(&self->t));
        return -1;
    default:
        corrupt(self->base.st);
        return -1;
    }
}

static int parse_pub_timeout(PyObject *o, int64_t *out) { return parse_timeout(o, out); }

/* Publish data (n bytes), followed by an 8-byte trailer unless tail is
 * NULL, as one record (data must stay valid while the GIL is released in
 * reserve()). */
static PyObject *publish_record(TObject *self, const void *data, Py_ssize_t n,
                                const uint8_t *tail, int64_t timeout_ns)
{
    if (t_check(self) < 0 || hold(&self->wlock) < 0)
        return NULL;
    PyObject *result = NULL;
    uint8_t *ptr;
    uint64_t len = (uint64_t)n + (tail != NULL ? 8 : 0);
    if (ensure_writer(self) == 0 && reserve(self, len, timeout_ns, &ptr) == 0) {
        memcpy(ptr, data, (size_t)n);
        if (tail != NULL)
            memcpy(ptr + n, tail, 8);
        il_topic_pub_commit(&self->w, len);
        result = Py_NewRef(Py_None);
    }
    il_hlock_release(&self->wlock);
    il_handle_maybe_release(&self->base);
    return result;
}

PyDoc_STRVAR(t_publish_doc, "publish($self, data, timeout=None, /)\n--\n\n"
                            "Publish one message (a bytes-like object).  Under the block "
                            "policy wait up to timeout seconds for room (Timeout).");

static PyObject *t_publish(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout", NULL};
    PyObject *a[2];
    if (fast_args("publish", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    int64_t timeout_ns;
    if (parse_pub_timeout(a[1], &timeout_ns) < 0 || t_check(self) < 0)
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(a[0], &v, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = publish_record(self, v.buf, v.len, NULL, timeout_ns);
    PyBuffer_Release(&v);
    return result;
}

PyDoc_STRVAR(t_publish_many_doc,
             "publish_many($self, items, timeout=None, /)\n--\n\n"
             "Publish every bytes-like object of a list, in order.  Returns how many "
             "were published (fewer only if the timeout passed; Timeout if none).");

static PyObject *t_publish_many(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"items", "timeout", NULL};
    PyObject *a[2];
    if (fast_args("publish_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    int64_t timeout_ns;
    if (parse_pub_timeout(a[1], &timeout_ns) < 0 || t_check(self) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "publish_many() needs a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), done = 0;
    int64_t deadline = deadline_for(timeout_ns);
    int failed = 0;
    if (hold(&self->wlock) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    if (ensure_writer(self) < 0)
        failed = 1;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &v, PyBUF_SIMPLE) < 0) {
            failed = 1;
            break;
        }
        int64_t left = timeout_ns < 0 ? -1 : deadline - il_now_ns();
        if (left < 0 && timeout_ns >= 0)
            left = 0;
        uint8_t *ptr;
        if (reserve(self, (uint64_t)v.len, left, &ptr) == 0) {
            memcpy(ptr, v.buf, (size_t)v.len);
            il_topic_pub_commit(&self->w, (uint64_t)v.len);
            done++;
        } else {
            failed = 1;
        }
        PyBuffer_Release(&v);
    }
    il_hlock_release(&self->wlock);
    Py_DECREF(seq);
    if (failed) {
        if (done > 0 && PyErr_ExceptionMatches(self->base.st->Timeout)) {
            PyErr_Clear();
            return PyLong_FromSsize_t(done);
        }
        return NULL;
    }
    return PyLong_FromSsize_t(done);
}

PyDoc_STRVAR(t_publish_into_doc,
             "_publish_into($self, size, write, timeout=None, /)\n--\n\n"
             "Reserve size bytes and call write(memoryview) to fill them in place (zero "
             "copy), then publish.  If write raises, nothing is published.");

static PyObject *t_publish_into(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"size", "write", "timeout", NULL};
    PyObject *a[3];
    if (fast_args("_publish_into", args, nargs, kwnames, names, 2, a) < 0)
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(a[0]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    int64_t timeout_ns;
    if (parse_pub_timeout(a[2], &timeout_ns) < 0 || t_check(self) < 0)
        return NULL;
    if (hold(&self->wlock) < 0)
        return NULL;
    PyObject *result = NULL;
    uint8_t *ptr;
    if (ensure_writer(self) == 0 && reserve(self, (uint64_t)size, timeout_ns, &ptr) == 0) {
        PyObject *mv = PyMemoryView_FromMemory((char *)ptr, size, PyBUF_WRITE);
        if (mv != NULL) {
            self->base.busy++; /* the mapping must outlive the writer's call */
            PyObject *r = PyObject_CallOneArg(a[1], mv);
            self->base.busy--;
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb); /* the writer's error, if any, wins */
            PyObject *rel = PyObject_CallMethod(mv, "release", NULL);
            if (rel == NULL && r != NULL)
                Py_CLEAR(r); /* the view is still exported: do not publish (BufferError) */
            else if (rel == NULL)
                PyErr_Clear();
            if (et != NULL)
                PyErr_Restore(et, ev, tb);
            Py_XDECREF(rel);
            Py_DECREF(mv);
            if (r != NULL) {
                Py_DECREF(r);
                if (self->base.closed) {
                    il_handle_closed_meanwhile(&self->base);
                } else {
                    il_topic_pub_commit(&self->w, (uint64_t)size);
                    result = Py_NewRef(Py_None);
                }
            }
        }
    }
    il_hlock_release(&self->wlock);
    il_handle_maybe_release(&self->base);
    return result;
}

/* ======================================================================= */
/* TopicCore: the object fast path (Topic.publish)                         */
/* ======================================================================= */

PyDoc_STRVAR(t_fast_setup_doc,
             "_fast_setup($self, *, owner, slow, closed, codec, encode_error, bytes_tail=None, "
             "dumps=None, plain_tail=None, limit=0, watch=0)\n--\n\n"
             "Configure _publish_obj, the Topic's publish.  Exact bytes objects are "
             "published as obj + `bytes_tail` (8 bytes; None: never).  With `dumps` "
             "(pickle.dumps) other objects except bytearray/memoryview are pickled while "
             "`codec._watch` is 0: a pickle shorter than `limit` is published as pickle + "
             "`plain_tail`; a longer one sets `codec._watch = watch`.  Everything else, and "
             "a closed handle, goes to slow(owner(), obj, timeout) (`closed` is raised when "
             "owner() is None).  `encode_error(obj, exc)` builds the error of a failed dumps.");

static int tail8(PyObject *o, uint8_t out[8], const char *what)
{
    if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) != 8) {
        PyErr_Format(PyExc_ValueError, "%s must be 8 bytes", what);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(o), 8);
    return 0;
}

static PyObject *t_fast_setup(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"owner",      "slow",  "closed",     "codec",
                                        "encode_error", "bytes_tail", "dumps", "plain_tail",
                                        "limit",      "watch", NULL};
    PyObject *a[10];
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "_fast_setup() takes keyword arguments only");
        return NULL;
    }
    if (fast_args("_fast_setup", args, nargs, kwnames, names, 5, a) < 0)
        return NULL;
    if (!PyCallable_Check(a[0]) || !PyCallable_Check(a[1]) || !PyCallable_Check(a[4])) {
        PyErr_SetString(PyExc_TypeError, "owner, slow and encode_error must be callable");
        return NULL;
    }
    uint8_t btail[8], ptail[8];
    int has_bytes = a[5] != NULL && a[5] != Py_None;
    if (has_bytes && tail8(a[5], btail, "bytes_tail") < 0)
        return NULL;
    PyObject *dumps = a[6] == Py_None ? NULL : a[6];
    if (dumps != NULL && (a[7] == NULL || tail8(a[7], ptail, "plain_tail") < 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "dumps needs plain_tail");
        return NULL;
    }
    Py_ssize_t lim = 0;
    if (a[8] != NULL && (lim = PyLong_AsSsize_t(a[8])) == -1 && PyErr_Occurred())
        return NULL;
    if (il_pickler_set(&self->pk, a[3], a[4], dumps, lim, a[9]) < 0)
        return NULL;
    t_fast_clear(self);
    self->f_owner = Py_NewRef(a[0]);
    self->f_slow = Py_NewRef(a[1]);
    self->f_closed = Py_NewRef(a[2]);
    self->f_has_bytes = has_bytes;
    if (has_bytes)
        memcpy(self->f_bytes_tail, btail, 8);
    if (dumps != NULL)
        memcpy(self->f_plain_tail, ptail, 8);
    Py_RETURN_NONE;
}

/* slow(owner(), obj, timeout): the Topic's Python publish. */
static PyObject *t_publish_slow(TObject *self, PyObject *obj, PyObject *timeout)
{
    if (self->f_owner == NULL) {
        PyErr_SetString(self->base.st->Closed, "this topic handle is not set up for objects");
        return NULL;
    }
    PyObject *topic = PyObject_CallNoArgs(self->f_owner);
    if (topic == NULL)
        return NULL;
    if (topic == Py_None) {
        Py_DECREF(topic);
        PyErr_SetString(self->f_closed, "the topic handle is closed (its Topic is gone)");
        return NULL;
    }
    PyObject *v[3] = {topic, obj, timeout ? timeout : Py_None};
    PyObject *r = PyObject_Vectorcall(self->f_slow, v, 3, NULL);
    Py_DECREF(topic);
    return r;
}

PyDoc_STRVAR(t_publish_obj_doc,
             "_publish_obj($self, obj, timeout=None)\n--\n\n"
             "Topic.publish: publish `obj` to every subscriber (under the block policy wait "
             "up to `timeout` seconds for room).  Exact bytes and small pickles are framed "
             "and written in this one call; anything else goes through the Topic's codec "
             "path (see _fast_setup).  Raises as Topic.publish.");

static PyObject *t_publish_obj(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"obj", "timeout", NULL};
    PyObject *a[2];
    if (fast_args("publish", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    PyObject *obj = a[0];
    if (self->base.closed || self->f_owner == NULL)
        return t_publish_slow(self, obj, a[1]);
    if (Py_IS_TYPE(obj, &PyBytes_Type)) {
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        if (!self->f_has_bytes || (uint64_t)n + 8 > T_FAST_MAX)
            return t_publish_slow(self, obj, a[1]);
        int64_t timeout_ns;
        if (parse_pub_timeout(a[1], &timeout_ns) < 0)
            return NULL;
        /* obj is immutable and referenced by the caller's arguments: valid
         * while the GIL is released in reserve() */
        return publish_record(self, PyBytes_AS_STRING(obj), n, self->f_bytes_tail, timeout_ns);
    }
    if (self->pk.dumps == NULL || Py_IS_TYPE(obj, &PyByteArray_Type) ||
        Py_IS_TYPE(obj, &PyMemoryView_Type))
        return t_publish_slow(self, obj, a[1]);
    int watching = il_pickler_watching(&self->pk);
    if (watching < 0)
        return NULL;
    if (watching)
        return t_publish_slow(self, obj, a[1]);
    int64_t timeout_ns;
    if (parse_pub_timeout(a[1], &timeout_ns) < 0)
        return NULL;
    PyObject *d;
    int got = il_pickler_dumps(&self->pk, obj, &d);
    if (got < 0)
        return NULL;
    if (got == 0) /* may hold an out-of-band buffer: the codec pickles it again, watching */
        return t_publish_slow(self, obj, a[1]);
    /* pickling ran Python code: the handle may have been closed meanwhile
     * (publish_record's t_check raises Closed then) */
    PyObject *r = publish_record(self, PyBytes_AS_STRING(d), PyBytes_GET_SIZE(d),
                                 self->f_plain_tail, timeout_ns);
    Py_DECREF(d);
    return r;
}

/* ======================================================================= */
/* TopicCore: other methods                                                */
/* ======================================================================= */

PyDoc_STRVAR(t_subscribe_doc,
             "subscribe($self, history=0, /)\n--\n\n"
             "A new TopicSubscriberCore: every message published from now on, plus up to "
             "`history` earlier ones per publisher ring.");

static PyObject *t_subscribe(TObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"history", NULL};
    PyObject *a[1];
    if (fast_args("subscribe", args, nargs, kwnames, names, 0, a) < 0)
        return NULL;
    unsigned long long history = 0;
    if (a[0] != NULL) {
        history = PyLong_AsUnsignedLongLong(a[0]);
        if (history == (unsigned long long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "history must be >= 0");
            }
            return NULL;
        }
    }
    if (t_check(self) < 0)
        return NULL;
    SObject *s = PyObject_GC_New(SObject, g_sub_type);
    if (s == NULL)
        return NULL;
    s->topic = (TObject *)Py_NewRef(self);
    s->joined = 0;
    s->spin_ns = 20000;
    s->weakreflist = NULL;
    s->f_decode = s->f_loads = s->f_errors = s->f_failed = NULL;
    s->f_n = 0;
    s->fork_gen = il_fork_generation();
    atomic_init(&s->lock.held, 0);
    s->lock.waiters = 0;
    PyObject_GC_Track(s);
    int rc = il_topic_sub_join(&self->t, &s->r, self->base.ident, (uint64_t)history);
    if (rc == IL_NOSLOT && il_topic_reap_subs(&self->t) > 0)
        rc = il_topic_sub_join(&self->t, &s->r, self->base.ident, (uint64_t)history);
    if (rc != IL_OK) {
        Py_DECREF(s);
        if (rc == IL_NOSLOT)
            PyErr_Format(self->base.st->Busy,
                         "every subscriber slot of this topic (%u) is held by a live process",
                         (unsigned)self->t.nsub);
        else
            corrupt(self->base.st);
        return NULL;
    }
    s->joined = 1;
    self->base.live++;
    return (PyObject *)s;
}

static PyObject *t_counts(TObject *self, PyObject *Py_UNUSED(ignored))
{
    if (t_check(self) < 0)
        return NULL;
    uint32_t p = 0, s = 0;
    Py_BEGIN_ALLOW_THREADS
    il_topic_counts(&self->t, &p, &s);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(II)", p, s);
}

static PyObject *t_get_policy(TObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(self->t.policy);
}

static PyObject *t_get_max_payload(TObject *self, void *Py_UNUSED(c))
{
    return U64(self->base.has_buf ? il_topic_max_payload(&self->t) : 0);
}

static PyObject *t_get_ring_bytes(TObject *self, void *Py_UNUSED(c)) { return U64(self->t.cap); }

static PyObject *t_get_max_publishers(TObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(self->t.npub);
}

static PyObject *t_get_max_subscribers(TObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(self->t.nsub);
}

static PyGetSetDef t_getset[] = {
    {"policy", (getter)t_get_policy, NULL, "TOPIC_DROP or TOPIC_BLOCK.", NULL},
    {"max_payload", (getter)t_get_max_payload, NULL, "Largest message in bytes.", NULL},
    {"ring_bytes", (getter)t_get_ring_bytes, NULL, "Bytes of each publisher's ring.", NULL},
    {"max_publishers", (getter)t_get_max_publishers, NULL, "Publisher slots.", NULL},
    {"max_subscribers", (getter)t_get_max_subscribers, NULL, "Subscriber slots.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef t_methods[] = {
    {"_bind", (PyCFunction)t_bind, METH_O, "Bind to a formatted topic segment."},
    {"_close", il_handle_close, METH_NOARGS,
     "Give the publisher slot back and detach; the mapping is released when no "
     "subscription uses it any more."},
    {"publish", (PyCFunction)(void (*)(void))t_publish, FASTKW, t_publish_doc},
    {"publish_many", (PyCFunction)(void (*)(void))t_publish_many, FASTKW, t_publish_many_doc},
    {"_publish_into", (PyCFunction)(void (*)(void))t_publish_into, FASTKW, t_publish_into_doc},
    {"_fast_setup", (PyCFunction)(void (*)(void))t_fast_setup, FASTKW, t_fast_setup_doc},
    {"_publish_obj", (PyCFunction)(void (*)(void))t_publish_obj, FASTKW, t_publish_obj_doc},
    {"subscribe", (PyCFunction)(void (*)(void))t_subscribe, FASTKW, t_subscribe_doc},
    {"counts", (PyCFunction)t_counts, METH_NOARGS,
     "(live publishers, live subscribers): a snapshot."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot t_slots[] = {
    {Py_tp_doc, "The native half of interlink.Topic."},
    {Py_tp_new, t_new},
    {Py_tp_dealloc, il_handle_dealloc},
    {Py_tp_traverse, t_traverse},
    {Py_tp_clear, t_clear},
    {Py_tp_methods, t_methods},
    {Py_tp_getset, t_getset},
    {Py_tp_members, il_handle_members},
    {0, NULL},
};

static PyType_Spec t_spec = {
    "interlink._native.TopicCore",
    sizeof(TObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    t_slots,
};

/* ======================================================================= */
/* TopicSubscriberCore                                                     */
/* ======================================================================= */

static void s_leave(SObject *s)
{
    if (!s->joined)
        return;
    s->joined = 0;
    TObject *t = s->topic;
    if (t->base.has_buf && s->fork_gen == il_fork_generation())
        il_topic_sub_leave(&s->r);
    t->base.live--;
    il_handle_maybe_release(&t->base);
}

static int s_check(SObject *s)
{
    if (!s->joined || !s->topic->base.has_buf) {
        PyErr_SetString(s->topic->base.st->Closed, "this subscription is closed");
        return -1;
    }
    if (s->fork_gen != il_fork_generation()) {
        PyErr_SetString(s->topic->base.st->Closed,
                        "this subscription belongs to the parent process (subscribe again "
                        "after fork)");
        return -1;
    }
    return 0;
}

/* ======================================================================= */
/* TopicMessage                                                            */
/* ======================================================================= */

static void m_do_release(MObject *m)
{
    SObject *s = m->sub;
    m->state = 2;
    if (s->joined && s->topic->base.has_buf && s->fork_gen == il_fork_generation())
        il_topic_sub_release(&s->r, m->ring, m->pos);
    s->topic->base.live--;
    il_handle_maybe_release(&s->topic->base);
}

static PyObject *m_make(SObject *s, const il_topic_rec *rec)
{
    MObject *m = PyObject_New(MObject, g_msg_type);
    if (m == NULL)
        return NULL;
    m->sub = (SObject *)Py_NewRef(s);
    m->ptr = rec->ptr;
    m->len = (Py_ssize_t)rec->len;
    m->pos = rec->pos;
    m->ring = rec->ring;
    m->state = 0;
    m->exports = 0;
    s->topic->base.live++;
    return (PyObject *)m;
}

static void m_dealloc(MObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    if (m->state != 2)
        m_do_release(m);
    Py_DECREF(m->sub);
    PyObject_Free(m);
    Py_DECREF(tp);
}

static int m_getbuffer(MObject *m, Py_buffer *view, int flags)
{
    if (m->state != 0) {
        PyErr_SetString(PyExc_ValueError, "the message was released");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)m, (void *)m->ptr, m->len, 1, flags) < 0)
        return -1;
    m->exports++;
    return 0;
}

static void m_releasebuffer(MObject *m, Py_buffer *Py_UNUSED(view))
{
    if (--m->exports == 0 && m->state == 1)
        m_do_release(m);
}

static PyObject *m_release(MObject *m, PyObject *Py_UNUSED(ignored))
{
    if (m->state == 0) {
        if (m->exports > 0)
            m->state = 1; /* when the last view goes */
        else
            m_do_release(m);
    }
    Py_RETURN_NONE;
}

static PyObject *m_tobytes(MObject *m, PyObject *Py_UNUSED(ignored))
{
    if (m->state != 0) {
        PyErr_SetString(PyExc_ValueError, "the message was released");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)m->ptr, m->len);
}

static Py_ssize_t m_len(MObject *m) { return m->len; }

static PyObject *m_get_released(MObject *m, void *Py_UNUSED(c))
{
    return PyBool_FromLong(m->state != 0);
}

static PyObject *m_enter(MObject *m, PyObject *Py_UNUSED(ignored)) { return Py_NewRef(m); }

static PyObject *m_exit(MObject *m, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(n))
{
    return m_release(m, NULL);
}

static PyMethodDef m_methods[] = {
    {"release", (PyCFunction)m_release, METH_NOARGS,
     "Let publishers overwrite the record (deferred while views of it live)."},
    {"tobytes", (PyCFunction)m_tobytes, METH_NOARGS, "A copy of the message's bytes."},
    {"__enter__", (PyCFunction)m_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))m_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef m_getset[] = {
    {"released", (getter)m_get_released, NULL, "Whether release() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot m_slots[] = {
    {Py_tp_doc, "A topic message received in place: a read-only buffer over shared memory."},
    {Py_tp_dealloc, m_dealloc},
    {Py_tp_methods, m_methods},
    {Py_tp_getset, m_getset},
    {Py_bf_getbuffer, m_getbuffer},
    {Py_bf_releasebuffer, m_releasebuffer},
    {Py_sq_length, m_len},
    {Py_mp_length, m_len},
    {0, NULL},
};

static PyType_Spec m_spec = {
    "interlink._native.TopicMessage",
    sizeof(MObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    m_slots,
};

/* The fast kind of a record whose last 8 bytes are at tail (FK_NONE: the
 * codec decodes it). */
static int s_fast_kind(const SObject *s, const uint8_t *tail)
{
    for (int i = 0; i < s->f_n; i++)
        if (memcmp(tail, s->f_tail[i], 8) == 0)
            return s->f_kind[i];
    return FK_NONE;
}

/* One attempt: the next message (a copy, or a TopicMessage held in place),
 * NULL without an exception when there is none, NULL with an exception on
 * damage.  With `kind` (the object path): a small record of a fast kind is
 * copied without its trailer when the kind wants the payload alone, and
 * *kind says which; otherwise *kind is FK_NONE. */
static PyObject *s_try(SObject *s, int *kind)
{
    for (;;) {
        il_topic_rec m;
        int rc = il_topic_sub_peek(&s->r, &m);
        if (rc == IL_EMPTY)
            return NULL;
        if (rc != IL_OK)
            return corrupt(s->topic->base.st);
        if (m.len >= T_VIEW_MIN && il_topic_sub_can_hold(&s->r, &m)) {
            if (il_topic_sub_consume_hold(&s->r, &m) != IL_OK)
                continue;
            PyObject *v = m_make(s, &m);
            if (v == NULL)
                il_topic_sub_release(&s->r, m.ring, m.pos);
            return v;
        }
        /* Under DROP the trailer read here may be torn: consume() validates
         * it together with the copy (both lie between peek and consume). */
        int k = FK_NONE;
        if (kind != NULL && s->f_n > 0 && m.len >= 8 && m.len <= T_FAST_MAX)
            k = s_fast_kind(s, m.ptr + m.len - 8);
        Py_ssize_t n = (Py_ssize_t)m.len - (k == FK_BYTES || k == FK_VIEW ? 8 : 0);
        PyObject *b = PyBytes_FromStringAndSize((const char *)m.ptr, n);
        if (b == NULL)
            return NULL;
        if (il_topic_sub_consume(&s->r, &m) == IL_OK) {
            if (kind != NULL)
                *kind = k;
            return b;
        }
        Py_DECREF(b); /* overwritten while copied (drop policy): skip ahead */
    }
}

/* Wait for and take the next message (the first attempt failed). */
static PyObject *s_wait(SObject *s, int64_t timeout_ns, int *kind)
{
    TObject *t = s->topic;
    PyObject *out = NULL;
    int64_t deadline = deadline_for(timeout_ns);
    /* spin a little (GIL released): adaptive, as Channel's receiver */
    int found = 0;
    int64_t spin = s->spin_ns;
    t->base.busy++;
    Py_BEGIN_ALLOW_THREADS
    int64_t until = il_now_ns() + spin;
    if (until > deadline)
        until = deadline;
    do {
        for (int k = 0; k < 64; k++)
            il_cpu_relax();
        if (il_topic_sub_ready(&s->r)) {
            found = 1;
            break;
        }
    } while (il_now_ns() < until);
    Py_END_ALLOW_THREADS
    t->base.busy--;
    s->spin_ns = found ? (spin * 2 > T_SPIN_MAX_NS ? T_SPIN_MAX_NS : spin * 2)
                       : (spin / 2 < T_SPIN_MIN_NS ? T_SPIN_MIN_NS : spin / 2);
    for (;;) {
        if (t->base.closed || !s->joined) {
            PyErr_SetString(t->base.st->Closed, "this subscription was closed while in use");
            return NULL;
        }
        out = s_try(s, kind);
        if (out != NULL || PyErr_Occurred())
            return out;
        int64_t slice = slice_left(deadline, T_SLICE_NS);
        if (slice <= 0) {
            PyErr_SetString(t->base.st->Timeout, "no message within the timeout");
            return NULL;
        }
        t->base.busy++;
        Py_BEGIN_ALLOW_THREADS
        il_topic_sub_wait(&s->r, slice);
        Py_END_ALLOW_THREADS
        t->base.busy--;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

PyDoc_STRVAR(s_recv_doc, "recv($self, timeout=None, /)\n--\n\n"
                         "The next message as bytes; waits up to timeout seconds (None: "
                         "forever), then raises Timeout.");

static PyObject *s_take(SObject *s, int64_t timeout_ns, int *kind);

static PyObject *s_recv(SObject *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int64_t timeout_ns = -1;
    if (nargs || kwnames) {
        static const char *const names[] = {"timeout", NULL};
        PyObject *a[1];
        if (fast_args("recv", args, nargs, kwnames, names, 0, a) < 0 ||
            parse_timeout(a[0], &timeout_ns) < 0)
            return NULL;
    }
    return s_take(s, timeout_ns, NULL);
}

/* recv's body: the next message within timeout_ns (see s_try for kind). */
static PyObject *s_take(SObject *s, int64_t timeout_ns, int *kind)
{
    if (s_check(s) < 0 || hold(&s->lock) < 0)
        return NULL;
    TObject *t = s->topic;
    PyObject *out = s_try(s, kind);
    if (out == NULL && !PyErr_Occurred() && timeout_ns != 0)
        out = s_wait(s, timeout_ns, kind);
    il_hlock_release(&s->lock);
    if (out == NULL && !PyErr_Occurred())
        PyErr_SetString(t->base.st->Timeout, "no message available");
    il_handle_maybe_release(&t->base);
    return out;
}

PyDoc_STRVAR(s_fast_setup_doc,
             "_fast_setup($self, *, decode, errors=(), loads=None, plain_tail=None, "
             "raw_tail=None, view_tail=None)\n--\n\n"
             "Configure _recv_obj, the Subscription's recv.  A record of at most 64 KiB "
             "whose last 8 bytes equal `plain_tail` is unpickled by `loads` (its `errors`, "
             "a tuple, become Corrupt); one ending in `raw_tail` is returned as the bytes "
             "before the trailer, one ending in `view_tail` as a memoryview of them.  "
             "Every other record (bytes, or a TopicMessage) goes to decode(record).");

static PyObject *s_fast_setup(SObject *s, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"decode",     "errors",   "loads",     "plain_tail",
                                        "raw_tail", "view_tail", NULL};
    PyObject *a[6];
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "_fast_setup() takes keyword arguments only");
        return NULL;
    }
    if (fast_args("_fast_setup", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    if (!PyCallable_Check(a[0])) {
        PyErr_SetString(PyExc_TypeError, "decode must be callable");
        return NULL;
    }
    PyObject *errors = a[1] != NULL ? a[1] : NULL;
    if (errors != NULL && !PyTuple_Check(errors)) {
        PyErr_SetString(PyExc_TypeError, "errors must be a tuple of exception types");
        return NULL;
    }
    PyObject *loads = a[2] == Py_None ? NULL : a[2];
    uint8_t tails[3][8];
    int kinds[3], n = 0;
    static const int kind_of[3] = {FK_LOADS, FK_BYTES, FK_VIEW};
    for (int i = 0; i < 3; i++) {
        PyObject *o = a[3 + i];
        if (o == NULL || o == Py_None)
            continue;
        if (i == 0 && loads == NULL)
            continue; /* no loads: plain pickles go to decode */
        if (tail8(o, tails[n], names[3 + i]) < 0)
            return NULL;
        kinds[n++] = kind_of[i];
    }
    Py_XSETREF(s->f_decode, Py_NewRef(a[0]));
    Py_XSETREF(s->f_loads, Py_XNewRef(loads));
    Py_XSETREF(s->f_errors, errors != NULL ? Py_NewRef(errors) : PyTuple_New(0));
    if (s->f_errors == NULL)
        return NULL;
    memcpy(s->f_tail, tails, sizeof tails);
    memcpy(s->f_kind, kinds, sizeof kinds);
    s->f_n = n;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(s_recv_obj_doc,
             "_recv_obj($self, timeout=None)\n--\n\n"
             "Subscription.recv: the next object, waiting up to `timeout` seconds (None: "
             "forever).  Small records of this user's codec are decoded in this one call; "
             "every other goes to the codec (see _fast_setup).  Raises Timeout, Closed, "
             "Corrupt, AccessDenied as Subscription.recv.");

/* The object of a record s_try/s_take returned (data: a new reference,
 * consumed). */
static PyObject *s_decode(SObject *s, PyObject *data, int kind)
{
    PyObject *r;
    switch (kind) {
    case FK_BYTES:
        return data;
    case FK_VIEW:
        r = PyMemoryView_FromObject(data);
        break;
    case FK_LOADS:
        /* pickle.loads stops at STOP: the trailer after it is ignored */
        r = PyObject_CallOneArg(s->f_loads, data);
        if (r == NULL && PyErr_ExceptionMatches(s->f_errors))
            il_corrupt_from_current(s->topic->base.st);
        break;
    default:
        r = PyObject_CallOneArg(s->f_decode, data);
        break;
    }
    Py_DECREF(data);
    return r;
}

/* 0 when the object path may run; -1 with an exception: not set up, or the
 * error a previous _recv_many_obj met after the items it returned (raised
 * once, now). */
static int s_obj_ready(SObject *s)
{
    if (s->f_decode == NULL) {
        PyErr_SetString(s->topic->base.st->Closed, "this subscription is not set up for objects");
        return -1;
    }
    if (s->f_failed != NULL) {
        PyObject *exc = s->f_failed;
        s->f_failed = NULL;
        il_raise_from(exc, NULL);
        return -1;
    }
    return 0;
}

static PyObject *s_recv_obj(SObject *s, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    int64_t timeout_ns = -1;
    if (nargs || kwnames) {
        static const char *const names[] = {"timeout", NULL};
        PyObject *a[1];
        if (fast_args("recv", args, nargs, kwnames, names, 0, a) < 0 ||
            parse_timeout(a[0], &timeout_ns) < 0)
            return NULL;
    }
    if (s_obj_ready(s) < 0)
        return NULL;
    int kind = FK_NONE;
    PyObject *data = s_take(s, timeout_ns, &kind);
    return data == NULL ? NULL : s_decode(s, data, kind);
}

PyDoc_STRVAR(s_recv_many_obj_doc,
             "_recv_many_obj($self, max_items=64, timeout=None)\n--\n\n"
             "Subscription.recv_many: wait up to `timeout` seconds (None: forever) for the "
             "next message, then take every message already there, up to `max_items` "
             "(1..256) in all, and return their objects in order.  A record that cannot be "
             "decoded (damaged, a refused pickle) is skipped; its error is raised by the "
             "next receive, or now when nothing else was received.  Raises Timeout, Closed, "
             "Corrupt, AccessDenied as recv.");

static PyObject *s_recv_many_obj(SObject *s, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "timeout", NULL};
    PyObject *a[2];
    if (fast_args("recv_many", args, nargs, kwnames, names, 0, a) < 0)
        return NULL;
    Py_ssize_t want = 64;
    if (a[0] != NULL && (want = PyLong_AsSsize_t(a[0])) == -1 && PyErr_Occurred())
        return NULL;
    if (want < 1 || want > T_MANY_MAX) {
        PyErr_Format(PyExc_ValueError, "max_items must be within 1..%d", T_MANY_MAX);
        return NULL;
    }
    int64_t timeout_ns = -1;
    if (parse_timeout(a[1], &timeout_ns) < 0 || s_obj_ready(s) < 0)
        return NULL;
    PyObject *raw[T_MANY_MAX];
    int kinds[T_MANY_MAX];
    kinds[0] = FK_NONE;
    raw[0] = s_take(s, timeout_ns, &kinds[0]); /* waits for the first */
    if (raw[0] == NULL)
        return NULL;
    /* The rest without waiting, under one hold of the receive lock; no
     * Python code runs until the lock is released (a decoder may receive). */
    Py_ssize_t got = 1;
    PyObject *failed = NULL;
    TObject *t = s->topic;
    if (s_check(s) == 0 && hold(&s->lock) == 0) {
        for (; got < want; got++) {
            kinds[got] = FK_NONE;
            raw[got] = s_try(s, &kinds[got]);
            if (raw[got] == NULL)
                break;
        }
        il_hlock_release(&s->lock);
        il_handle_maybe_release(&t->base);
    }
    if (PyErr_Occurred())
        failed = il_fetch_exc();
    /* Decode in order.  A record that cannot be decoded is skipped (it is
     * consumed, as by recv()); the first such error -- before any error of
     * the ring met after the batch -- is raised now if nothing was decoded,
     * else by the next receive. */
    PyObject *list = PyList_New(0);
    PyObject *first_err = NULL;
    for (Py_ssize_t k = 0; k < got; k++) {
        PyObject *o = list != NULL ? s_decode(s, raw[k], kinds[k]) : NULL;
        if (list == NULL)
            Py_DECREF(raw[k]);
        if (o != NULL && PyList_Append(list, o) == 0) {
            Py_DECREF(o);
            continue;
        }
        Py_XDECREF(o);
        if (list != NULL && first_err == NULL)
            first_err = il_fetch_exc();
        else if (list != NULL)
            PyErr_Clear();
    }
    if (first_err != NULL) {
        Py_XDECREF(failed);
        failed = first_err;
    }
    if (list == NULL || PyList_GET_SIZE(list) == 0) {
        Py_XDECREF(list);
        if (list != NULL && failed != NULL)
            il_raise_from(failed, NULL);
        else
            Py_XDECREF(failed);
        return NULL;
    }
    if (failed != NULL)
        Py_XSETREF(s->f_failed, failed);
    return list;
}

static PyObject *s_close(SObject *s, PyObject *Py_UNUSED(ignored))
{
    if (s->joined) {
        if (hold(&s->lock) < 0)
            return NULL;
        s_leave(s);
        il_hlock_release(&s->lock);
    }
    Py_RETURN_NONE;
}

static PyObject *s_get_lost(SObject *s, void *Py_UNUSED(c)) { return U64(s->r.lost); }
static PyObject *s_get_received(SObject *s, void *Py_UNUSED(c)) { return U64(s->r.received); }
static PyObject *s_get_closed(SObject *s, void *Py_UNUSED(c))
{
    return PyBool_FromLong(!s->joined || !s->topic->base.has_buf);
}

static int s_traverse(SObject *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->topic);
    Py_VISIT(s->f_decode);
    Py_VISIT(s->f_loads);
    Py_VISIT(s->f_errors);
    Py_VISIT(s->f_failed);
    return 0;
}

static int s_clear(SObject *s)
{
    Py_CLEAR(s->f_decode);
    Py_CLEAR(s->f_loads);
    Py_CLEAR(s->f_errors);
    Py_CLEAR(s->f_failed);
    s->f_n = 0;
    return 0;
}

static void s_dealloc(SObject *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    if (s->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)s);
    if (s->topic != NULL)
        s_leave(s);
    s_clear(s);
    Py_CLEAR(s->topic);
    PyObject_GC_Del(s);
    Py_DECREF(tp);
}

static PyGetSetDef s_getset[] = {
    {"lost", (getter)s_get_lost, NULL,
     "Messages this subscriber missed because it was lapped (drop policy).", NULL},
    {"received", (getter)s_get_received, NULL, "Messages received.", NULL},
    {"closed", (getter)s_get_closed, NULL, "Whether close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef s_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef s_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))s_recv, FASTKW, s_recv_doc},
    {"_recv_obj", (PyCFunction)(void (*)(void))s_recv_obj, FASTKW, s_recv_obj_doc},
    {"_recv_many_obj", (PyCFunction)(void (*)(void))s_recv_many_obj, FASTKW,
     s_recv_many_obj_doc},
    {"_fast_setup", (PyCFunction)(void (*)(void))s_fast_setup, FASTKW, s_fast_setup_doc},
    {"close", (PyCFunction)s_close, METH_NOARGS, "Leave the topic (idempotent)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot s_slots[] = {
    {Py_tp_doc, "The native half of interlink.Subscription."},
    {Py_tp_dealloc, s_dealloc},
    {Py_tp_traverse, s_traverse},
    {Py_tp_clear, s_clear},
    {Py_tp_methods, s_methods},
    {Py_tp_getset, s_getset},
    {Py_tp_members, s_members},
    {0, NULL},
};

static PyType_Spec s_spec = {
    "interlink._native.TopicSubscriberCore",
    sizeof(SObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    s_slots,
};

/* ======================================================================= */
/* formatting and registration                                             */
/* ======================================================================= */

static PyObject *mod_topic_segment_size(PyObject *Py_UNUSED(m), PyObject *args)
{
    unsigned long npub, nsub;
    unsigned long long ring;
    if (!PyArg_ParseTuple(args, "kkK:topic_segment_size", &npub, &nsub, &ring))
        return NULL;
    uint64_t sz = 0;
    if (npub <= IL_TOPIC_MAX_PUB && nsub <= IL_TOPIC_MAX_SUB)
        sz = il_topic_size_for((uint32_t)npub, (uint32_t)nsub, ring, NULL);
    if (sz == 0) {
        PyErr_Format(PyExc_ValueError,
                     "publishers must be within 1..%u, subscribers within 1..%u and the "
                     "capacity at most 2**36 bytes",
                     (unsigned)IL_TOPIC_MAX_PUB, (unsigned)IL_TOPIC_MAX_SUB);
        return NULL;
    }
    return U64(IL_SEG_HEADER_SIZE + sz);
}

static PyObject *mod_topic_format(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *obj;
    unsigned long npub, nsub, policy;
    unsigned long long ring;
    if (!PyArg_ParseTuple(args, "OkkKk:topic_format", &obj, &npub, &nsub, &ring, &policy))
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_WRITABLE) < 0)
        return NULL;
    int rc = IL_INVALID;
    il_topic t;
    if ((size_t)v.len > IL_SEG_HEADER_SIZE && npub <= IL_TOPIC_MAX_PUB &&
        nsub <= IL_TOPIC_MAX_SUB && policy <= IL_TOPIC_BLOCK)
        rc = il_topic_init(&t, (char *)v.buf + IL_SEG_HEADER_SIZE,
                           (uint64_t)v.len - IL_SEG_HEADER_SIZE, (uint32_t)npub,
                           (uint32_t)nsub, ring, (uint32_t)policy);
    PyBuffer_Release(&v);
    if (rc != IL_OK) {
        PyErr_SetString(PyExc_ValueError, "cannot format a topic with these sizes in this buffer "
                                          "(see topic_segment_size)");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* For `interlink ls`: (policy, live publishers, live subscribers, ring bytes)
 * of a topic segment mapped read-only, or None if it does not validate. */
static PyObject *mod_topic_snapshot(PyObject *Py_UNUSED(m), PyObject *obj)
{
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    il_topic t;
    if ((size_t)v.len > IL_SEG_HEADER_SIZE &&
        il_topic_attach(&t, (char *)v.buf + IL_SEG_HEADER_SIZE,
                        (uint64_t)v.len - IL_SEG_HEADER_SIZE) == IL_OK) {
        uint32_t p = 0, s = 0;
        il_topic_counts(&t, &p, &s);
        result = Py_BuildValue("(kIIK)", (unsigned long)t.policy, p, s,
                               (unsigned long long)t.cap);
    }
    PyBuffer_Release(&v);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static PyMethodDef topic_module_methods[] = {
    {"topic_segment_size", mod_topic_segment_size, METH_VARARGS,
     "topic_segment_size(publishers, subscribers, ring_bytes): bytes of a topic segment "
     "(header page included)."},
    {"topic_format", mod_topic_format, METH_VARARGS,
     "topic_format(buffer, publishers, subscribers, ring_bytes, policy): format a new topic "
     "segment."},
    {"topic_snapshot", mod_topic_snapshot, METH_O,
     "topic_snapshot(buffer): (policy, live publishers, live subscribers, ring bytes) or "
     "None if the segment does not validate (read-only is fine)."},
    {NULL, NULL, 0, NULL},
};

int il_topic_exec(PyObject *m, module_state *st);

int il_topic_exec(PyObject *m, module_state *st)
{
    (void)st;
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(m, &t_spec, NULL);
    if (tp == NULL)
        return -1;
    int rc = PyModule_AddType(m, tp);
    Py_DECREF(tp);
    if (rc < 0)
        return -1;
    PyTypeObject *sp = (PyTypeObject *)PyType_FromModuleAndSpec(m, &s_spec, NULL);
    if (sp == NULL)
        return -1;
    if (PyModule_AddType(m, sp) < 0) {
        Py_DECREF(sp);
        return -1;
    }
    Py_XSETREF(g_sub_type, sp); /* keeps the reference */
    PyTypeObject *mt = (PyTypeObject *)PyType_FromModuleAndSpec(m, &m_spec, NULL);
    if (mt == NULL)
        return -1;
    if (PyModule_AddType(m, mt) < 0) {
        Py_DECREF(mt);
        return -1;
    }
    Py_XSETREF(g_msg_type, mt);
    if (PyModule_AddFunctions(m, topic_module_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "KIND_TOPIC", IL_KIND_TOPIC) < 0 ||
        PyModule_AddIntConstant(m, "SEG_TOPIC_DESC", IL_SEG_TOPIC_DESC) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_DROP", IL_TOPIC_DROP) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_BLOCK", IL_TOPIC_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_MAX_PUBLISHERS", IL_TOPIC_MAX_PUB) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_MAX_SUBSCRIBERS", IL_TOPIC_MAX_SUB) < 0 ||
        PyModule_AddIntConstant(m, "TOPIC_VIEW_MIN", T_VIEW_MIN) < 0)
        return -1;
    return 0;
}
