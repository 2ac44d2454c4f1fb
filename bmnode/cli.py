"""The ``bmnode`` command: operator tools (decode, address, pow). JSON on stdout; on bad input a
one-line reason on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from bmnode.errors import BmnodeError

EXIT_BAD_INPUT = 2


class UsageError(BmnodeError):
    """Bad command-line input; printed as one line."""


def _emit(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _read_input(arg: str) -> bytes:
    """HEX on the command line, or @FILE holding raw bytes or hex text (whitespace ignored)."""
    if arg.startswith("@"):
        path = Path(arg[1:])
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from e
        text = raw.strip()
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return raw
    cleaned = "".join(arg.split())
    if cleaned.startswith(("0x", "0X")):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError as e:
        raise UsageError(f"input is not hex (or @FILE): {e}") from e


# ---------------------------------------------------------------------------------- decode


def _decode(args: argparse.Namespace) -> int:
    from bmnode.protocol.decode import describe_input

    data = _read_input(args.input)
    now = int(args.now) if args.now is not None else int(time.time())
    _emit(describe_input(data, now=now, ntpb=args.ntpb, extra=args.extra))
    return 0


# --------------------------------------------------------------------------------- address


def describe_address(text: str) -> dict[str, Any]:
    """The reference's decode status and, on success, version, stream, ripe and derived values."""
    from bmnode.crypto.addresses import decode_address
    from bmnode.crypto.derived import address_key_and_tag, broadcast_private_key
    from bmnode.crypto.keys import public_key

    d = decode_address(text)
    out: dict[str, Any] = {"address": text.strip(), "status": d.status}
    if not d.ok:
        return out
    out.update(version=d.version, stream=d.stream, ripe=d.ripe.hex())
    if d.version >= 4:
        priv, tag = address_key_and_tag(d.version, d.stream, d.ripe)
        out["tag"] = tag.hex()
        out["address_public_key"] = public_key(priv).hex()
    elif d.version >= 2:
        out["broadcast_public_key"] = public_key(broadcast_private_key(d.version, d.stream, d.ripe)).hex()
    return out


def describe_identity(g: Any) -> dict[str, Any]:
    """A generated address with its keys: private keys in WIF (as keys.dat stores them)."""
    from bmnode.crypto.wif import encode_wif

    out: dict[str, Any] = {
        "address": g.address,
        "version": g.version,
        "stream": g.stream,
        "ripe": g.ripe.hex(),
        "private_signing_key_wif": encode_wif(g.priv_signing_key),
        "private_encryption_key_wif": encode_wif(g.priv_encryption_key),
        "public_signing_key": g.pub_signing_key.hex(),
        "public_encryption_key": g.pub_encryption_key.hex(),
    }
    if g.signing_nonce is not None:
        out["signing_nonce"] = g.signing_nonce
        out["encryption_nonce"] = g.encryption_nonce
    out["attempts"] = g.attempts
    return out


def _address_decode(args: argparse.Namespace) -> int:
    result = describe_address(args.address)
    _emit(result)
    if result["status"] != "success":
        print(f"bmnode: address does not decode: {result['status']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _address_new(args: argparse.Namespace) -> int:
    from bmnode.crypto.generation import deterministic_addresses, random_address

    if args.count < 1 or args.count > 1000:
        raise UsageError(f"--count must be between 1 and 1000, got {args.count}")
    if args.version not in (3, 4):
        raise UsageError(f"--version must be 3 or 4, got {args.version}")
    if args.stream < 1:
        raise UsageError(f"--stream must be >= 1, got {args.stream}")
    zeros = 2 if args.shorter else 1
    if args.passphrase is not None:
        if args.passphrase == "":
            raise UsageError("--passphrase must not be empty")
        idents = deterministic_addresses(
            args.passphrase.encode("utf-8"), args.count, version=args.version, stream=args.stream,
            leading_zero_bytes=zeros,
        )
    else:
        idents = [
            random_address(version=args.version, stream=args.stream, leading_zero_bytes=zeros)
            for _ in range(args.count)
        ]
    _emit([describe_identity(i) for i in idents])
    return 0


# ------------------------------------------------------------------------------------- pow


class _ProgressBar:
    """A one-line progress display on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, expected: float | None, enabled: bool) -> None:
        self.expected = expected
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, trials: int) -> None:
        if not self.enabled:
            return
        t = time.monotonic()
        if t - self.last < 0.2:
            return
        self.last = t
        rate = trials / max(t - self.start, 1e-9)
        if self.expected:
            frac = min(trials / self.expected, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {trials:>14,} trials  {rate / 1e6:8.2f} M/s  (~{self.expected:,.0f} expected)")
        else:
            sys.stderr.write(f"\r{trials:>14,} trials  {rate / 1e6:8.2f} M/s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _pow_solve(args: argparse.Namespace) -> int:
    from bmnode.pow import target as tgt
    from bmnode.pow.registry import get_backend

    body: bytes | None = None
    if args.payload_file:
        if args.initial_hash or args.target is not None:
            raise UsageError("give either --payload-file/--ttl or --initial-hash/--target, not both")
        if args.ttl is None:
            raise UsageError("--payload-file needs --ttl SECONDS")
        try:
            body = _read_input("@" + args.payload_file)
        except UsageError:
            raise
        if not body:
            raise UsageError("the payload file is empty")
        ih = tgt.initial_hash(body)
        target = tgt.sender_target(len(body) + 8, args.ttl, args.ntpb, args.extra)
        expected = tgt.expected_trials(len(body) + 8, args.ttl, args.ntpb, args.extra)
    else:
        if not args.initial_hash or args.target is None:
            raise UsageError("give --initial-hash HEX and --target N (or --payload-file F --ttl S)")
        try:
            ih = bytes.fromhex(args.initial_hash)
        except ValueError as e:
            raise UsageError(f"--initial-hash is not hex: {e}") from e
        if len(ih) != 64:
            raise UsageError(f"--initial-hash must be 64 bytes (128 hex digits), got {len(ih)} bytes")
        target = args.target
        if not 0 <= target < 1 << 64:
            raise UsageError(f"--target must be in [0, 2^64), got {target}")
        expected = (1 << 64) / (target + 1)
    opts: dict[str, Any] = {}
    if args.threads:
        opts["threads"] = args.threads
    backend = get_backend(args.backend, **opts)
    bar = _ProgressBar(expected, enabled=(sys.stderr.isatty() or args.progress) and not args.quiet)
    cancel = threading.Event()
    t0 = time.monotonic()
    try:
        sol = backend.search(ih, target, args.start, None, progress=bar, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        bar.done()
        backend.close()
    elapsed = time.monotonic() - t0
    if sol is None:
        raise UsageError("no nonce found in the searched range")
    if tgt.trial_value(sol.nonce, ih) > target:  # re-check with the reference formula
        raise BmnodeError(f"backend {backend.name} returned an invalid nonce {sol.nonce}")
    result: dict[str, Any] = {
        "backend": backend.name,
        "initial_hash": ih.hex(),
        "target": target,
        "nonce": sol.nonce,
        "trial_value": sol.trial_value,
        "trials": sol.trials,
        "seconds": round(elapsed, 6),
        "trials_per_second": round(sol.trials / elapsed, 1) if elapsed > 0 else None,
    }
    if body is not None:
        result["object"] = (sol.nonce.to_bytes(8, "big") + body).hex()
    _emit(result)
    return 0


def _pow_bench(args: argparse.Namespace) -> int:
    from bmnode.pow.bench import format_table, run_bench

    threads = None
    if args.threads:
        try:
            threads = [int(t) for t in args.threads.split(",") if t.strip()]
        except ValueError as e:
            raise UsageError(f"--threads must be a comma-separated list of integers: {args.threads}") from e
        if not threads or min(threads) < 1:
            raise UsageError("--threads values must be >= 1")
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    if args.seconds <= 0:
        raise UsageError("--seconds must be positive")
    result = run_bench(seconds=args.seconds, threads=threads, backends=backends)
    if args.plot:
        from bmnode.pow.bench import plot

        plot(result, args.plot)
    if args.json:
        _emit(result)
    else:
        print(format_table(result))
    return 0


def _pow_worker(args: argparse.Namespace) -> int:
    from bmnode.pow.worker import run_worker, setup_worker_logging

    if args.heartbeat <= 0:
        raise UsageError("--heartbeat must be positive")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    setup_worker_logging(args.log_level)
    return run_worker(args.connect, args.backend, threads=args.threads, name=args.name, heartbeat=args.heartbeat)


def _pow_serve(args: argparse.Namespace) -> int:
    from bmnode.node.bus import DEFAULT_POW_PORT, DEFAULT_POW_WORKER_PORT, check_endpoint
    from bmnode.pow.broker import BrokerConfig, serve_broker
    from bmnode.pow.worker import setup_worker_logging

    clients = args.clients or [f"tcp://127.0.0.1:{DEFAULT_POW_PORT}"]
    workers = args.workers_bind if args.workers_bind is not None else [f"tcp://127.0.0.1:{DEFAULT_POW_WORKER_PORT}"]
    for ep in clients + workers:
        check_endpoint(ep)
    if args.local_workers < 0:
        raise UsageError("--local-workers must be >= 0")
    if args.local_workers == 0 and not workers:
        raise UsageError("with --local-workers 0, give --workers-bind so that workers can join")
    if args.max_jobs_per_client < 1:
        raise UsageError("--max-jobs-per-client must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if args.worker_timeout <= 0:
        raise UsageError("--worker-timeout must be positive")
    setup_worker_logging(args.log_level)
    cfg = BrokerConfig(
        client_endpoints=clients, worker_endpoints=workers, local_workers=args.local_workers,
        backend=args.backend, threads=args.threads, max_jobs_per_client=args.max_jobs_per_client,
        worker_timeout=args.worker_timeout,
    )
    return serve_broker(cfg)


# ------------------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    from bmnode.net.run import run_node
    from bmnode.node.config import config_from_args

    return run_node(config_from_args(args))


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bmnode", description="bmnode: a Bitmessage node for servers")
    p.add_argument("--version", action="version", version=f"bmnode {__import__('bmnode').__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("decode", help="decode framed message(s) or a bare object (JSON)")
    d.add_argument("input", help="hex, or @FILE with raw bytes or hex text")
    d.add_argument("--now", type=int, default=None, help="clock for expiry/PoW checks (Unix seconds)")
    d.add_argument("--ntpb", type=int, default=1000, help="network minimum nonce trials per byte")
    d.add_argument("--extra", type=int, default=1000, help="network minimum payload length extra bytes")
    d.set_defaults(func=_decode)

    a = sub.add_parser("address", help="decode or create addresses")
    asub = a.add_subparsers(dest="acmd", required=True)
    ad = asub.add_parser("decode", help="decode a BM- address")
    ad.add_argument("address")
    ad.set_defaults(func=_address_decode)
    an = asub.add_parser("new", help="create random or deterministic (passphrase) addresses")
    an.add_argument("--passphrase", default=None)
    an.add_argument("--version", type=int, default=4)
    an.add_argument("--stream", type=int, default=1)
    an.add_argument("--count", type=int, default=1)
    an.add_argument("--shorter", action="store_true", help="search for an 18-byte ripe (shorter address)")
    an.set_defaults(func=_address_new)

    w = sub.add_parser("pow", help="proof of work: solve, bench")
    wsub = w.add_subparsers(dest="wcmd", required=True)
    ws = wsub.add_parser("solve", help="find a nonce")
    ws.add_argument("--initial-hash", default=None, help="128 hex digits")
    ws.add_argument("--target", type=int, default=None)
    ws.add_argument("--payload-file", default=None, help="object without nonce (raw or hex)")
    ws.add_argument("--ttl", type=int, default=None)
    ws.add_argument("--ntpb", type=int, default=1000)
    ws.add_argument("--extra", type=int, default=1000)
    ws.add_argument("--backend", default="auto", help="python, native, opencl[:DEVICE] or auto")
    ws.add_argument("--threads", type=int, default=None)
    ws.add_argument("--start", type=int, default=0)
    ws.add_argument("--progress", action="store_true", help="show the progress bar even when not a tty")
    ws.add_argument("--quiet", action="store_true")
    ws.set_defaults(func=_pow_solve)
    wb = wsub.add_parser("bench", help="trials/s of every backend")
    wb.add_argument("--seconds", type=float, default=3.0)
    wb.add_argument("--threads", default=None, help="e.g. 1,2,4")
    wb.add_argument("--backends", default=None, help="e.g. python,native,opencl:0")
    wb.add_argument("--json", action="store_true")
    wb.add_argument("--plot", default=None, metavar="FILE.png")
    wb.set_defaults(func=_pow_bench)
    ww = wsub.add_parser("worker", help="a PoW worker that pulls jobs from a broker (local or remote)")
    ww.add_argument("--connect", required=True, metavar="ENDPOINT",
                    help="the broker's worker endpoint, e.g. tcp://HOST:8447")
    ww.add_argument("--backend", default="auto", help="python, native, opencl[:DEVICE] or auto")
    ww.add_argument("--threads", type=int, default=None, help="threads of the native backend")
    ww.add_argument("--name", default=None, help="worker name shown by the broker (default host-pid)")
    ww.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    ww.add_argument("--log-level", default="INFO")
    ww.set_defaults(func=_pow_worker)
    wv = wsub.add_parser("serve", help="a standalone PoW broker: the PoW offload service for other clients")
    wv.add_argument("--clients", metavar="ENDPOINT", action="append", default=None,
                    help="where clients submit jobs (repeatable; default tcp://127.0.0.1:8446)")
    wv.add_argument("--workers-bind", metavar="ENDPOINT", action="append", default=None,
                    help="where remote workers connect (repeatable; default tcp://127.0.0.1:8447)")
    wv.add_argument("--local-workers", type=int, default=1, help="worker threads in this process (default 1)")
    wv.add_argument("--backend", default="auto", help="backend of the local workers: python, native, opencl[:DEVICE], auto")
    wv.add_argument("--threads", type=int, default=None, help="threads of each native local worker")
    wv.add_argument("--max-jobs-per-client", type=int, default=256)
    wv.add_argument("--worker-timeout", type=float, default=3.0, help="drop a silent worker after this many seconds")
    wv.add_argument("--log-level", default="INFO")
    wv.set_defaults(func=_pow_serve)

    from bmnode.node.config import add_run_arguments

    r = sub.add_parser("run", help="run the node (the networking process) until SIGTERM/SIGINT")
    add_run_arguments(r)
    r.set_defaults(func=_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BmnodeError as e:
        print(f"bmnode: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bmnode: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
