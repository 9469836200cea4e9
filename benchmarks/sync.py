"""Run the sync benchmark: the same harness as ``interlink bench sync``.

    python benchmarks/sync.py --quick
    python benchmarks/sync.py --only interlink --only threading.Lock --json out.json

Takes the same options as ``interlink bench sync`` (see ``--help``). Uses the
installed interlink; from a source checkout without an install it falls back
to ``src/`` (the compiled core must then have been built in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from interlink.cli.bench import sync
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from interlink.cli.bench import sync

if __name__ == "__main__":
    sync.main(sys.argv[1:], prog_name="python benchmarks/sync.py")
