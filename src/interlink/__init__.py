"""interlink: inter-process communication for Python over shared memory.

The public API is re-exported here; the modules behind it are private.
"""

from ._channel import Channel as Channel
from ._channel import ChannelStatistics as ChannelStatistics
from ._channel import Loan as Loan
from ._channel import Message as Message
from ._codec import BytesCodec as BytesCodec
from ._codec import Codec as Codec
from ._codec import Encoded as Encoded
from ._codec import JsonCodec as JsonCodec
from ._codec import MsgpackCodec as MsgpackCodec
from ._codec import PickleCodec as PickleCodec
from ._codec import get_codec as get_codec
from ._deadlock import get_deadlock_detection as get_deadlock_detection
from ._deadlock import set_deadlock_detection as set_deadlock_detection
from ._queue import DurableMessage as DurableMessage
from ._queue import JoinableQueue as JoinableQueue
from ._queue import Queue as Queue
from ._queue import QueueClosed as QueueClosed
from ._queue import SimpleQueue as SimpleQueue
from ._sync import Barrier as Barrier
from ._sync import BoundedSemaphore as BoundedSemaphore
from ._sync import Condition as Condition
from ._sync import Event as Event
from ._sync import Lock as Lock
from ._sync import LockStatistics as LockStatistics
from ._sync import RLock as RLock
from ._sync import RWLock as RWLock
from ._sync import RWLockStatistics as RWLockStatistics
from ._sync import Semaphore as Semaphore
from ._sync import SemaphoreStatistics as SemaphoreStatistics
from ._topic import Subscription as Subscription
from ._topic import Topic as Topic
from .errors import AccessDenied as AccessDenied
from .errors import AlreadyExists as AlreadyExists
from .errors import Busy as Busy
from .errors import Closed as Closed
from .errors import Corrupt as Corrupt
from .errors import DeadlockError as DeadlockError
from .errors import Empty as Empty
from .errors import EncodeError as EncodeError
from .errors import Full as Full
from .errors import Incompatible as Incompatible
from .errors import InterlinkError as InterlinkError
from .errors import MessageTooLarge as MessageTooLarge
from .errors import NotFound as NotFound
from .errors import OwnerDied as OwnerDied
from .errors import Timeout as Timeout

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "Barrier",
    "BoundedSemaphore",
    "Busy",
    "BytesCodec",
    "Channel",
    "ChannelStatistics",
    "Closed",
    "Codec",
    "Condition",
    "Corrupt",
    "DeadlockError",
    "DurableMessage",
    "Empty",
    "EncodeError",
    "Encoded",
    "Event",
    "Full",
    "Incompatible",
    "InterlinkError",
    "JoinableQueue",
    "JsonCodec",
    "Loan",
    "Lock",
    "LockStatistics",
    "Message",
    "MessageTooLarge",
    "MsgpackCodec",
    "NotFound",
    "OwnerDied",
    "PickleCodec",
    "Queue",
    "QueueClosed",
    "RLock",
    "RWLock",
    "RWLockStatistics",
    "Semaphore",
    "SemaphoreStatistics",
    "SimpleQueue",
    "Subscription",
    "Timeout",
    "Topic",
    "get_codec",
    "get_deadlock_detection",
    "set_deadlock_detection",
]
