"""Progress bars only where a person watches them: on a terminal. In a log file every update
of a bar is another frame (tqdm redraws with carriage returns: 11 KB of frames for 75 training
steps), so there a run writes its one line per epoch (or per download) instead."""

from __future__ import annotations

import sys


def on_terminal() -> bool:
    """Whether stderr, where the bars go, is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def bar_shown(wanted: bool = True) -> bool:
    """Whether to draw a bar the caller wants (not --quiet): only on a terminal."""
    return wanted and on_terminal()
