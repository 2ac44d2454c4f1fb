"""Backend registry: names ``python``, ``native``, ``opencl`` / ``opencl:<device>`` and ``auto``.

Backends are imported lazily so that a missing optional dependency (pyopencl, the compiled
extension) only matters when that backend is asked for.
"""

from __future__ import annotations

from typing import Any

from bmnode.errors import BackendUnavailable
from bmnode.pow.backend import PowBackend

#: preference order for ``auto``: fastest first
AUTO_ORDER = ("opencl", "native", "python")


def _load(kind: str) -> type[PowBackend]:
    if kind == "python":
        from bmnode.pow.python_backend import PythonBackend

        return PythonBackend
    if kind == "native":
        from bmnode.pow.native import NativeBackend

        return NativeBackend
    if kind == "opencl":
        try:
            from bmnode.pow.opencl import OpenCLBackend
        except ImportError as e:  # pyopencl missing
            raise BackendUnavailable(
                f"the OpenCL backend needs pyopencl ({e}); install it with: pip install 'bmnode[opencl]'"
            ) from e
        return OpenCLBackend
    raise BackendUnavailable(f"unknown PoW backend {kind!r}; choose python, native, opencl[:DEVICE] or auto")


def get_backend(name: str = "auto", **options: Any) -> PowBackend:
    """An instance of the backend called ``name``; ``opencl:2`` picks OpenCL device 2.

    ``options`` go to the backend's constructor (``threads=`` for native, ``device=`` for
    opencl). ``auto`` picks the first available of :data:`AUTO_ORDER`, skipping OpenCL on
    CPU-only platforms.
    """
    if name == "auto":
        for kind in AUTO_ORDER:
            try:
                cls = _load(kind)
            except (BackendUnavailable, ImportError):
                continue
            if kind == "opencl":
                if not getattr(cls, "has_gpu", lambda: False)():
                    continue
            if cls.available():
                opts = {k: v for k, v in options.items() if k in ("threads",) and kind == "native"}
                return cls(**opts)
        raise BackendUnavailable("no PoW backend is available")
    kind, _, device = name.partition(":")
    cls = _load(kind)
    if not cls.available():
        raise BackendUnavailable(f"PoW backend {kind!r} is not available on this machine")
    if device:
        options = {**options, "device": device}
    return cls(**options)


def available_backends() -> list[str]:
    """Names of the backend kinds that can run here."""
    out = []
    for kind in ("python", "native", "opencl"):
        try:
            if _load(kind).available():
                out.append(kind)
        except (BackendUnavailable, ImportError):
            pass
    return out
