"""Build script for the C extension ``interlink._native``.

All project metadata lives in pyproject.toml; this file only declares the
extension module.  Its sources are globbed at build time: every ``*.c`` file in
src/interlink/_native/ except those whose name starts with ``test_``.

The directory src/interlink/_native/ holds the C sources; the compiled module
(``_native.cpython-*.so``) sits next to it in src/interlink/.  The directory has
no ``__init__.py``, so the import system prefers the extension module.

Environment switches:
    INTERLINK_SANITIZE=1  build with AddressSanitizer + UBSan
                          (-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g)
    INTERLINK_DEBUG=1     build without optimization (-O0 -g)
Both also pass -UNDEBUG (CPython's own CFLAGS define NDEBUG) so assert() is live.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
NATIVE_DIR = Path("src", "interlink", "_native")  # relative: setuptools wants relative paths


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _native_sources() -> list[str]:
    sources = sorted(
        p.relative_to(HERE).as_posix()
        for p in (HERE / NATIVE_DIR).glob("*.c")
        if not p.name.startswith("test_")
    )
    if not sources:
        raise SystemExit(f"setup.py: no C sources found in {NATIVE_DIR}")
    return sources


def _native_headers() -> list[str]:
    return sorted(p.relative_to(HERE).as_posix() for p in (HERE / NATIVE_DIR).glob("*.h"))


compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]
link_args: list[str] = []

if _flag("INTERLINK_DEBUG"):
    compile_args += ["-O0", "-g", "-UNDEBUG"]  # the last -O wins; keep assert() on

if _flag("INTERLINK_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    compile_args += [*sanitize, "-UNDEBUG"]  # CPython's CFLAGS carry -DNDEBUG
    link_args += sanitize

setup(
    ext_modules=[
        Extension(
            "interlink._native",
            sources=_native_sources(),
            depends=_native_headers(),
            include_dirs=[NATIVE_DIR.as_posix()],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ],
)
