"""Comparing a learner's value with the reference's, and the pieces of messages: what differs, in one sentence;
a value shown short; the learner's own line in a traceback."""

from __future__ import annotations

import math
import os
import traceback
from typing import Any

import numpy as np
import torch


def _fmt(x: Any, limit: int = 600) -> str:
    """A short, readable rendering of a value for messages."""
    if isinstance(x, torch.Tensor):
        body = np.array2string(x.detach().cpu().numpy(), precision=4, threshold=60, edgeitems=3)
        s = f"tensor(shape={tuple(x.shape)}, dtype={x.dtype}) {body}"
    elif isinstance(x, np.ndarray):
        body = np.array2string(x, precision=4, threshold=60, edgeitems=3, suppress_small=True)
        s = f"array(shape={x.shape}, dtype={x.dtype}) {body}" if x.ndim else body
    elif isinstance(x, float):
        s = repr(x) if len(repr(x)) <= 10 else f"{x:.6g}"
    elif isinstance(x, dict) and len(x) > 4:
        head = ", ".join(f"{k!r}: {_fmt(v, 120)}" for k, v in list(x.items())[:2])
        s = f"{{{head}, … ({len(x)} entries)}}"
    elif isinstance(x, dict):
        s = "{" + ", ".join(f"{k!r}: {_fmt(v, 120)}" for k, v in x.items()) + "}"
    elif isinstance(x, (list, tuple)) and len(x) <= 12 and not _is_table(x):
        inner = ", ".join(_fmt(v, 120) for v in x)
        s = f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    else:
        s = repr(x)
    return s if len(s) <= limit else s[: limit - 5] + " …"


def _is_table(x: Any) -> bool:
    return bool(x) and isinstance(x[0], (list, tuple, dict))


def _indent(text: str, pad: str) -> str:
    return text.replace("\n", "\n" + pad)


def _format_case(case: dict) -> str:
    return "\n".join(f"    {k} = {_indent(_fmt(v), ' ' * (7 + len(k)))}" for k, v in case.items())


def _type_name(x: Any) -> str:
    """``float``, ``numpy.ndarray``; torch's (values, indices) results are named with what they hold.

    >>> _type_name(torch.zeros(2, 3).max(dim=1))
    'torch.return_types.max (a pair: .values and .indices)'
    """
    t = type(x)
    if t.__module__ == "torch.return_types" and hasattr(x, "indices"):
        return f"torch.return_types.{t.__name__} (a pair: .values and .indices)"
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def _is_real_number(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, float, np.integer, np.floating)):
        return True
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iuf":
        return True
    if isinstance(x, torch.Tensor) and x.ndim == 0 and not x.dtype.is_complex:
        return x.dtype != torch.bool
    return False


def _where(path: str) -> str:
    return f" (at {path})" if path else ""


def describe_difference(expected: Any, received: Any, atol: float, rtol: float, path: str = "",
                        exact_dtype: bool = True) -> str | None:
    """None when ``received`` matches ``expected``, else one sentence saying what differs.

    With ``exact_dtype=False`` a tensor may differ in precision (float32 vs float64) but not in
    kind (float, integer, bool).

    >>> describe_difference(1.0, 1.0 + 1e-9, 1e-6, 1e-6) is None
    True
    >>> describe_difference(np.zeros(3), np.zeros(4), 1e-6, 1e-6)
    'expected shape (3,), received shape (4,)'
    """
    if received is None and expected is not None:
        return (f"your function returned None{_where(path)}: is a `return` statement missing, or did an "
                f"`except` swallow an error?")

    # ---- torch tensors: type, shape, dtype, NaN, values
    if isinstance(expected, torch.Tensor):
        if not isinstance(received, torch.Tensor):
            return f"expected a torch.Tensor{_where(path)}, received {_type_name(received)}"
        if tuple(received.shape) != tuple(expected.shape):
            return f"expected shape {tuple(expected.shape)}{_where(path)}, received shape {tuple(received.shape)}"
        if received.dtype != expected.dtype:
            kind_e, kind_r = _tensor_kind(expected.dtype), _tensor_kind(received.dtype)
            if exact_dtype or kind_e != kind_r:
                return f"expected dtype {expected.dtype}{_where(path)}, received dtype {received.dtype}"
        exp = expected.detach().cpu().to(torch.float64) if expected.is_floating_point() else expected.detach().cpu()
        rec = received.detach().cpu().to(torch.float64) if received.is_floating_point() else received.detach().cpu()
        return _compare_arrays(exp.numpy(), rec.numpy(), atol, rtol, path)

    # ---- NumPy arrays
    if isinstance(expected, np.ndarray):
        if not isinstance(received, np.ndarray):
            return f"expected a NumPy array of shape {expected.shape}{_where(path)}, received {_type_name(received)}"
        if received.shape != expected.shape:
            return f"expected shape {expected.shape}{_where(path)}, received shape {received.shape}"
        kinds = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "c": "complex"}
        ek, rk = kinds.get(expected.dtype.kind, "other"), kinds.get(received.dtype.kind, "other")
        if ek != rk:
            return f"expected {ek} entries (dtype {expected.dtype}){_where(path)}, received dtype {received.dtype}"
        return _compare_arrays(expected, received, atol, rtol, path)

    # ---- containers
    if isinstance(expected, dict):
        if not isinstance(received, dict):
            return f"expected a dict{_where(path)}, received {_type_name(received)}"
        if set(received) != set(expected):
            return f"expected keys {sorted(map(str, expected))}{_where(path)}, received keys {sorted(map(str, received))}"
        for k in expected:
            d = describe_difference(expected[k], received[k], atol, rtol, f"{path}[{k!r}]", exact_dtype)
            if d:
                return d
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(received, (tuple, list)):
            return f"expected a {type(expected).__name__} of length {len(expected)}{_where(path)}, received {_type_name(received)}"
        if len(received) != len(expected):
            return f"expected {len(expected)} items{_where(path)}, received {len(received)}"
        for i, (e, r) in enumerate(zip(expected, received)):
            d = describe_difference(e, r, atol, rtol, f"{path}[{i}]", exact_dtype)
            if d:
                return d
        return None

    # ---- scalars
    if isinstance(expected, (bool, np.bool_)):
        if not isinstance(received, (bool, np.bool_)):
            return f"expected True or False{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        return None if bool(received) == bool(expected) else f"expected {bool(expected)}{_where(path)}, received {bool(received)}"
    if isinstance(expected, (int, np.integer)):
        if isinstance(received, (bool, np.bool_)) or not isinstance(received, (int, np.integer)):
            whole = _is_real_number(received) and float(received) == int(float(received))
            return (f"expected an integer (int){_where(path)}, received {_type_name(received)} {_fmt(received)}"
                    + (": the number is whole, but return it as an int (`int(...)`, or `.item()` for a tensor)"
                       if whole else ""))
        return None if int(received) == int(expected) else f"expected {int(expected)}{_where(path)}, received {int(received)}"
    if isinstance(expected, (float, np.floating)):
        if not _is_real_number(received):
            return f"expected a number{_where(path)}, received {_type_name(received)} {_fmt(received)}"
        if isinstance(expected, float) and isinstance(received, torch.Tensor):
            return (f"expected a Python float{_where(path)}, received a 0-d tensor {_fmt(received)}: return "
                    "`.item()` of it (a tensor prints as `tensor(…)` and keeps its graph and device)")
        e, r = float(expected), float(received)
        if math.isnan(r) and not math.isnan(e):
            return f"your result is NaN{_where(path)}: look for a division by zero, a log of 0, or a softmax over a row that is all -inf (everything masked)"
        if math.isinf(r) and not math.isinf(e):
            return f"your result is infinite{_where(path)}: look for an overflow or a division by zero"
        if math.isclose(e, r, rel_tol=rtol, abs_tol=atol) or (math.isnan(e) and math.isnan(r)):
            return None
        return f"expected {e:.6g}{_where(path)}, received {r:.6g}"

    # ---- anything else: equality
    try:
        equal = bool(expected == received)
    except Exception:  # noqa: BLE001
        equal = False
    return None if equal else f"expected {_fmt(expected)}{_where(path)}, received {_fmt(received)}"


def _tensor_kind(dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else ("complex" if dtype.is_complex else "integer")


def _compare_arrays(expected: np.ndarray, received: np.ndarray, atol: float, rtol: float, path: str) -> str | None:
    if expected.dtype.kind == "f" or received.dtype.kind == "f":
        bad_nan = np.isnan(received) & ~np.isnan(expected)
        if bad_nan.any():
            idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
            return f"your result contains NaN{_where(path)}, first at index {idx}: look for a division by zero, a log of 0, or a softmax over a row that is all -inf (everything masked)"
        close = np.isclose(received, expected, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = received == expected
    if close.all():
        return None
    idx = tuple(int(i) for i in np.argwhere(~close)[0])
    n_bad = int((~close).sum())
    e, r = expected[idx].item(), received[idx].item()                 # idx () for a 0-d array
    at = f" at index {idx}" if idx else ""
    shown = (_fmt(e), _fmt(r))
    if shown[0] == shown[1]:                                           # they differ beyond the digits shown
        shown = (repr(e), repr(r))
    return f"{n_bad} of {close.size} entries differ{_where(path)}; first{at}: expected {shown[0]}, received {shown[1]}"


def _same(before: Any, after: Any) -> bool:
    """Exact equality of an input before and after a call (for tensors, arrays, containers, modules)."""
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and before.shape == after.shape and before.dtype == after.dtype
                and bool(torch.equal(before.detach().cpu(), after.detach().cpu())
                         or (before.is_floating_point() and torch.allclose(before.detach().cpu(), after.detach().cpu(),
                                                                           rtol=0, atol=0, equal_nan=True))))
    if isinstance(before, torch.nn.Module):
        a, b = before.state_dict(), after.state_dict()
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(before, np.ndarray):
        return (isinstance(after, np.ndarray) and before.shape == after.shape
                and bool(np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")))
    if isinstance(before, dict):
        return isinstance(after, dict) and before.keys() == after.keys() and all(_same(before[k], after[k]) for k in before)
    if isinstance(before, (list, tuple)):
        return (isinstance(after, (list, tuple)) and len(before) == len(after)
                and all(_same(x, y) for x, y in zip(before, after)))
    if isinstance(before, (int, float, str, bool, type(None), np.generic)):
        return before == after or (isinstance(before, float) and math.isnan(before) and math.isnan(after))
    return True  # an object we cannot compare (an environment, a generator): not judged


def _sentence(text: str) -> str:
    """``text`` ending with one punctuation mark."""
    return text if text.endswith((".", "?", "!")) else text + "."


_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
"""The course package's own files (``llmcourse/``): never the learner's code."""


def _in_package(filename: str) -> bool:
    """Is this file the course package's or a library's (not the learner's own code)?"""
    path = os.path.abspath(filename)
    return (path.startswith(_PACKAGE) or "site-packages" in path or "dist-packages" in path
            or path.startswith(os.path.dirname(os.__file__) + os.sep))


def _learner_frame(exc: BaseException) -> str:
    """The last line of the learner's own code in a traceback (not the checker's, the package's or a library's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not _in_package(f.filename)]
    if not mine:
        return ""
    f = mine[-1]
    return f"\n  in your `{f.name}`, line {f.lineno}: {f.line}" if f.line else ""
