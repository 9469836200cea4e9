"""The ``interlink`` command (also ``python -m interlink``).

Each subcommand lives in its own module of this package and is registered
below with ``main.add_command``; a module is imported when the command line
is parsed, so subcommand modules keep their heavy imports inside the
functions that need them.
"""

from __future__ import annotations

import click

from .bench import bench


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="interlink", prog_name="interlink")
def main() -> None:
    """interlink: inter-process communication over shared memory."""


main.add_command(bench)

from .objects import gc, ls  # noqa: E402

main.add_command(ls)
main.add_command(gc)
