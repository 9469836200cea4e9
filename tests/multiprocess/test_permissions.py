"""Permissions: an object created with mode 0600 is closed to other users.

The other user is a child process that starts as root, imports interlink and
then drops to 'nobody' (setgroups/setgid/setuid) before it opens the channel:
the interpreter of the test environment may live where 'nobody' cannot
execute it, and what is tested -- the kernel refusing open(2) of the object
for that uid -- is the same either way.
"""

from __future__ import annotations

import os
import pwd

import pytest
from mp_helpers import Spawn, segment_path

import interlink as il

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user"),
]

AS_NOBODY = """
name, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
assert os.geteuid() == uid
for create in (None, False):
    try:
        ch = il.Channel(name, create=create)
    except il.AccessDenied as exc:
        assert isinstance(exc, PermissionError)
        say("denied", type(exc).__name__)
        continue
    ch.send(b"hello from nobody")
    ch.close()
    say("opened")
"""


def nobody() -> tuple[str, str]:
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    return str(pw.pw_uid), str(pw.pw_gid)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_other_users_are_denied(spawn: Spawn, name: str, mode: int) -> None:
    uid, gid = nobody()
    with il.Channel(name, 4096, mode=mode) as ch:
        assert os.stat(segment_path(name)).st_mode & 0o777 == mode
        child = spawn(AS_NOBODY, name, uid, gid)
        assert child.expect("denied") == ["AccessDenied"]
        assert child.expect("denied") == ["AccessDenied"]
        assert child.wait() == 0, child.stderr()
        assert ch.users() == [(os.getpid(), True)]  # nothing attached


def test_mode_0666_lets_other_users_in(spawn: Spawn, name: str) -> None:
    uid, gid = nobody()
    with il.Channel(name, 4096, mode=0o666) as ch:
        child = spawn(AS_NOBODY, name, uid, gid)
        child.expect("opened")
        child.expect("opened")
        assert child.wait() == 0, child.stderr()
        assert ch.recv_bytes(timeout=5) == b"hello from nobody"
        assert ch.recv_bytes(timeout=5) == b"hello from nobody"
        assert ch.users() == [(os.getpid(), True)]
    assert not segment_path(name).exists()
