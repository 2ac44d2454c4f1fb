"""Failed trial decryptions per second: bmnode's ECIES (libsecp256k1) vs a pyca/cryptography baseline.

Trial decryption (one ECDH per incoming msg/broadcast per owned key, nearly all of them failing
at the MAC) is the node's main CPU cost. Both sides do the same work per blob: parse the blob,
validate the ephemeral point, ECDH, SHA-512, HMAC-SHA256, constant-time compare (mismatch).
Runs on one core (pinned when the OS allows), both measurements in the same run.

    python3 bench/ecdh_bench.py [--seconds 3] [--size 300] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from hmac import compare_digest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.hashes import SHA256  # noqa: E402
from cryptography.hazmat.primitives.hmac import HMAC  # noqa: E402

from bmnode.crypto import ecies, keys  # noqa: E402
from bmnode.crypto import secp256k1 as _ec  # noqa: E402


class PycaDecryptor:
    """Baseline: the same failing trial decryption written with pyca/cryptography only."""

    def __init__(self, secret: bytes) -> None:
        self._key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())

    def try_decrypt(self, blob: bytes) -> bool:
        """True if the MAC matches (the bench only feeds blobs for which it must not)."""
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), b"\x04" + blob[20:52] + blob[54:86])
        h = hashlib.sha512(self._key.exchange(ec.ECDH(), point)).digest()
        mac = HMAC(h[32:], SHA256())
        mac.update(memoryview(blob)[:-32])
        return compare_digest(mac.finalize(), blob[-32:])


def _rate(fn, blobs: list[bytes], seconds: float) -> tuple[float, int]:
    """Calls of fn per second over about ``seconds``, cycling through ``blobs``."""
    n = len(blobs)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for blob in blobs:
            fn(blob)
        done += n
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), done


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement (default 3)")
    ap.add_argument("--size", type=int, default=300, help="plaintext bytes per blob (default 300)")
    ap.add_argument("--blobs", type=int, default=64, help="distinct blobs cycled through (default 64)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)

    pinning = _pin_one_core()
    recipient = keys.PrivateKey.random()
    wrong = keys.PrivateKey.random()
    blobs = [ecies.encrypt(recipient.public_key, os.urandom(args.size)) for _ in range(args.blobs)]

    ours = ecies.Decryptor(wrong)
    baseline = PycaDecryptor(wrong.secret)
    # Both must really fail with the wrong key and succeed (MAC) with the right one.
    assert all(ours.try_decrypt(b) is None for b in blobs)
    assert not any(baseline.try_decrypt(b) for b in blobs)
    assert ecies.Decryptor(recipient).try_decrypt(blobs[0]) is not None
    assert PycaDecryptor(recipient.secret).try_decrypt(blobs[0])

    _rate(ours.try_decrypt, blobs, min(0.3, args.seconds))  # warm-up
    _rate(baseline.try_decrypt, blobs, min(0.3, args.seconds))
    ours_rate, ours_n = _rate(ours.try_decrypt, blobs, args.seconds)
    base_rate, base_n = _rate(baseline.try_decrypt, blobs, args.seconds)

    result = {
        "benchmark": "failed ECIES trial decryptions per second (wrong key, MAC mismatch), one core",
        "bmnode_per_s": round(ours_rate, 1),
        "bmnode_trials": ours_n,
        "bmnode_library": _ec.LIBRARY,
        "baseline_per_s": round(base_rate, 1),
        "baseline_trials": base_n,
        "baseline_library": "pyca/cryptography (OpenSSL)",
        "ratio": round(ours_rate / base_rate, 2),
        "plaintext_bytes": args.size,
        "seconds_each": args.seconds,
        "cpu": platform.processor() or platform.machine(),
        "pinning": pinning,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(result["benchmark"])
        print(f"  bmnode   ({result['bmnode_library']}): {ours_rate:10.0f} /s")
        print(f"  baseline ({result['baseline_library']}): {base_rate:10.0f} /s")
        print(f"  ratio: {result['ratio']}x   ({args.size}-byte plaintexts, {args.seconds}s each, {pinning})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
