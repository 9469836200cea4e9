"""Run the queue benchmark: the same harness as ``interlink bench queue``.

    python benchmarks/queue.py --quick
    python benchmarks/queue.py --only interlink --only multiprocessing --json out.json

Takes the same options as ``interlink bench queue`` (see ``--help``). Uses the
installed interlink; from a source checkout without an install it falls back
to ``src/`` (the compiled core must then have been built in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``queue``, and Python puts
# its directory first on sys.path: take it off before anything imports queue.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

try:
    from interlink.cli.bench import queue
except ImportError:
    sys.path.insert(0, str(_HERE.parent / "src"))
    from interlink.cli.bench import queue

if __name__ == "__main__":
    queue.main(sys.argv[1:], prog_name="python benchmarks/queue.py")
