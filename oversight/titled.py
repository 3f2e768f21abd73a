"""Run a module under a process title that says what it is.

    python -m oversight.titled "oversight web" uvicorn oversight.asgi:application ...

sets the title (what `ps`, `top` and the monitoring page show) to "oversight web",
then runs `python -m uvicorn ...` in this process. The supervisor starts every
child this way. Celery's own titles ("[celeryd: ...]") are turned off so the
worker's pool processes, which inherit the title, keep it.
"""

from __future__ import annotations

import runpy
import sys


def set_title(title: str) -> bool:
    try:
        import setproctitle
    except ImportError:  # optional: without it the command line stays as it was
        return False
    setproctitle.setproctitle(title)
    return True


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit('usage: python -m oversight.titled "oversight web" MODULE [ARGS...]')
    title, module, *args = argv
    if set_title(title) and module == "celery":
        import celery.platforms

        celery.platforms._setproctitle = None
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
