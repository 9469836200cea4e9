"""The public surface: every name exported once, public module paths, stubs."""

from __future__ import annotations

import pickle

import interlink as il
import interlink.errors as errors


def test_all_names_exported_and_unique() -> None:
    assert len(il.__all__) == len(set(il.__all__))
    for name in il.__all__:
        assert hasattr(il, name), name


def test_errors_show_public_module_and_pickle() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls.__module__ == "interlink", name
        assert getattr(il, name) is cls
        exc = cls("boom")
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is cls and str(again) == "boom"


def test_error_hierarchy_matches_standard_exceptions() -> None:
    assert issubclass(il.Timeout, TimeoutError)
    assert issubclass(il.NotFound, FileNotFoundError)
    assert issubclass(il.AlreadyExists, FileExistsError)
    assert issubclass(il.AccessDenied, PermissionError)
    assert issubclass(il.MessageTooLarge, ValueError)
    assert issubclass(il.EncodeError, TypeError)
    import queue

    assert issubclass(il.Empty, queue.Empty) and issubclass(il.Empty, il.Timeout)
    assert issubclass(il.Full, queue.Full) and issubclass(il.Full, il.Timeout)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), il.InterlinkError)


def test_message_and_loan_types_are_public_names() -> None:
    assert il.Message.__module__ == "interlink"
    assert il.Loan.__module__ == "interlink"


def test_codec_types_are_public_names() -> None:
    for cls in (il.Codec, il.BytesCodec, il.PickleCodec, il.MsgpackCodec, il.JsonCodec, il.Encoded):
        assert cls.__module__ == "interlink", cls
        assert getattr(il, cls.__name__) is cls
    assert isinstance(il.get_codec("pickle"), il.Codec)


def test_queue_types_are_public_names() -> None:
    import queue

    for cls in (il.Queue, il.JoinableQueue, il.SimpleQueue, il.QueueClosed, il.DurableMessage):
        assert cls.__module__ == "interlink", cls
        assert getattr(il, cls.__name__) is cls
    assert issubclass(il.JoinableQueue, il.Queue)
    assert issubclass(il.QueueClosed, il.Closed) and issubclass(il.QueueClosed, ValueError)
    q = il.Queue()
    try:
        with __import__("pytest").raises(queue.Empty):
            q.get_nowait()
    finally:
        q.close()
