"""OpenCL proof-of-work backend: our double SHA-512 kernel (kernels/pow_sha512.cl) on any device.

The host keeps several launches in flight, sizes launches so that one takes about 25 ms on the
device, polls completion events so that cancellation is noticed within a few milliseconds, and
re-checks every solution with hashlib. Needs pyopencl (``pip install 'bmnode[opencl]'``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Sequence

try:
    import numpy as np
    import pyopencl as cl
except ImportError as _e:  # pragma: no cover - exercised only where pyopencl is missing
    cl = None  # type: ignore[assignment]
    np = None  # type: ignore[assignment]
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None

from bmnode.errors import BackendUnavailable, PowCancelled, PowError
from bmnode.pow.backend import PowBackend, ProgressCallback, Solution

KERNEL_PATH = Path(__file__).resolve().parent / "kernels" / "pow_sha512.cl"

_MASK = (1 << 64) - 1
_NONE = 0xFFFFFFFF  # "no solution" in the per-launch result slot
_RING = 16  # result slots; more than launches ever kept in flight
_MAX_LAUNCH = 1 << 31  # nonces per launch (offsets are 32-bit in the kernel)

_ROT_NAMES = ("builtin rotate", "64-bit shifts", "PTX funnel shift", "32-bit funnel shift")
_ADD_NAMES = ("", ", round adds as IMAD", ", schedule adds as IMAD", ", all adds as IMAD")
#: kernel builds: variant v compiles with BM_ROT = v % 4 and BM_ADD = v // 4 (see the kernel's header)
VARIANTS = {r + 4 * a: _ROT_NAMES[r] + _ADD_NAMES[a] for a in range(4) for r in range(4)}

#: (vendor substring, variants to try in order) for the default build; the first match wins.
#: tools/gpu_check.py measures every variant on a GPU and says which is fastest there.
PREFERRED_VARIANTS = (("nvidia", (2, 0)), ("", (0, 1)))

NO_PLATFORM_HINT = (
    "no OpenCL platform found: install an OpenCL driver (Debian/Ubuntu: 'pocl-opencl-icd' for CPUs, "
    "the vendor driver for GPUs) and make sure the ICD loader sees it (/etc/OpenCL/vendors/*.icd, "
    "or set OCL_ICD_VENDORS to a folder holding an .icd file that names the driver library)"
)

# ---------------------------------------------------------------------------------------------
# SHA-512 pieces needed for the host-side precomputation (FIPS 180-4)

_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483,
)
_IV = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & _MASK


def _sg0(x: int) -> int:
    return _rotr(x, 1) ^ _rotr(x, 8) ^ (x >> 7)


def _sg1(x: int) -> int:
    return _rotr(x, 19) ^ _rotr(x, 61) ^ (x >> 6)


def precompute_args(initial_hash: bytes) -> list[int]:
    """The 23 nonce-independent kernel arguments (BM_PRE_PARAMS) for one initial hash."""
    if len(initial_hash) != 64:
        raise PowError(f"initial hash must be 64 bytes, got {len(initial_hash)}")
    h = [int.from_bytes(initial_hash[i : i + 8], "big") for i in range(0, 64, 8)]
    m = _MASK
    # message words of block 1: W0 = nonce, W1..W8 = h, W9 = padding, W10..14 = 0, W15 = 576
    c16 = (0x8000000000000000 + _sg0(h[0])) & m
    c17 = (_sg1(576) + _sg0(h[1]) + h[0]) & m
    c18 = (_sg0(h[2]) + h[1]) & m
    c19 = (_sg1(c17) + _sg0(h[3]) + h[2]) & m
    c20 = (_sg0(h[4]) + h[3]) & m
    c21 = (_sg1(c19) + _sg0(h[5]) + h[4]) & m
    c22 = (576 + _sg0(h[6]) + h[5]) & m
    c23 = (_sg1(c21) + _sg0(h[7]) + h[6]) & m
    c24 = (c17 + _sg0(0x8000000000000000) + h[7]) & m
    return [
        (_IV[6] + _K[1] + h[0]) & m,  # kh1: rounds 1..3 still see a constant IV word as h
        (_IV[5] + _K[2] + h[1]) & m,
        (_IV[4] + _K[3] + h[2]) & m,
        *((_K[t] + h[t - 1]) & m for t in range(4, 9)),  # kw4..kw8
        c16, c17, c18, c19, c20, c21, c22, c23, c24,
        (_K[17] + c17) & m, (_K[19] + c19) & m, (_K[21] + c21) & m,  # kc17, kc19, kc21
        _sg0(c17), _sg0(c19), _sg0(c21),  # c32, c34, c36
    ]


def trial_value(initial_hash: bytes, nonce: int) -> int:
    """The reference trial value of one nonce, with hashlib (used to re-check every solution)."""
    inner = hashlib.sha512(nonce.to_bytes(8, "big") + initial_hash).digest()
    return int.from_bytes(hashlib.sha512(inner).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# devices


def _require_pyopencl() -> None:
    if cl is None:
        raise BackendUnavailable(
            f"the OpenCL backend needs pyopencl and numpy ({_IMPORT_ERROR}); "
            "install them with: pip install 'bmnode[opencl]'"
        )


def _all_devices() -> list[tuple[Any, Any]]:
    """(platform, device) pairs in a stable order; [] when no platform is installed."""
    _require_pyopencl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # ocl-icd raises PLATFORM_NOT_FOUND_KHR when there is none
        return []
    out = []
    for p in platforms:
        try:
            devices = p.get_devices()
        except cl.Error:
            continue
        out.extend((p, d) for d in devices)
    return out


def _type_name(device: Any) -> str:
    t = device.type
    for flag, name in ((cl.device_type.GPU, "GPU"), (cl.device_type.CPU, "CPU"), (cl.device_type.ACCELERATOR, "ACCELERATOR")):
        if t & flag:
            return name
    return "OTHER"


def list_devices() -> list[tuple[int, str, str, str]]:
    """(index, platform name, device name, type) for every OpenCL device; [] without pyopencl."""
    if cl is None:
        return []
    return [(i, p.name.strip(), d.name.strip(), _type_name(d)) for i, (p, d) in enumerate(_all_devices())]


def _pick_device(device: str | int | None) -> tuple[int, Any]:
    pairs = _all_devices()
    if not pairs:
        raise BackendUnavailable(NO_PLATFORM_HINT)
    if device is None or (isinstance(device, str) and device.strip() == ""):
        gpus = [i for i, (_, d) in enumerate(pairs) if d.type & cl.device_type.GPU]
        i = gpus[0] if gpus else 0
        return i, pairs[i][1]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        i = int(device)
        if not 0 <= i < len(pairs):
            raise BackendUnavailable(f"OpenCL device {i} not found; devices: {_describe(pairs)}")
        return i, pairs[i][1]
    want = device.strip().lower()
    for i, (p, d) in enumerate(pairs):
        if want in d.name.lower() or want in p.name.lower():
            return i, d
    raise BackendUnavailable(f"no OpenCL device matches {device!r}; devices: {_describe(pairs)}")


def _describe(pairs: Sequence[tuple[Any, Any]]) -> str:
    return "; ".join(f"{i}: {d.name.strip()} ({p.name.strip()})" for i, (p, d) in enumerate(pairs)) or "none"


# ---------------------------------------------------------------------------------------------


class OpenCLBackend(PowBackend):
    """Searches nonces on one OpenCL device with launches kept in flight.

    ``device``: index into :func:`list_devices`, or a substring of a device (or platform) name;
    ``None`` takes the first GPU, else the first device. Tuning knobs (normally left alone):
    ``nonces_per_item`` per work item and launch, ``local_size`` (work-group size),
    ``target_ms`` (launch duration the batch size is scaled to), ``in_flight`` (launches queued
    ahead), ``variant`` (kernel build, see :data:`VARIANTS`; by default the first of a
    per-vendor list that builds and passes the self-test), ``build_options`` (extra compiler
    options), ``autotune`` (False keeps the first, small launch size: for tests).
    """

    name = "opencl"

    def __init__(
        self,
        device: str | int | None = None,
        *,
        nonces_per_item: int | None = None,
        local_size: int | None = None,
        target_ms: float = 25.0,
        in_flight: int = 3,
        variant: int | None = None,
        build_options: Sequence[str] = (),
        autotune: bool = True,
    ) -> None:
        _require_pyopencl()
        self.index, self.device = _pick_device(device)
        self.name = f"opencl:{self.index}"
        self.device_name = self.device.name.strip()
        self.platform_name = self.device.platform.name.strip()
        self.is_gpu = bool(self.device.type & cl.device_type.GPU)
        self.target_s = max(0.002, float(target_ms) / 1000.0)
        self.in_flight = max(1, min(int(in_flight), _RING // 2))
        self.autotune = bool(autotune)
        self.ctx = cl.Context([self.device])
        props = cl.command_queue_properties.PROFILING_ENABLE
        self.queue = cl.CommandQueue(self.ctx, self.device, properties=props)
        self.build_log = ""
        self.variant = self._build(variant, list(build_options))
        max_wg = min(self.device.max_work_group_size, self._search.get_work_group_info(
            cl.kernel_work_group_info.WORK_GROUP_SIZE, self.device))
        if local_size is None:
            local_size = 256 if self.is_gpu else 64
        self.local_size = max(1, min(int(local_size), max_wg))
        # 8 nonces per work item: best of the sweep on an H100 (2.34e9 vs 2.30e9 at 32), and on PoCL.
        self.npw = int(nonces_per_item or 8)
        if not 1 <= self.npw <= 65536:
            raise PowError(f"nonces_per_item must be within 1..65536, got {self.npw}")
        self._units = max(1, self.device.max_compute_units)
        # first launch: a few work groups per compute unit; then scaled to target_s
        self._groups = self._units * (4 if self.is_gpu else 1)
        self._max_groups = max(1, _MAX_LAUNCH // (self.local_size * self.npw))
        self._best = cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, 4 * _RING)
        self._stop = cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, 4)
        self._host_best = np.full(_RING, _NONE, dtype=np.uint32)
        self._leftover: list = []
        #: completed launches, their summed device time and nonces (for diagnostics)
        self.launches, self.device_seconds, self.device_trials = 0, 0.0, 0
        self._lock = threading.Lock()
        self._closed = False
        self._search_self_test()  # also the warm-up: some drivers compile on the first launch

    # --- building -----------------------------------------------------------------------------

    def _variant_order(self, variant: int | None) -> list[int]:
        if variant is not None:
            if variant not in VARIANTS:
                raise PowError(f"unknown kernel variant {variant}; choose one of {sorted(VARIANTS)}")
            return [variant]
        vendor = (self.device.vendor + " " + self.platform_name).lower()
        for key, order in PREFERRED_VARIANTS:
            if key in vendor:
                return list(order)
        return [0]

    def _build(self, variant: int | None, options: list[str]) -> int:
        source = KERNEL_PATH.read_text(encoding="ascii")
        errors = []
        for v in self._variant_order(variant):
            try:
                program = cl.Program(self.ctx, source).build(options=[f"-DBM_ROT={v % 4}", f"-DBM_ADD={v // 4}", *options])
            except cl.Error as e:
                errors.append(f"variant {v} ({VARIANTS[v]}): build failed: {str(e).strip()[:2000]}")
                continue
            self._program = program
            self._search = program.bm_search
            self._trials = program.bm_trials
            self._search.set_scalar_arg_dtypes([np.uint64] * 23 + [np.uint64, np.uint64, np.uint32, np.uint32, np.uint32, np.uint32, None, None, np.uint32])
            self._trials.set_scalar_arg_dtypes([np.uint64] * 23 + [None, None, np.uint32, np.uint32])
            self._trials_wg = self._trials.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, self.device)
            try:
                self.build_log = program.get_build_info(self.device, cl.program_build_info.LOG) or ""
            except cl.Error:
                self.build_log = ""
            if self._self_test():
                return v
            errors.append(f"variant {v} ({VARIANTS[v]}): wrong trial values in the self-test")
        raise BackendUnavailable(f"the OpenCL kernel does not work on {self.device.name.strip()}: " + " | ".join(errors))

    def _self_test(self) -> bool:
        ih = hashlib.sha512(b"bmnode opencl self-test").digest()
        nonces = [0, 1, 2, 0xFFFFFFFF, 1 << 32, (1 << 64) - 1, 0x0123456789ABCDEF]
        got = self._run_trials(ih, nonces)
        return got == [trial_value(ih, n) for n in nonces]

    def _search_self_test(self) -> None:
        ih = hashlib.sha512(b"bmnode opencl search self-test").digest()
        target = _MASK // 64
        expected = next((n for n in range(4096) if trial_value(ih, n) <= target), None)
        got = self.search(ih, target, 0, 4096)
        if (got.nonce if got else None) != expected:
            self.close()
            raise BackendUnavailable(
                f"the OpenCL search kernel failed its self-test on {self.device_name}: got {got}, expected nonce {expected}"
            )

    # --- PowBackend ---------------------------------------------------------------------------

    @classmethod
    def available(cls) -> bool:
        """True when pyopencl imports and at least one OpenCL device exists."""
        if cl is None:
            return False
        try:
            return bool(_all_devices())
        except Exception:
            return False

    @classmethod
    def has_gpu(cls) -> bool:
        """True when an OpenCL GPU device exists."""
        if cl is None:
            return False
        try:
            return any(d.type & cl.device_type.GPU for _, d in _all_devices())
        except Exception:
            return False

    def trial_values(self, initial_hash: bytes, nonces: Iterable[int]) -> list[int]:
        """Trial values of ``nonces`` computed by the device kernel."""
        nonces = [int(n) for n in nonces]
        for n in nonces:
            if not 0 <= n <= _MASK:
                raise PowError(f"nonce {n} is outside 0..2**64-1")
        with self._lock:
            self._check_open()
            return self._run_trials(initial_hash, nonces)

    def _run_trials(self, initial_hash: bytes, nonces: list[int]) -> list[int]:
        pre = precompute_args(initial_hash)
        if not nonces:
            return []
        host_in = np.array(nonces, dtype=np.uint64)
        host_out = np.empty(len(nonces), dtype=np.uint64)
        mf = cl.mem_flags
        buf_in = cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=host_in)
        buf_out = cl.Buffer(self.ctx, mf.WRITE_ONLY, host_out.nbytes)
        local = min(64, self._trials_wg)
        gsize = -(-len(nonces) // local) * local
        self._trials(self.queue, (gsize,), (local,), *pre, buf_in, buf_out, np.uint32(len(nonces)), np.uint32(1))
        cl.enqueue_copy(self.queue, host_out, buf_out, is_blocking=True)
        return [int(x) for x in host_out]

    def search(
        self,
        initial_hash: bytes,
        target: int,
        start: int = 0,
        count: int | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Solution | None:
        """Search ``count`` nonces from ``start``; ``None`` when the range holds no solution.

        Launches cover consecutive ranges and are read in order, each reporting its smallest
        solution, so the result is the smallest solution at or after ``start`` (deterministic).
        """
        if not 0 <= target <= _MASK:
            raise PowError(f"target {target} is outside 0..2**64-1")
        if not 0 <= start <= _MASK:
            raise PowError(f"start nonce {start} is outside 0..2**64-1")
        if count is not None and count < 0:
            raise PowError(f"count must not be negative, got {count}")
        pre = precompute_args(initial_hash)
        end = (1 << 64) if count is None else min(start + count, 1 << 64)
        with self._lock:
            self._check_open()
            return self._search_locked(initial_hash, pre, target, start, end, progress, cancel)

    def _search_locked(
        self, ih: bytes, pre: list[int], target: int, start: int, end: int,
        progress: ProgressCallback | None, cancel: threading.Event | None,
    ) -> Solution | None:
        q = self.queue
        cl.enqueue_fill_buffer(q, self._stop, np.uint32(_NONE), 0, 4)
        self._prune_leftover()
        pending: deque = deque()
        pos, seq, done = start, 0, 0
        try:
            while True:
                while len(pending) < self.in_flight and pos < end:
                    pending.append(self._launch(pre, target, pos, end, seq))
                    pos += pending[-1][2]
                    seq += 1
                if not pending:
                    return None
                q.flush()
                if cancel is not None and cancel.is_set():
                    raise PowCancelled("proof-of-work search cancelled")
                lseq, base, n, kev, rev = pending[0]
                self._wait(rev, cancel)
                pending.popleft()
                self._retune(kev, n)
                off = int(self._host_best[lseq % _RING])
                if off != _NONE:
                    nonce = base + off
                    trial = trial_value(ih, nonce)
                    if trial > target:
                        raise PowError(f"OpenCL kernel returned nonce {nonce} whose trial value {trial} misses the target {target}")
                    return Solution(nonce=nonce, trial_value=trial, trials=done + off + 1)
                done += n
                if progress is not None:
                    progress(done)
        finally:
            # Later launches return at once when one found a nonce; on cancel they run out
            # (at most in_flight * target_ms) while the caller is already unblocked. Their
            # events are kept until complete: dropping a pending read event blocks in pyopencl.
            self._leftover.extend(pending)

    def _launch(self, pre: list[int], target: int, pos: int, end: int, seq: int) -> tuple:
        """Enqueue one launch from nonce ``pos``; returns (seq, base, nonces, kernel event, read event)."""
        per_group = self.local_size * self.npw
        want = self._groups * per_group
        n = min(want, end - pos)
        items = -(-n // self.npw)
        gsize = -(-items // self.local_size) * self.local_size
        slot = seq % _RING
        q = self.queue
        cl.enqueue_fill_buffer(q, self._best, np.uint32(_NONE), 4 * slot, 4)
        kev = self._search(q, (gsize,), (self.local_size,), *pre, np.uint64(pos), np.uint64(target),
                           np.uint32(n), np.uint32(self.npw), np.uint32(seq), np.uint32(slot), self._best, self._stop, np.uint32(1))
        rev = cl.enqueue_copy(q, self._host_best[slot : slot + 1], self._best, src_offset=4 * slot, is_blocking=False)
        return seq, pos, n, kev, rev

    def _wait(self, event: Any, cancel: threading.Event | None) -> None:
        """Wait for ``event``, checking ``cancel`` every millisecond or so."""
        complete = cl.command_execution_status.COMPLETE
        pause = 0.0002
        while True:
            status = event.command_execution_status
            if status == complete:
                return
            if status < 0:
                raise PowError(f"OpenCL command failed with status {status}")
            if cancel is not None and cancel.is_set():
                raise PowCancelled("proof-of-work search cancelled")
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def _prune_leftover(self) -> None:
        complete = cl.command_execution_status.COMPLETE
        self._leftover = [p for p in self._leftover if p[4].command_execution_status != complete]

    def _retune(self, kev: Any, n: int) -> None:
        """Scale the launch size so that a full launch takes about ``target_s`` on the device."""
        try:
            dt = (kev.profile.end - kev.profile.start) * 1e-9
        except cl.Error:
            return
        self.launches += 1
        self.device_seconds += max(0.0, dt)
        self.device_trials += n
        full = self._groups * self.local_size * self.npw
        if not self.autotune or dt <= 0 or n < full:
            return
        factor = min(4.0, max(0.25, self.target_s / dt))
        if 0.8 < factor < 1.25:
            return
        groups = round(self._groups * factor)
        if groups > 4 * self._units:  # whole waves over all compute units: less idle tail
            groups -= groups % self._units
        self._groups = int(max(1, min(self._max_groups, groups)))

    @property
    def launch_size(self) -> int:
        """Nonces in one full launch at the current tuning."""
        return self._groups * self.local_size * self.npw

    def _check_open(self) -> None:
        if self._closed:
            raise PowError("this OpenCL backend has been closed")

    def close(self) -> None:
        """Wait for queued launches and release the device buffers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.queue.finish()
            except cl.Error:
                pass
            self._leftover.clear()
            for b in (self._best, self._stop):
                try:
                    b.release()
                except cl.Error:
                    pass

    def describe(self) -> dict[str, Any]:
        """Device and tuning facts, for benchmarks and diagnostics."""
        return {
            "name": self.name,
            "device": self.device_name,
            "platform": self.platform_name,
            "type": _type_name(self.device),
            "compute_units": self.device.max_compute_units,
            "variant": self.variant,
            "variant_name": VARIANTS[self.variant],
            "local_size": self.local_size,
            "nonces_per_item": self.npw,
            "launch_size": self.launch_size,
            "target_ms": self.target_s * 1000.0,
            "in_flight": self.in_flight,
            "launches": self.launches,
            "device_trials_per_second": (self.device_trials / self.device_seconds) if self.device_seconds else None,
        }

