"""Time limits that learner code cannot swallow."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

_CHECKER = os.path.dirname(__file__) + os.sep
"""The checker's own files: the limit never fires inside them (they must be able to clean up)."""


def _in_checker(frame) -> bool:
    return frame.f_code.co_filename.startswith(_CHECKER)


class _Timeout(BaseException):
    """Raised inside the learner's call when it runs past the time limit."""


def _call_with_time_limit(seconds: float, thunk: Callable[[], Any]) -> Any:
    """``thunk()``, stopped with `_Timeout` after ``seconds`` (SIGALRM; no limit where signals are unavailable).

    Learner code cannot swallow the limit: once it expires, every line the learner's code runs
    raises `_Timeout` again (a trace function on its frames), so a bare ``except:`` or ``except
    BaseException`` inside a loop cannot keep it going; and the alarm repeats every 50 ms for code
    that sits in a long library call. A call that swallows the limit and returns is still a timeout.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        return thunk()
    state = {"active": True, "expired": False}

    def tracer(frame, event, arg):
        # Raise on line events only: an error raised by a trace function uninstalls it, and the
        # learner's code must not be able to make that happen by catching the first `_Timeout`.
        if event == "line" and state["active"] and state["expired"] and not _in_checker(frame):
            raise _Timeout()
        return tracer

    def on_alarm(signum, frame):
        if not state["active"]:
            return
        state["expired"] = True
        sys.settrace(tracer)                                       # frames the learner's code opens from now on
        f = frame
        while f is not None and not _in_checker(f):                # frames it is in now, up to the checker
            f.f_trace = tracer
            f = f.f_back
        raise _Timeout()                                           # re-armed on every alarm (every 50 ms)

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_trace = sys.gettrace()
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        result = thunk()
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        sys.settrace(old_trace)
    if state["expired"]:
        raise _Timeout()
    return result
