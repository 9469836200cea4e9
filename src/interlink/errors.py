"""The exception hierarchy of interlink.

Every error interlink raises on purpose derives from :class:`InterlinkError`
and, where a standard exception already names the situation, from that one
too (``NotFound`` is a ``FileNotFoundError``, ``Timeout`` a ``TimeoutError``),
so code written against the standard library keeps working.
"""

from __future__ import annotations

import queue as _queue

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "Busy",
    "Closed",
    "Corrupt",
    "DeadlockError",
    "Empty",
    "EncodeError",
    "Full",
    "Incompatible",
    "InterlinkError",
    "MessageTooLarge",
    "NotFound",
    "OwnerDied",
    "Timeout",
]


class InterlinkError(Exception):
    """Base class of every error raised by interlink."""


class Timeout(InterlinkError, TimeoutError):
    """A blocking call did not complete within its ``timeout``."""


class Empty(Timeout, _queue.Empty):
    """A non-blocking receive found nothing to receive (also a ``queue.Empty``)."""


class Full(Timeout, _queue.Full):
    """A non-blocking send found no room (also a ``queue.Full``)."""


class Closed(InterlinkError):
    """The object, or the peer on its other side, has closed or died."""


class NotFound(InterlinkError, FileNotFoundError):
    """No object of that name exists."""


class AlreadyExists(InterlinkError, FileExistsError):
    """An object of that name exists and the caller asked to create it."""


class Incompatible(InterlinkError):
    """The object exists but is of another kind or layout version."""


class Corrupt(InterlinkError):
    """Shared memory failed a consistency check; nothing was read from it."""


class AccessDenied(InterlinkError, PermissionError):
    """The kernel refused access to the object (mode or owner)."""


class MessageTooLarge(InterlinkError, ValueError):
    """The message can never fit in the object, however long one waits."""


class EncodeError(InterlinkError, TypeError):
    """The codec cannot represent the object (also a ``TypeError``)."""


class Busy(InterlinkError):
    """A role that only one live user may hold (a Channel's receiver) is taken."""


class DeadlockError(InterlinkError):
    """Waiting would complete a cycle of waiters that can never proceed."""


class OwnerDied(InterlinkError, RuntimeWarning):
    """The previous owner died while holding the object; its data may need repair."""


def _fix_module() -> None:
    # Tracebacks and pickles should name the public path, not this module.
    for name in __all__:
        globals()[name].__module__ = "interlink"


_fix_module()
