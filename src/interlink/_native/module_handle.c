/* module_handle.c - the life cycle every segment handle shares (glue.h,
 * il_handle): allocation, attach / re-attach after fork / detach in the
 * segment's attach table, binding to the buffer that maps the segment,
 * close and the release of the mapping once no user is left, dealloc.
 * The kinds differ only where their il_handle_ops hooks say.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>

#include "glue.h"
#include "il_common.h"
#include "proc.h"
#include "seg.h"

PyMemberDef il_handle_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(il_handle, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(il_handle, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyObject *il_handle_new(PyTypeObject *type, const il_handle_ops *ops)
{
    il_handle *h = (il_handle *)type->tp_alloc(type, 0);
    if (h == NULL)
        return NULL;
    h->ops = ops;
    h->st = state_of_type(type);
    if (h->st == NULL) {
        Py_DECREF(h);
        return NULL;
    }
    h->closed = 1; /* until _bind */
    return (PyObject *)h;
}

int il_handle_attach(il_handle *h)
{
    h->ident = il_ident_self();
    if (h->ident == 0) {
        PyErr_SetString(PyExc_OSError, "cannot read this process's start time from /proc");
        return -1;
    }
    h->fork_gen = h->ops->fork_gen();
    int rc = il_seg_attach(h->hdr, h->ident, 0, &h->slot);
    if (rc == IL_NOSLOT) {
        if (h->ops->reclaim)
            h->ops->reclaim(h);
        else
            il_seg_reclaim_plain(h->hdr);
        rc = il_seg_attach(h->hdr, h->ident, 0, &h->slot);
    }
    if (rc != IL_OK) {
        PyErr_SetString(h->st->Busy, "the attach table is full of live users");
        return -1;
    }
    h->attached = 1;
    if (h->ops->attached)
        h->ops->attached(h);
    return 0;
}

/* The child is a new user: it holds nothing of its parent's. */
int il_handle_reattach(il_handle *h)
{
    h->attached = 0;
    if (h->ops->forked)
        h->ops->forked(h);
    return il_handle_attach(h) < 0 ? -1 : 0;
}

int il_handle_get_buffer(il_handle *h, PyObject *buffer, size_t need)
{
    if (h->has_buf) {
        PyErr_SetString(PyExc_RuntimeError, "handle already bound");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &h->buf, PyBUF_WRITABLE) < 0)
        return -1;
    if ((size_t)h->buf.len < need) {
        PyBuffer_Release(&h->buf);
        PyErr_SetString(h->st->Corrupt, "the segment is too small for its kind");
        return -1;
    }
    h->has_buf = 1;
    h->hdr = (il_seg_header *)h->buf.buf;
    return 0;
}

void il_handle_unbind(il_handle *h)
{
    h->has_buf = 0;
    h->hdr = NULL;
    if (h->ops->unbound)
        h->ops->unbound(h);
    PyBuffer_Release(&h->buf);
}

int il_handle_open(il_handle *h)
{
    if (il_handle_attach(h) < 0) {
        il_handle_unbind(h);
        return -1;
    }
    h->closed = 0;
    return 0;
}

int il_handle_bind_area(il_handle *h, PyObject *buffer, const char *kind,
                        int (*attach)(void *area, void *mem, uint64_t len), void *area)
{
    if (il_handle_get_buffer(h, buffer, 0) < 0)
        return -1;
    int rc = IL_CORRUPT;
    if ((size_t)h->buf.len > IL_SEG_HEADER_SIZE)
        rc = attach(area, (char *)h->buf.buf + IL_SEG_HEADER_SIZE,
                    (uint64_t)h->buf.len - IL_SEG_HEADER_SIZE);
    if (rc != IL_OK) {
        il_handle_unbind(h);
        PyErr_Format(h->st->Corrupt,
                     rc == IL_INFLIGHT ? "the %s segment is not formatted"
                                       : "the %s segment failed its consistency check",
                     kind);
        return -1;
    }
    return il_handle_open(h);
}

void il_handle_maybe_release(il_handle *h)
{
    if (h->has_buf && h->closed && h->busy == 0 && h->live == 0)
        il_handle_unbind(h);
}

int il_handle_closed_meanwhile(il_handle *h)
{
    if (!h->closed)
        return 0;
    PyErr_SetString(h->st->Closed, h->ops->closed_meanwhile_msg);
    il_handle_maybe_release(h);
    return 1;
}

void il_handle_detach(il_handle *h)
{
    if (!h->has_buf || h->fork_gen != h->ops->fork_gen())
        return;
    if (h->ops->release_slot && h->ops->release_slot(h)) {
        h->attached = 0;
        return;
    }
    if (h->attached)
        il_seg_detach(h->hdr, h->slot, h->ident);
    h->attached = 0;
}

PyObject *il_handle_close(PyObject *self, PyObject *Py_UNUSED(unused))
{
    il_handle *h = (il_handle *)self;
    if (!h->closed) {
        il_handle_detach(h);
        h->closed = 1;
    }
    il_handle_maybe_release(h);
    Py_RETURN_NONE;
}

PyObject *il_handle_get_closed(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((il_handle *)self)->closed);
}

int il_handle_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((il_handle *)self)->dict);
    return 0;
}

int il_handle_clear(PyObject *self)
{
    Py_CLEAR(((il_handle *)self)->dict);
    return 0;
}

void il_handle_dealloc(PyObject *self)
{
    il_handle *h = (il_handle *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (h->weakreflist)
        PyObject_ClearWeakRefs(self);
    if (!h->closed) {
        il_handle_detach(h);
        h->closed = 1;
    }
    if (h->has_buf)
        il_handle_unbind(h);
    Py_CLEAR(h->dict);
    if (h->ops->free_extra)
        h->ops->free_extra(h);
    tp->tp_free(self);
    Py_DECREF(tp);
}
