"""Run the sync benchmark: the same harness as ``interlink bench topic``.

    python benchmarks/topic.py --quick
    python benchmarks/topic.py --only interlink --only pyzmq --json out.json

Takes the same options as ``interlink bench topic`` (see ``--help``). Uses the
installed interlink; from a source checkout without an install it falls back
to ``src/`` (the compiled core must then have been built in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from interlink.cli.bench import topic
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from interlink.cli.bench import topic

if __name__ == "__main__":
    topic.main(sys.argv[1:], prog_name="python benchmarks/topic.py")
