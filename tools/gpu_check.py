#!/usr/bin/env python3
"""One-shot check of the OpenCL PoW backend on an NVIDIA GPU box; prints JSON (and writes
$OUT/gpu_check.json when $OUT is set). Runs in well under two minutes.

Needs only numpy, pyopencl and this checkout. Where the NVIDIA OpenCL driver is installed but
not registered with the ICD loader (no /etc/OpenCL/vendors/nvidia.icd, as in many containers),
it finds libnvidia-opencl.so.*, writes an .icd file naming it into a temporary folder, points
OCL_ICD_VENDORS there and re-executes itself, all before pyopencl is imported.

Steps: list devices, pick the NVIDIA GPU; per kernel variant: build (time, ptxas register
report), self-test, quick rate; trial values vs hashlib for a few thousand nonces; easy targets
solved and verified (smallest nonce vs a hashlib brute force, a reference vector); cancel
latency; a sweep of nonces per work item x work-group size; then ~10 s at the best setting.

    python3 tools/gpu_check.py [--seconds 10] [--no-icd] [--budget 100] [--quick] [--allow-cpu]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_FLAG = "BMNODE_GPU_CHECK_CHILD"
ICD_INFO = "BMNODE_GPU_CHECK_ICD"
ISSUE_TARGET = 2.7e9
MASK = (1 << 64) - 1
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib",
    "/usr/lib", "/lib/x86_64-linux-gnu", "/lib64", "/usr/local/cuda/lib64", "/usr/local/cuda/compat",
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu", "/usr/lib/nvidia", "/opt/nvidia/lib64",
)
# one case of shared/vectors/pow.json (small_ttl_1h): the reference's nonce is the smallest from 1
VECTOR = {
    "initial_hash": "bd216edc5eba35a64d72781daed5ee02813eef4d3bebac49b5898b179ea80be3"
                    "c286e3ab8f016e2652baa0f51c05a9a40e2dd5840840a16876c026cbb692ffc7",
    "target": 17026483448603, "nonce": 400188, "trial_value": 8804383280420,
}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- ICD registration (stdlib only; runs before pyopencl is imported) ---------------------------


def find_nvidia_opencl() -> tuple[str | None, list[str]]:
    """Path of libnvidia-opencl.so.* (prefer .so.1) and the places looked at."""
    searched: list[str] = []
    found: list[str] = []
    dirs = list(LIB_DIRS) + [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for d in dirs:
        searched.append(d)
        found += sorted(glob.glob(os.path.join(d, "libnvidia-opencl.so*")))
    if not found:
        searched.append("ldconfig -p")
        try:
            out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
            found += re.findall(r"libnvidia-opencl\.so[^\s]*\s.*=>\s*(\S+)", out)
        except (OSError, subprocess.SubprocessError):
            pass
    if not found:  # last resort: a bounded walk
        deadline = time.monotonic() + 8
        for root in ("/usr", "/lib", "/opt", "/run/nvidia"):
            searched.append(f"walk {root}")
            for dirpath, dirnames, filenames in os.walk(root):
                if time.monotonic() > deadline:
                    break
                dirnames[:] = [x for x in dirnames if x not in ("share", "include", "src", "proc")]
                found += [os.path.join(dirpath, f) for f in filenames if f.startswith("libnvidia-opencl.so")]
    found = [f for f in found if os.path.exists(f)]
    if not found:
        return None, searched
    found.sort(key=lambda f: (not f.endswith(".so.1"), len(f)))  # the soname link first
    return os.path.realpath(found[0]), searched


def register_icd() -> dict:
    """Point the ICD loader at the NVIDIA driver and re-exec; in the child, report what was done."""
    if os.environ.get(CHILD_FLAG) == "1":
        return json.loads(os.environ.get(ICD_INFO, "{}"))
    lib, searched = find_nvidia_opencl()
    info = {"library": lib, "searched": searched, "system_icds": sorted(glob.glob("/etc/OpenCL/vendors/*.icd"))}
    if lib is None:
        info["note"] = "libnvidia-opencl.so not found; using the loader's default vendors"
        return info
    folder = tempfile.mkdtemp(prefix="bmnode-icd-")
    with open(os.path.join(folder, "nvidia.icd"), "w", encoding="ascii") as f:
        f.write(lib + "\n")
    env = dict(os.environ)
    env["OCL_ICD_VENDORS"] = folder  # ocl-icd (the loader bundled in pyopencl wheels)
    env["OCL_ICD_FILENAMES"] = lib  # Khronos loader
    # the driver's own dependencies (libcuda.so.1, ...) usually sit beside it: append that folder
    # (appended, never first: a system folder first could swap in another libpython, say)
    libdir = os.path.dirname(lib)
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    system = {"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"}
    if libdir not in paths and libdir not in system:
        env["LD_LIBRARY_PATH"] = ":".join([*paths, libdir])
    info.update({"vendors_dir": folder, "reexec": True})
    env[CHILD_FLAG] = "1"
    env[ICD_INFO] = json.dumps(info)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    raise AssertionError("unreachable")


# --- the checks -----------------------------------------------------------------------------------


def ref_trial(ih: bytes, nonce: int) -> int:
    inner = hashlib.sha512(nonce.to_bytes(8, "big") + ih).digest()
    return int.from_bytes(hashlib.sha512(inner).digest()[:8], "big")


def brute_force(ih: bytes, target: int, start: int = 0) -> int:
    n = start
    while ref_trial(ih, n) > target:
        n += 1
    return n


def ptxas_summary(log_text: str) -> str:
    lines = [l.strip() for l in log_text.splitlines() if re.search(r"registers|spill|stack|lmem|error", l, re.I)]
    return "\n".join(lines)[:1500] if lines else log_text.strip()[:1500]


#: 32-bit integer operations per clock per SM on recent NVIDIA GPUs (CUDA programming guide,
#: arithmetic instruction throughput: add, logic, shift, funnel shift at 64 on cc 7.x-9.0)
INT32_OPS_PER_CLOCK_PER_SM = 64
_PTX_NOT_INSTR = re.compile(r"^(\.|//|\$|\{|\}|[A-Za-z_$][\w$]*:)")


def ptx_instructions(ptx: str, kernel: str = "bm_trials") -> dict:
    """Instructions of ``kernel`` in a PTX listing (NVIDIA's OpenCL binaries are PTX), by opcode
    family: a static count of the straight-line trial kernel, so close to the work of one trial
    (ptxas may still fuse or split some)."""
    m = re.search(r"\.entry\s+" + re.escape(kernel) + r"\b", ptx)
    if not m:
        return {}
    body = ptx[m.end():]
    start = body.find("{")
    depth, end = 0, len(body)
    for i in range(start, len(body)):
        if body[i] == "{":
            depth += 1
        elif body[i] == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    fam: dict[str, int] = {}
    for line in body[start + 1:end].splitlines():
        t = line.strip().rstrip(";").strip()
        if not t or _PTX_NOT_INSTR.match(t):
            continue
        if t.startswith("@"):
            t = t.split(None, 1)[1] if " " in t else t
        op = t.split()[0].split(".")[0]
        fam[op] = fam.get(op, 0) + 1
    return {"total": sum(fam.values()), "by_opcode": dict(sorted(fam.items(), key=lambda kv: -kv[1]))}


def int32_ceiling(instr: int, compute_units: int, clock_mhz: float) -> float:
    """Trials/s if every PTX instruction were one 32-bit op at the SMs' full integer rate."""
    return compute_units * INT32_OPS_PER_CLOCK_PER_SM * clock_mhz * 1e6 / instr


class Checker:
    def __init__(self, args: argparse.Namespace, report: dict) -> None:
        self.args, self.r = args, report
        self.t0 = time.monotonic()
        self.ok = True

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.t0)

    def fail(self, what: str) -> None:
        self.ok = False
        self.r.setdefault("errors", []).append(what)
        log("FAIL: " + what)

    def run(self) -> None:
        import numpy
        import pyopencl as cl

        from bmnode.errors import BmnodeError, PowCancelled
        from bmnode.pow import opencl
        from bmnode.pow.bench import measure

        self.opencl, self.measure, self.PowCancelled, self.BmnodeError = opencl, measure, PowCancelled, BmnodeError
        self.cl = cl
        warnings.simplefilter("ignore")  # pyopencl warns about non-empty (verbose) build logs
        r = self.r
        r["versions"] = {"python": platform.python_version(), "numpy": numpy.__version__, "pyopencl": cl.VERSION_TEXT}
        r["env"] = {k: v for k, v in os.environ.items() if k.startswith("OCL_ICD") or k == "LD_LIBRARY_PATH"}
        rows = opencl.list_devices()
        r["devices"] = [list(row) for row in rows]
        log(f"devices: {rows}")
        gpu = [row for row in rows if row[3] == "GPU" and ("nvidia" in (row[1] + row[2]).lower())]
        gpu = gpu or [row for row in rows if row[3] == "GPU"]
        if not gpu and self.args.allow_cpu:
            gpu = rows[:1]
        if not gpu:
            lib = (r.get("icd") or {}).get("library")
            if lib:  # say why the driver library does not load, if it does not
                import ctypes

                try:
                    ctypes.CDLL(lib)
                    r["icd"]["dlopen"] = "ok"
                except OSError as e:
                    r["icd"]["dlopen"] = str(e)
            self.fail("no OpenCL GPU device found")
            return
        self.index = gpu[0][0]
        pair = opencl._all_devices()[self.index][1]
        r["gpu"] = {
            "index": self.index, "name": pair.name.strip(), "vendor": pair.vendor.strip(),
            "driver_version": pair.driver_version, "opencl_version": pair.version,
            "compute_units": pair.max_compute_units, "clock_mhz": pair.max_clock_frequency,
            "global_mem_gib": round(pair.global_mem_size / 2**30, 1),
        }
        self.nvidia = "nvidia" in (pair.vendor + " " + pair.platform.name).lower()
        self.variants()
        if not self.good:
            self.fail("no kernel variant built and passed the self-test")
            return
        best_v = max(self.good, key=lambda v: self.good[v])
        r["chosen_variant"] = best_v
        b = self.backend(best_v)
        try:
            self.correctness(b)
            self.cancel_latency(b)
        finally:
            b.close()
        cfg = self.sweep(best_v)
        self.final_bench(best_v, cfg)
        if self.left() > 25 and not self.args.quick and self.nvidia:
            self.regcount_sweep(best_v, cfg)

    def backend(self, variant: int, **kw):
        # the same build options everywhere, so pyopencl's binary cache spares rebuilds
        kw.setdefault("build_options", ["-cl-nv-verbose"] if self.nvidia else [])
        return self.opencl.OpenCLBackend(self.index, variant=variant, **kw)

    def rate(self, b, seconds: float) -> dict:
        self.measure(b, min(0.4, seconds / 2))  # warm-up: launch sizing
        m = self.measure(b, seconds)
        info = b.describe()
        m.update({"launch_size": info["launch_size"], "device_trials_per_second": info["device_trials_per_second"]})
        return m

    def variants(self) -> None:
        self.good: dict[int, float] = {}
        out = []
        # rotate: 2 PTX funnel shift, 0 builtin, 3 C funnel shift, 1 shifts; +4/+8/+12: IMAD adds
        order = (2, 14, 0, 12, 6, 10, 3, 15, 1) if self.nvidia else (0, 12, 1)
        for v in order:
            if self.left() < 60 and self.good:
                out.append({"variant": v, "skipped": "time budget"})
                continue
            row: dict = {"variant": v, "name": self.opencl.VARIANTS[v]}
            log(f"building variant {v} ({row['name']})")
            t = time.monotonic()
            try:
                b = self.backend(v)
            except self.BmnodeError as e:
                row.update({"ok": False, "error": str(e)[:1500], "build_s": round(time.monotonic() - t, 2)})
                out.append(row)
                log(f"variant {v}: unavailable ({str(e)[:300]})")
                continue
            row["build_s"] = round(time.monotonic() - t, 2)  # build + self-test + first launch
            row["ptxas"] = ptxas_summary(b.build_log)
            self.ptx_estimate(b, row)
            try:
                m = self.rate(b, 1.5)
            finally:
                b.close()
            row.update({"ok": True, "trials_per_second": m["trials_per_second"],
                        "device_trials_per_second": m["device_trials_per_second"]})
            self.good[v] = m["trials_per_second"]
            log(f"variant {v} ({row['name']}): build {row['build_s']} s, {m['trials_per_second']:.4g} trials/s")
            out.append(row)
        self.r["variants"] = out

    def ptx_estimate(self, b, row: dict) -> None:
        """Static PTX size of one trial and the integer-throughput ceiling it implies."""
        try:
            binary = b._program.get_info(self.cl.program_info.BINARIES)[0]
            ptx = binary.decode("utf-8", "replace") if isinstance(binary, (bytes, bytearray)) else str(binary)
        except Exception as e:  # noqa: BLE001 - a diagnostic only
            row["ptx"] = f"unavailable: {e}"
            return
        counts = ptx_instructions(ptx)
        if not counts:
            row["ptx"] = "no bm_trials entry in the program binary (not PTX?)"
            return
        g = self.r.get("gpu", {})
        row["ptx"] = {"instructions_per_trial": counts["total"], "top": dict(list(counts["by_opcode"].items())[:8])}
        if g.get("compute_units") and g.get("clock_mhz"):
            row["ptx"]["int32_ceiling"] = int32_ceiling(counts["total"], g["compute_units"], g["clock_mhz"])

    def correctness(self, b) -> None:
        c: dict = {}
        ih = hashlib.sha512(b"gpu check").digest()
        nonces = list(range(0, 2048)) + list(range(2**32 - 1024, 2**32 + 1024)) + list(range(MASK - 255, MASK + 1))
        got = b.trial_values(ih, nonces)
        bad = [n for n, g in zip(nonces, got) if g != ref_trial(ih, n)]
        log(f"trial values checked: {len(nonces)}, mismatches: {len(bad)}")
        c["trial_values_checked"] = len(nonces)
        c["trial_value_mismatches"] = bad[:10]
        if bad:
            self.fail(f"{len(bad)} trial values differ from hashlib")
        solves = []
        for label, div, start in (("a", 20000, 0), ("b", 50000, 2**32 - 30000), ("c", 3, 0), ("d", 100000, 12345)):
            h = hashlib.sha512(f"gpu solve {label}".encode()).digest()
            target = MASK // div
            expected = brute_force(h, target, start)
            sol = b.search(h, target, start)
            ok = sol is not None and sol.nonce == expected and ref_trial(h, sol.nonce) == sol.trial_value <= target
            solves.append({"target": target, "start": start, "nonce": sol and sol.nonce, "expected": expected, "ok": ok})
            if not ok:
                self.fail(f"search {label}: got {sol}, expected nonce {expected}")
        # harder targets (about 0.1 s and 0.5 s of work at the measured rate), checked with hashlib
        rate = max(self.good.values())
        for label, div in (("e", int(rate * 0.1) + 1), ("f", int(rate * 0.5) + 1)):
            h = hashlib.sha512(f"gpu solve {label}".encode()).digest()
            target = MASK // div
            t = time.monotonic()
            sol = b.search(h, target)
            dt = time.monotonic() - t
            ok = sol is not None and ref_trial(h, sol.nonce) == sol.trial_value <= target
            solves.append({"target": target, "nonce": sol and sol.nonce, "trials": sol and sol.trials,
                           "seconds": round(dt, 3), "ok": ok})
            if not ok:
                self.fail(f"search {label}: {sol} does not meet target {target}")
        h = bytes.fromhex(VECTOR["initial_hash"])
        sol = b.search(h, VECTOR["target"], 1)
        ok = sol is not None and (sol.nonce, sol.trial_value) == (VECTOR["nonce"], VECTOR["trial_value"])
        solves.append({"vector": "pow.json small_ttl_1h", "nonce": sol and sol.nonce, "expected": VECTOR["nonce"], "ok": ok})
        if not ok:
            self.fail(f"reference vector: got {sol}")
        c["solves"] = solves
        self.r["correctness"] = c
        log(f"correctness: {len(nonces)} trial values, {len(solves)} solves, ok={self.ok}")

    def cancel_latency(self, b) -> None:
        lat = []
        for delay in (0.2, 0.35, 0.5):
            ev = threading.Event()
            stamp = [0.0]

            def fire() -> None:
                stamp[0] = time.perf_counter()
                ev.set()

            timer = threading.Timer(delay, fire)
            timer.start()
            try:
                b.search(hashlib.sha512(b"cancel").digest(), 0, cancel=ev)
                self.fail("impossible search returned")
            except self.PowCancelled:
                lat.append(round((time.perf_counter() - stamp[0]) * 1000, 2))
        self.r["cancel_latency_ms"] = lat
        if max(lat) > 50:
            self.fail(f"cancel latency above 50 ms: {lat}")

    def sweep(self, variant: int) -> dict:
        rows = []
        best = {"nonces_per_item": None, "local_size": None, "trials_per_second": 0.0}
        per = 0.8 if not self.args.quick else 0.4
        for npw in (8, 32, 128):
            for local in (64, 128, 256, 512):
                if self.left() < self.args.seconds + 20:
                    rows.append({"nonces_per_item": npw, "local_size": local, "skipped": "time budget"})
                    continue
                try:
                    b = self.backend(variant, nonces_per_item=npw, local_size=local)
                except self.BmnodeError as e:
                    rows.append({"nonces_per_item": npw, "local_size": local, "error": str(e)[:300]})
                    continue
                try:
                    m = self.rate(b, per)
                finally:
                    b.close()
                row = {"nonces_per_item": npw, "local_size": b.local_size, "trials_per_second": m["trials_per_second"],
                       "device_trials_per_second": m["device_trials_per_second"], "launch_size": m["launch_size"]}
                rows.append(row)
                if row["trials_per_second"] > best["trials_per_second"]:
                    best = dict(row)
        self.r["sweep"] = rows
        self.r["sweep_best"] = best
        log(f"sweep best: {best}")
        return best

    def final_bench(self, variant: int, cfg: dict) -> None:
        kw = {k: cfg[k] for k in ("nonces_per_item", "local_size") if cfg.get(k)}
        seconds = max(1.0, min(self.args.seconds, self.left() - 10))
        results = {}
        for label, opts in (("default_tuning", {}), ("best_sweep", kw)):
            if label == "best_sweep" and not kw:
                continue
            b = self.backend(variant, **opts)
            try:
                m = self.rate(b, seconds if label == "best_sweep" else min(seconds, 3.0))
                m["config"] = b.describe()
            finally:
                b.close()
            results[label] = m
            log(f"bench {label}: {m['trials_per_second']:.4g} trials/s over {m['seconds']:.1f} s")
        self.r["bench"] = results
        best = max(m["trials_per_second"] for m in results.values())
        self.r["trials_per_second"] = best
        self.r["issue_target"] = ISSUE_TARGET
        self.r["meets_issue_target"] = best >= ISSUE_TARGET

    def regcount_sweep(self, variant: int, cfg: dict) -> None:
        kw = {k: cfg[k] for k in ("nonces_per_item", "local_size") if cfg.get(k)}
        rows = []
        for regs in (64, 96, 128, 168):
            if self.left() < 12:
                break
            t = time.monotonic()
            try:
                b = self.backend(variant, build_options=[f"-cl-nv-maxrregcount={regs}", "-cl-nv-verbose"], **kw)
            except self.BmnodeError as e:
                rows.append({"maxrregcount": regs, "error": str(e)[:300]})
                continue
            try:
                m = self.rate(b, 1.0)
            finally:
                b.close()
            rows.append({"maxrregcount": regs, "build_s": round(time.monotonic() - t, 2),
                         "trials_per_second": m["trials_per_second"], "ptxas": ptxas_summary(b.build_log)[:300]})
            log(f"maxrregcount {regs}: {m['trials_per_second']:.4g}")
        self.r["maxrregcount_sweep"] = rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of the final benchmark")
    p.add_argument("--budget", type=float, default=100.0, help="seconds for the whole check")
    p.add_argument("--no-icd", action="store_true", help="do not register the NVIDIA driver ourselves")
    p.add_argument("--quick", action="store_true", help="shorter sweep, no register-count sweep")
    p.add_argument("--allow-cpu", action="store_true", help="use a CPU device when there is no GPU (to try the script)")
    args = p.parse_args()
    report: dict = {"ok": False}
    report["icd"] = {"skipped": True} if args.no_icd else register_icd()
    sys.path.insert(0, REPO)
    checker = Checker(args, report)
    try:
        checker.run()
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        import traceback

        checker.fail(f"{type(e).__name__}: {e}")
        report["traceback"] = traceback.format_exc()[-4000:]
    report["ok"] = checker.ok
    report["elapsed_s"] = round(time.monotonic() - checker.t0, 1)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gpu_check.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if checker.ok else 1


if __name__ == "__main__":
    sys.exit(main())
