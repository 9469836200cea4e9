"""Run the channel benchmark: the same harness as ``interlink bench channel``.

    python benchmarks/channel.py --quick
    python benchmarks/channel.py --only interlink --only os.pipe --json out.json

Takes the same options as ``interlink bench channel`` (see ``--help``). Uses the
installed interlink; from a source checkout without an install it falls back
to ``src/`` (the compiled core must then have been built in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from interlink.cli.bench import channel
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from interlink.cli.bench import channel

if __name__ == "__main__":
    channel.main(sys.argv[1:], prog_name="python benchmarks/channel.py")
