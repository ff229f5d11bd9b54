"""Which kernels the runtime computes with: ``numpy`` (the reference) or ``numba`` (compiled).

The NumPy kernels are the reference and the fallback: the runtime runs with NumPy alone. With
the ``fast`` extra installed (``pip install "bnncli[fast]"``, numba), the binary convolutions run
as compiled kernels (bnncli.runtime.numba_kernels) that give bit-identical results; everything
else stays NumPy. The choice is made once per model, at one seam (``Context.backend``, read by
the ops), never by forking an op's logic:

* ``load(path, backend=...)`` / ``Model(..., backend=...)``: ``"numpy"``, ``"numba"`` or ``"auto"``;
* else the environment variable ``BNN_BACKEND``;
* else ``auto``: numba when it imports, NumPy otherwise.

Asking for ``numba`` where it is not installed is an error that says how to install it.
"""

from __future__ import annotations

import os
from types import ModuleType

from bnncli.errors import UsageError

BACKENDS = ("numpy", "numba")
CHOICES = ("auto", *BACKENDS)
ENV_VAR = "BNN_BACKEND"
INSTALL_HINT = "pip install 'bnncli[fast]' (numba)"


def compiled_kernels() -> ModuleType | None:
    """bnncli.runtime.numba_kernels, or None when numba cannot be imported here."""
    try:
        from bnncli.runtime import numba_kernels
    except ImportError:
        return None
    return numba_kernels


def compiled_float_kernels() -> ModuleType | None:
    """bnncli.runtime.numba_float (the compiled pooling and affine ops), or None without numba."""
    try:
        from bnncli.runtime import numba_float
    except ImportError:
        return None
    return numba_float


def crew(owner: object, helpers: int):
    """A bnncli.runtime.numba_crew.Crew of ``helpers`` threads, closed when ``owner`` is collected."""
    from bnncli.runtime.numba_crew import Crew

    return Crew.for_owner(owner, helpers)


def compiled_cache_is_warm() -> bool:
    """Whether numba's on-disk cache holds the compiled kernels (False: the first call compiles them,
    about 5 s here). The cache is ``__pycache__`` next to bnncli/runtime/numba_kernels.py, or numba's
    user-wide cache directory where that is read-only, or ``$NUMBA_CACHE_DIR``."""
    modules = (compiled_kernels(), compiled_float_kernels())
    if any(m is None for m in modules):
        return False
    from bnncli.runtime import numba_crew

    return all(m.cache_is_warm() for m in (*modules, numba_crew))


def resolve(name: str | None = None) -> str:
    """The backend to use for ``name`` (None: ``$BNN_BACKEND``, else ``auto``)."""
    choice = (name or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in CHOICES:
        source = "" if name else f" (from ${ENV_VAR})"
        raise UsageError(f"unknown runtime backend {choice!r}{source}; choose one of {', '.join(CHOICES)}")
    if choice == "numpy":
        return "numpy"
    if compiled_kernels() is not None:
        return "numba"
    if choice == "numba":
        raise UsageError(f"the numba backend needs numba, which does not import here: {INSTALL_HINT}")
    return "numpy"
