"""The ``h5pool`` command line: ``bench``, ``info``, ``index`` and ``check``.

Nothing here imports torch until a command needs it, so ``h5pool --help``,
``info`` and ``index`` answer at once.
"""

from h5pool.cli.main import main

__all__ = ["main"]
