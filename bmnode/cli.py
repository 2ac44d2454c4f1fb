"""The ``bmnode`` command: the node (run, demo), clients of a running node through its API
(address create/list, send, inbox, status) and offline operator tools (decode, address
decode/new, pow). JSON on stdout; on bad input a one-line reason on stderr and exit status 2."""

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
    if args.broker:
        sol, name, elapsed = _pow_solve_remote(args, ih, target)
    else:
        sol, name, elapsed = _pow_solve_local(args, ih, target, expected)
    if sol is None:
        raise UsageError("no nonce found in the searched range")
    if tgt.trial_value(sol.nonce, ih) > target:  # re-check with the reference formula
        raise BmnodeError(f"backend {name} returned an invalid nonce {sol.nonce}")
    result: dict[str, Any] = {
        "backend": name,
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


def _pow_solve_local(args: argparse.Namespace, ih: bytes, target: int, expected: float) -> tuple[Any, str, float]:
    """Search here with a backend: (solution or None, backend name, seconds)."""
    from bmnode.pow.registry import get_backend

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
    return sol, backend.name, time.monotonic() - t0


def _pow_solve_remote(args: argparse.Namespace, ih: bytes, target: int) -> tuple[Any, str, float]:
    """Submit to a PoW broker (``--broker``, CURVE with --server-key/--secret-key)."""
    from bmnode.pow.broker import PowClient

    if args.start:
        raise UsageError("--start applies to a local search, not to --broker")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    t0 = time.monotonic()
    with PowClient(args.broker, client=args.client_name, timeout=args.timeout,
                   server_key=args.server_key, secret_key=args.secret_key) as c:
        sol = c.solve(ih, target)
    return sol, f"broker {args.broker}", time.monotonic() - t0


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
    return run_worker(args.connect, args.backend, threads=args.threads, name=args.name, heartbeat=args.heartbeat,
                      server_key=args.server_key, secret_key=args.secret_key)


def _pow_keygen(args: argparse.Namespace) -> int:
    from bmnode.pow.curve_keys import generate_keypair

    pub, sec, key = generate_keypair(args.dir, args.name, force=args.force)
    _emit({"name": args.name, "public_key": key.decode("ascii"), "public_file": str(pub), "secret_file": str(sec)})
    return 0


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
        worker_timeout=args.worker_timeout, curve_secret_key=args.secret_key,
        curve_authorized_keys=args.authorized_keys, curve_authorized_workers=args.authorized_workers,
        insecure=args.insecure,
    )
    return serve_broker(cfg)


# ------------------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    from bmnode.node.config import config_from_args

    config = config_from_args(args)
    if args.relay_only:
        from bmnode.net.run import run_node

        return run_node(config)
    from bmnode.node.fullnode import run_full_node

    return run_full_node(config)


# ------------------------------------------------------------------ a running node, through its API


def _add_client_arguments(p: argparse.ArgumentParser) -> None:
    """Where the running node is: its data directory (api.json, api.toml) or --api."""
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="the node's data directory: its API address and credentials are read there (default: per-user)")
    p.add_argument("--api", metavar="HOST:PORT", default=None, help="the node's API address (default: from api.json)")
    p.add_argument("--api-user", metavar="USER", default=None)
    p.add_argument("--api-password", metavar="PASSWORD", default=None, help="default: from api.toml")


def _node_api(args: argparse.Namespace) -> Any:
    from bmnode.node.apiproc import NodeApi
    from bmnode.node.config import default_data_dir, parse_host_port

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    host = port = None
    if args.api:
        hp = parse_host_port(args.api, where="--api")
        host, port = hp.host, hp.port
    return NodeApi.from_data_dir(data_dir, host=host, port=port, username=args.api_user, password=args.api_password)


def _address_create(args: argparse.Namespace) -> int:
    api = _node_api(args)
    if args.chan is not None:
        if args.passphrase is not None or args.count != 1:
            raise UsageError("--chan takes no --passphrase or --count")
        _emit([api.call("createChan", api.b64(args.chan))])
    elif args.passphrase is not None:
        if args.passphrase == "":
            raise UsageError("--passphrase must not be empty")
        made = api.call("createDeterministicAddresses", api.b64(args.passphrase), args.count)
        _emit(made.get("addresses", []) if isinstance(made, dict) else made)
    else:
        if args.count != 1:
            raise UsageError("--count needs --passphrase (random addresses are made one at a time)")
        _emit([api.call("createRandomAddress", api.b64(args.label))])
    return 0


def _address_list(args: argparse.Namespace) -> int:
    api = _node_api(args)
    out = []
    for a in api.addresses():
        a = dict(a)
        a["label"] = api.unb64(a.get("label", "")) if args.decode_labels else a.get("label", "")
        out.append(a)
    _emit(out)
    return 0


def _send(args: argparse.Namespace) -> int:
    api = _node_api(args)
    body = args.body
    if args.body_file is not None:
        if body is not None:
            raise UsageError("give --body or --body-file, not both")
        body = sys.stdin.read() if args.body_file == "-" else _read_text(args.body_file)
    if body is None:
        body = ""
    if args.broadcast == (args.to is not None):
        raise UsageError("give either --to ADDRESS or --broadcast")
    subject, text = api.b64(args.subject), api.b64(body)
    if args.broadcast:
        ack = api.call("sendBroadcast", args.sender, subject, text, args.encoding, args.ttl)
    else:
        ack = api.call("sendMessage", args.to, args.sender, subject, text, args.encoding, args.ttl)
    result: dict[str, Any] = {"ackdata": ack, "status": api.status(ack)}
    if args.wait:
        final = {"ackreceived", "msgsentnoackexpected", "broadcastsent", "toodifficult", "badkey"}
        if not args.broadcast:
            final.discard("broadcastsent")
        deadline = time.monotonic() + args.wait
        t0 = time.monotonic()
        while result["status"] not in final and time.monotonic() < deadline:
            time.sleep(0.25)
            status = api.status(ack)
            if status != result["status"]:
                result["status"] = status
                print(f"{time.monotonic() - t0:7.2f}s {status}", file=sys.stderr)
    _emit(result)
    return 0


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e


def _inbox(args: argparse.Namespace) -> int:
    api = _node_api(args)
    msgs = api.inbox()
    if args.unread:
        msgs = [m for m in msgs if not m.get("read")]
    _emit(msgs)
    return 0


def _status(args: argparse.Namespace) -> int:
    api = _node_api(args)
    if args.ackdata:
        _emit({"ackdata": args.ackdata, "status": api.status(args.ackdata)})
        return 0
    out: dict[str, Any] = {"api": api.url, "client_status": api.call("clientStatus")}
    from bmnode.node.config import default_data_dir
    from bmnode.node.fullnode import STATUS_FILE

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        out["processes"] = json.loads((data_dir / STATUS_FILE).read_text()).get("children", [])
    except (OSError, ValueError):
        pass
    _emit(out)
    return 0


class _DemoFailed(BmnodeError):
    """A demo step did not finish in time."""


def _demo(args: argparse.Namespace) -> int:
    """Three full nodes on loopback (alice - bob - carol in a line), a message with its ack
    from alice to bob (bob's pubkey unknown at first) and a broadcast from alice that reaches
    carol through bob; every step with its time."""
    import shutil
    import tempfile

    from bmnode.node.config import parse_network_pow
    from bmnode.node.fullnode import LocalNode, free_port

    parse_network_pow(args.network_pow, where="--network-pow")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    base = Path(tempfile.mkdtemp(prefix="bmnode-demo-"))
    t0 = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.2f}s] {text}", flush=True)

    def wait_for(what: str, check: Any) -> Any:
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise _DemoFailed(f"{what}: not done after {args.timeout:.0f} s")

    ports = [free_port() for _ in range(3)]
    extra = ("--no-dandelion", "--decrypt-workers", "1", "--pow-backend", args.pow_backend)
    names = ("alice", "bob", "carol")
    peers = ((ports[1],), (ports[0], ports[2]), (ports[1],))
    nodes = [
        LocalNode(base / n, name=n, port=p, peers=pe, network_pow=args.network_pow, api_password=f"demo-{n}",
                  extra=extra, log_level="INFO")
        for n, p, pe in zip(names, ports, peers)
    ]
    ok = False
    try:
        say(f"starting alice, bob and carol in {base} (peers: alice - bob - carol on 127.0.0.1, "
            f"network PoW {args.network_pow})")
        for n in nodes:
            n.start()
        alice, bob, carol = (n.wait_ready(args.timeout) for n in nodes)
        say("all three nodes are up: " + ", ".join(f"{n.name} peer port {n.port}, API {n.api_port}" for n in nodes))
        a = alice.call("createRandomAddress", alice.b64("alice"))
        b = bob.call("createRandomAddress", bob.b64("bob"))
        c = carol.call("createRandomAddress", carol.b64("carol"))
        say(f"addresses: alice {a}, bob {b}, carol {c}")

        say("alice sends bob a message (bob's pubkey is unknown to alice: getpubkey first)")
        sent_at = time.monotonic()
        ack = alice.call("sendMessage", b, a, alice.b64("Hello Bob"), alice.b64("Sent by bmnode demo."))
        seen: list[str] = []

        def delivered() -> Any:
            st = alice.status(ack)
            if not seen or seen[-1] != st:
                seen.append(st)
                say(f"  alice's copy: {st}")
            got = [m for m in bob.inbox() if m["fromAddress"] == a]
            return got if got and st == "ackreceived" else None

        got = wait_for("alice -> bob", delivered)
        say(f"  bob's inbox: {got[0]['subject']!r} from {got[0]['fromAddress']}; ack back at alice "
            f"{time.monotonic() - sent_at:.2f} s after sending")

        say("carol subscribes to alice; alice sends a broadcast (it reaches carol through bob)")
        carol.call("addSubscription", a, carol.b64("alice"))
        sent_at = time.monotonic()
        bc = alice.call("sendBroadcast", a, alice.b64("News from Alice"), alice.b64("Broadcast by bmnode demo."))
        wait_for("broadcast PoW", lambda: alice.status(bc) == "broadcastsent")
        say(f"  alice's broadcast: broadcastsent ({time.monotonic() - sent_at:.2f} s)")
        news = wait_for("broadcast -> carol", lambda: [m for m in carol.inbox() if m["fromAddress"] == a])
        say(f"  carol's inbox: {news[0]['subject']!r} to {news[0]['toAddress']}, "
            f"{time.monotonic() - sent_at:.2f} s after sending")
        ok = True
    except (BmnodeError, RuntimeError) as e:
        say(f"demo failed: {e}")
        for n in nodes:
            try:
                tail = n.log_path.read_text(errors="replace").splitlines()[-15:]
            except OSError:
                tail = []
            print(f"--- last lines of {n.name}'s log ({n.log_path}):", *tail, sep="\n", file=sys.stderr)
    finally:
        for n in nodes:
            n.stop()
        say("all nodes stopped" + (f"; their files are in {base}" if args.keep else ""))
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    if ok:
        say("demo OK")
        return 0
    return 1


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

    a = sub.add_parser("address", help="decode addresses, generate keys offline, create/list a running node's")
    asub = a.add_subparsers(dest="acmd", required=True)
    ad = asub.add_parser("decode", help="decode a BM- address")
    ad.add_argument("address")
    ad.set_defaults(func=_address_decode)
    an = asub.add_parser("new", help="offline: generate random or deterministic (passphrase) keys, printed, not stored")
    an.add_argument("--passphrase", default=None)
    an.add_argument("--version", type=int, default=4)
    an.add_argument("--stream", type=int, default=1)
    an.add_argument("--count", type=int, default=1)
    an.add_argument("--shorter", action="store_true", help="search for an 18-byte ripe (shorter address)")
    an.set_defaults(func=_address_new)

    w = sub.add_parser("pow", help="proof of work: solve, bench, worker, serve, keygen")
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
    ws.add_argument("--broker", default=None, metavar="ENDPOINT",
                    help="submit to a PoW broker's client endpoint (bmnode pow serve) instead of searching here")
    ws.add_argument("--server-key", default=None, metavar="FILE|Z85",
                    help="with --broker, CURVE: the broker's public key")
    ws.add_argument("--secret-key", default=None, metavar="FILE",
                    help="with --broker, CURVE: this client's NAME.key_secret file")
    ws.add_argument("--client-name", default="", help="with --broker: the name the broker files the job under")
    ws.add_argument("--timeout", type=float, default=600.0, help="with --broker: seconds to wait (default 600)")
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
    ww.add_argument("--server-key", default=None, metavar="FILE|Z85",
                    help="CURVE: the broker's public key (its NAME.key file, or the 40-character key)")
    ww.add_argument("--secret-key", default=None, metavar="FILE",
                    help="CURVE: this worker's NAME.key_secret file (its NAME.key must be authorized by the broker)")
    ww.add_argument("--log-level", default="INFO")
    ww.set_defaults(func=_pow_worker)
    wk = wsub.add_parser("keygen", help="make a CURVE key pair for the PoW service (broker, client or worker)",
                         epilog="Writes DIR/NAME.key (public, share it) and DIR/NAME.key_secret (mode 0600, keep "
                                "it). Give the broker its NAME.key_secret and a folder of the clients' and "
                                "workers' NAME.key files; give each client/worker the broker's NAME.key.")
    wk.add_argument("name", help="file name stem, e.g. broker or worker-gpu1")
    wk.add_argument("--dir", default=".", help="folder for the key files (created 0700 if missing; default .)")
    wk.add_argument("--force", action="store_true", help="replace existing key files of that name")
    wk.set_defaults(func=_pow_keygen)
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
    wv.add_argument("--secret-key", default=None, metavar="FILE",
                    help="CURVE on the tcp endpoints: the broker's NAME.key_secret file (bmnode pow keygen)")
    wv.add_argument("--authorized-keys", default=None, metavar="DIR",
                    help="CURVE: folder of the NAME.key files of the clients (and workers) allowed to connect; "
                         "re-read when files are added or removed. Limits are then per client key")
    wv.add_argument("--authorized-workers", default=None, metavar="DIR",
                    help="CURVE: a separate folder of the workers' NAME.key files (default: --authorized-keys)")
    wv.add_argument("--insecure", action="store_true",
                    help="allow binding a non-loopback tcp address without CURVE (refused otherwise: anyone "
                         "who can reach it could submit jobs or pose as a worker)")
    wv.add_argument("--log-level", default="INFO")
    wv.set_defaults(func=_pow_serve)
    wv.epilog = ("Plaintext by default, for ipc:// and loopback tcp. A non-loopback tcp endpoint needs CURVE "
                 "(--secret-key and --authorized-keys; CURVE covers every tcp endpoint, ipc stays plaintext) "
                 "or --insecure.")

    an.epilog = "Offline: keys are printed, nothing is stored. `bmnode address create` makes one in a running node."
    ac = asub.add_parser("create", help="create an address in the running node (through its API)")
    _add_client_arguments(ac)
    ac.add_argument("--label", default="", help="label of a random address")
    ac.add_argument("--passphrase", default=None, help="deterministic addresses of this passphrase")
    ac.add_argument("--count", type=int, default=1, help="with --passphrase: how many (default 1)")
    ac.add_argument("--chan", metavar="NAME", default=None, help="create (and join) the chan NAME")
    ac.set_defaults(func=_address_create)
    al = asub.add_parser("list", help="the running node's own addresses (through its API)")
    _add_client_arguments(al)
    al.add_argument("--decode-labels", action="store_true", help="labels as text (the API sends them base64)")
    al.set_defaults(func=_address_list)

    se = sub.add_parser("send", help="send a message or a broadcast from the running node (through its API)")
    _add_client_arguments(se)
    se.add_argument("--from", dest="sender", required=True, metavar="ADDRESS", help="one of the node's addresses")
    se.add_argument("--to", default=None, metavar="ADDRESS")
    se.add_argument("--broadcast", action="store_true", help="a broadcast to the sender's subscribers")
    se.add_argument("--subject", default="")
    se.add_argument("--body", default=None, help="message text")
    se.add_argument("--body-file", default=None, metavar="FILE", help="message text from FILE (- for stdin)")
    se.add_argument("--encoding", type=int, default=2, help="message encoding 1, 2 (default) or 3")
    se.add_argument("--ttl", type=int, default=4 * 24 * 3600, help="time to live in seconds (default 4 days)")
    se.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="wait up to SECONDS for ackreceived (broadcastsent), printing each status on stderr")
    se.set_defaults(func=_send)

    ib = sub.add_parser("inbox", help="the running node's inbox (through its API)")
    _add_client_arguments(ib)
    ib.add_argument("--unread", action="store_true", help="only unread messages")
    ib.set_defaults(func=_inbox)

    st = sub.add_parser("status", help="the running node's status, or a sent message's (through its API)")
    _add_client_arguments(st)
    st.add_argument("ackdata", nargs="?", default=None, help="a sent message's ackdata (hex)")
    st.set_defaults(func=_status)

    dm = sub.add_parser("demo", help="three nodes on loopback exchange a message and a broadcast, with timings")
    dm.add_argument("--network-pow", default="10:10", metavar="NTPB:EXTRA",
                    help="the demo network's PoW difficulty (default 10:10; the real network: 1000:1000)")
    dm.add_argument("--pow-backend", default="auto", help="auto, python, native or opencl[:DEVICE]")
    dm.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per step (default 120)")
    dm.add_argument("--keep", action="store_true", help="keep the nodes' data directories and logs")
    dm.set_defaults(func=_demo)

    from bmnode.node.config import add_run_arguments

    r = sub.add_parser(
        "run", help="run the full node (net, PoW, mailbox, API processes) until SIGTERM/SIGINT",
        description="Run the full node: the supervisor starts the net, PoW, mailbox and API processes, restarts "
        "a crashed one and stops them all on SIGTERM/SIGINT or the API's shutdown command.",
    )
    add_run_arguments(r)
    r.add_argument("--relay-only", action="store_true",
                   help="run only the networking process (a relay: no mailbox, no API)")
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
