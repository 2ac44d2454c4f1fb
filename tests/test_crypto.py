"""Unit and property tests for bmnode.crypto and the RIPEMD-160 fallback: round trips, cross-checks
against pyca/cryptography, and bad input that must give typed errors (never a crash)."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as pyca_ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bmnode.crypto import addresses, base58, derived, ecies, generation, keys, signatures, wif
from bmnode.crypto import secp256k1 as ec
from bmnode.errors import BmnodeError, CryptoError, DecryptionFailed, InvalidAddress, MalformedMessage
from bmnode.protocol import _ripemd160
from bmnode.protocol.hashing import ripe_of

N = ec.ORDER
P = ec.FIELD_PRIME
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

secrets_st = st.integers(min_value=1, max_value=N - 1).map(lambda i: i.to_bytes(32, "big"))
STATUSES = {
    "success",
    "invalidcharacters",
    "checksumfailed",
    "varintmalformed",
    "versiontoohigh",
    "encodingproblem",
    "ripetooshort",
    "ripetoolong",
}


def _pyca_private(secret: bytes) -> pyca_ec.EllipticCurvePrivateKey:
    return pyca_ec.derive_private_key(int.from_bytes(secret, "big"), pyca_ec.SECP256K1())


# --- RIPEMD-160 fallback -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, digest",
    [
        (b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
        (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
        (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
        (b"abcdefghijklmnopqrstuvwxyz", "f71c27109c692c1b56bbdceb5b9d2865b3708dbc"),
        (hashlib.sha512(b"hello").digest(), "79a324faeebcbf9849f310545ed531556882487e"),  # spec 2.7
    ],
)
def test_ripemd160_known_answers(data, digest):
    assert _ripemd160.ripemd160(data).hex() == digest


def _hashlib_ripemd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:  # pragma: no cover - hashlib without RIPEMD-160
        pytest.skip("hashlib has no ripemd160 to compare with")


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000])
def test_ripemd160_matches_hashlib_at_padding_boundaries(size):
    data = os.urandom(size)
    assert _ripemd160.ripemd160(data) == _hashlib_ripemd160(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_ripemd160_matches_hashlib(data):
    assert _ripemd160.ripemd160(data) == _hashlib_ripemd160(data)


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [b"", b"\x01" * 31, b"\x01" * 33, bytes(32), N.to_bytes(32, "big"), (N + 1).to_bytes(32, "big"), b"\xff" * 32],
)
def test_invalid_private_keys(secret):
    with pytest.raises(CryptoError):
        keys.validate_private_key(secret)
    with pytest.raises(CryptoError):
        keys.public_key(secret)
    with pytest.raises(CryptoError):
        keys.PrivateKey(secret)


@pytest.mark.parametrize("bad", [None, "00" * 32, 5])
def test_private_key_wrong_type(bad):
    with pytest.raises(CryptoError):
        keys.validate_private_key(bad)


def test_private_key_range_edges():
    assert keys.public_key((1).to_bytes(32, "big")).hex().startswith("0479be667ef9dcbbac55a06295ce870b07")  # G
    keys.validate_private_key((N - 1).to_bytes(32, "big"))
    assert keys.validate_private_key(bytearray(b"\x01" * 32)) == b"\x01" * 32


def test_random_keys_are_valid_and_distinct():
    a, b = keys.random_private_key(), keys.random_private_key()
    assert a != b and keys.validate_private_key(a) == a
    k = keys.PrivateKey.random()
    assert k.public_key.bytes65 == keys.public_key(k.secret)
    assert k.secret.hex() not in repr(k)


@SETTINGS
@given(secrets_st)
def test_public_key_matches_pyca(secret):
    expected = _pyca_private(secret).public_key().public_numbers()
    pub = keys.public_key(secret)
    assert pub == b"\x04" + expected.x.to_bytes(32, "big") + expected.y.to_bytes(32, "big")
    parsed = keys.parse_public_key(pub[1:])
    assert parsed == keys.parse_public_key(pub)
    assert (parsed.bytes64, parsed.x, parsed.y) == (pub[1:], pub[1:33], pub[33:])


def test_public_key_rejects_bad_encodings():
    good = keys.public_key(b"\x07" * 32)
    y = int.from_bytes(good[33:], "big")
    bad = [
        b"",
        good[:64] + b"",  # 64 bytes but 04||X||Y[:31] is not a point
        good + b"\x00",
        b"\x02" + good[1:],  # wrong prefix for 65 bytes
        b"\x06" + good[1:],  # hybrid encoding is not accepted
        b"\x04" + good[1:33] + ((y + 1) % P).to_bytes(32, "big"),  # off curve
        b"\x04" + good[1:33] + (P - y).to_bytes(32, "big")[:-1] + b"\x00",
        b"\x04" + P.to_bytes(32, "big") + good[33:],  # X == p
        b"\x04" + bytes(64),  # "point at infinity"
    ]
    for data in bad:
        with pytest.raises(CryptoError):
            keys.parse_public_key(data)
    with pytest.raises(CryptoError):
        keys.parse_public_key("04" * 65)  # type: ignore[arg-type]
    # The negated point is on the curve and must parse.
    assert keys.parse_public_key(b"\x04" + good[1:33] + (P - y).to_bytes(32, "big")).x == good[1:33]


# --- ECDH --------------------------------------------------------------------------------------


@SETTINGS
@given(secrets_st, secrets_st)
def test_ecdh_x_matches_pyca_and_is_symmetric(a, b):
    pub_a, pub_b = keys.PrivateKey(a).public_key, keys.PrivateKey(b).public_key
    x = ec.ecdh_x(a, pub_b.point)
    assert x == ec.ecdh_x(b, pub_a.point)
    assert x == _pyca_private(a).exchange(pyca_ec.ECDH(), _pyca_private(b).public_key())
    assert len(x) == 32


def test_ecdh_rejects_invalid_scalar():
    point = keys.PrivateKey(b"\x05" * 32).public_key.point
    with pytest.raises(CryptoError):
        ec.ecdh_x(bytes(32), point)


# --- ECIES -------------------------------------------------------------------------------------

RECIPIENT = keys.PrivateKey(hashlib.sha256(b"recipient").digest())
OTHER = keys.PrivateKey(hashlib.sha256(b"someone else").digest())


@SETTINGS
@given(st.binary(max_size=600))
def test_ecies_round_trip(plaintext):
    blob = ecies.encrypt(RECIPIENT.public_key, plaintext)
    assert len(blob) == 16 + 70 + (len(plaintext) // 16 + 1) * 16 + 32
    assert ecies.decrypt(RECIPIENT, blob) == plaintext
    assert ecies.decrypt(RECIPIENT.secret, bytearray(blob)) == plaintext
    assert ecies.Decryptor(OTHER).try_decrypt(blob) is None
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(OTHER, blob)


def test_ecies_is_randomised_unless_injected():
    a = ecies.encrypt(RECIPIENT.public_key.bytes64, b"x")
    b = ecies.encrypt(RECIPIENT.public_key.bytes65, b"x")
    assert a != b and a[:16] != b[:16] and a[16:86] != b[16:86]
    eph, iv = b"\x11" * 32, b"\x22" * 16
    assert ecies.encrypt(RECIPIENT.public_key, b"x", ephemeral_privkey=eph, iv=iv) == ecies.encrypt(
        RECIPIENT.public_key.bytes65, b"x", ephemeral_privkey=eph, iv=iv
    )


def test_ecies_trial_decryption_with_many_keys():
    owned = [keys.PrivateKey(hashlib.sha256(bytes([i])).digest()) for i in range(5)]
    blob = ecies.encrypt(owned[3].public_key, b"for key 3")
    parsed = ecies.parse_blob(blob)  # parsed once, tried with every key
    results = [ecies.Decryptor(k).try_decrypt(parsed) for k in owned]
    assert results == [None, None, None, b"for key 3", None]


def test_ecies_encrypt_bad_inputs():
    with pytest.raises(CryptoError):
        ecies.encrypt(b"\x04" + bytes(64), b"x")
    with pytest.raises(CryptoError):
        ecies.encrypt(RECIPIENT.public_key, b"x", iv=b"short")
    with pytest.raises(CryptoError):
        ecies.encrypt(RECIPIENT.public_key, b"x", ephemeral_privkey=bytes(32))
    with pytest.raises(CryptoError):
        ecies.encrypt(RECIPIENT.public_key, "text")  # type: ignore[arg-type]


def test_ecies_decrypt_with_invalid_private_key():
    blob = ecies.encrypt(RECIPIENT.public_key, b"x")
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(bytes(32), blob)
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(b"\x01" * 31, blob)


def test_ecies_every_truncation_and_extension_fails():
    blob = ecies.encrypt(RECIPIENT.public_key, b"hello world, this is 2 blocks")
    dec = ecies.Decryptor(RECIPIENT)
    for n in range(len(blob)):
        with pytest.raises(DecryptionFailed):
            dec.decrypt(blob[:n])
    with pytest.raises(DecryptionFailed):
        dec.decrypt(blob + b"\x00")
    with pytest.raises(DecryptionFailed):
        dec.decrypt(blob + bytes(16))


def test_ecies_every_bit_flip_fails():
    blob = ecies.encrypt(RECIPIENT.public_key, b"abc")
    dec = ecies.Decryptor(RECIPIENT)
    for i in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[i] ^= 1 << bit
            assert dec.try_decrypt(bytes(tampered)) is None, (i, bit)


def test_ecies_mac_is_checked_before_decrypting(monkeypatch):
    blob = bytearray(ecies.encrypt(RECIPIENT.public_key, b"secret"))
    blob[-40] ^= 1  # ciphertext byte

    def no_cipher(*args, **kwargs):
        raise AssertionError("AES was used although the MAC does not match")

    monkeypatch.setattr(ecies, "Cipher", no_cipher)
    with pytest.raises(DecryptionFailed, match="MAC"):
        ecies.decrypt(RECIPIENT, bytes(blob))


def _reframe(blob: bytes, x_field: bytes, y_field: bytes, key: keys.PrivateKey) -> bytes:
    """Rebuild a blob with other coordinate encodings and a MAC that is valid for ``key``."""
    parsed = ecies.parse_blob(blob)
    key_e, key_m = ecies.shared_keys(key.secret, parsed.point)
    body = blob[:18] + x_field + y_field + bytes(parsed.ciphertext)
    return body + ecies._mac(key_m, body)


def test_ecies_accepts_declared_coordinate_lengths():
    blob = ecies.encrypt(RECIPIENT.public_key, b"lengths")
    x, y = blob[20:52], blob[54:86]
    longer = _reframe(blob, b"\x00\x22" + b"\x00\x00" + x, b"\x00\x21\x00" + y, RECIPIENT)
    assert ecies.decrypt(RECIPIENT, longer) == b"lengths"
    # A longer field whose extra leading byte is not zero is not a 32-byte coordinate.
    with pytest.raises(DecryptionFailed, match="longer than 32"):
        ecies.parse_blob(blob[:18] + b"\x00\x21\x01" + x + blob[52:])
    # Declared lengths running past the end of the blob.
    for field in (b"\xff\xff", b"\x01\x00"):
        with pytest.raises(DecryptionFailed, match="truncated"):
            ecies.parse_blob(blob[:18] + field + blob[20:])
        with pytest.raises(DecryptionFailed, match="truncated"):
            ecies.parse_blob(blob[:52] + field + blob[54:])


@SETTINGS
@given(st.binary(min_size=0, max_size=400))
def test_ecies_garbage_blobs_give_only_decryption_failed(blob):
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(RECIPIENT, blob)


@SETTINGS
@given(st.binary(min_size=48, max_size=200))
def test_ecies_valid_point_garbage_rest(tail):
    # A real ephemeral point followed by random ciphertext/MAC: still only DecryptionFailed.
    head = os.urandom(16) + ecies.encode_point(OTHER.public_key.bytes65)
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(RECIPIENT, head + tail)


def test_ecies_wrong_types():
    for bad in (None, "blob", 123):
        with pytest.raises(DecryptionFailed):
            ecies.decrypt(RECIPIENT, bad)  # type: ignore[arg-type]


# --- signatures --------------------------------------------------------------------------------

SIGNER = keys.PrivateKey(hashlib.sha256(b"signer").digest())


@SETTINGS
@given(secrets_st, st.binary(max_size=200), st.sampled_from(["sha1", "sha256"]))
def test_sign_matches_pyca_rfc6979_and_verifies(secret, data, digest):
    pyca_hash = hashes.SHA1() if digest == "sha1" else hashes.SHA256()
    pyca_sig = _pyca_private(secret).sign(data, pyca_ec.ECDSA(pyca_hash, deterministic_signing=True))
    assert signatures.sign(secret, data, digest=digest, low_s=False) == pyca_sig
    ours = signatures.sign(secret, data, digest=digest)
    r, s = signatures.decode_der(ours)
    pr, ps = decode_dss_signature(pyca_sig)
    assert r == pr and s == min(ps, N - ps)
    pub = keys.public_key(secret)
    assert signatures.verify(pub, data, ours) and signatures.verify(pub, data, pyca_sig)
    assert signatures.verify(pub, data, ours, digests=(digest,))
    assert not signatures.verify(pub, data, ours, digests=("sha256" if digest == "sha1" else "sha1",))
    # High S is accepted (no low-S rule on the network).
    assert signatures.verify(pub, data, signatures.encode_der(r, N - s))
    assert not signatures.verify(pub, data + b"x", ours)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda sig: sig + b"\x00",  # trailing byte
        lambda sig: sig[:-1],  # truncated
        lambda sig: b"\x31" + sig[1:],  # not a SEQUENCE
        lambda sig: b"\x30\x81" + sig[1:],  # long-form length
        lambda sig: sig[:1] + bytes((sig[1] + 1,)) + sig[2:],  # length mismatch
        lambda sig: sig[:2] + b"\x03" + sig[3:],  # r not an INTEGER
        lambda sig: b"",
        lambda sig: b"\x30\x00",
    ],
)
def test_verify_rejects_non_der(mutate):
    data = b"payload"
    sig = signatures.sign(SIGNER, data)
    assert signatures.verify(SIGNER.public_key, data, sig)
    bad = mutate(sig)
    assert not signatures.verify(SIGNER.public_key, data, bad)
    with pytest.raises(CryptoError):
        signatures.decode_der(bad)


def test_verify_rejects_non_minimal_negative_and_out_of_range_integers():
    data = b"payload"
    r, s = signatures.decode_der(signatures.sign(SIGNER, data))
    pub = SIGNER.public_key

    def der(r_body: bytes, s_body: bytes) -> bytes:
        body = b"\x02" + bytes((len(r_body),)) + r_body + b"\x02" + bytes((len(s_body),)) + s_body
        return b"\x30" + bytes((len(body),)) + body

    r_min = signatures._der_int(r)[2:]
    s_min = signatures._der_int(s)[2:]
    assert signatures.verify(pub, data, der(r_min, s_min))
    assert not signatures.verify(pub, data, der(b"\x00" + r_min, s_min))  # superfluous zero
    assert not signatures.verify(pub, data, der(r_min, b"\x00\x00" + s_min.lstrip(b"\x00")))
    assert not signatures.verify(pub, data, der(b"\x80" + r_min, s_min))  # negative
    # r + n and s + n are the same residues but out of range: rejected like OpenSSL does.
    assert not signatures.verify(pub, data, signatures.encode_der(r + N, s))
    assert not signatures.verify(pub, data, signatures.encode_der(r, s + N))
    assert not signatures.verify(pub, data, signatures.encode_der(0, s))
    assert not signatures.verify(pub, data, signatures.encode_der(r, 0))


@SETTINGS
@given(st.binary(max_size=80))
def test_verify_never_raises_on_garbage(sig):
    assert signatures.verify(SIGNER.public_key, b"payload", sig) in (True, False)
    assert not signatures.verify(SIGNER.public_key, b"payload", sig)


def test_verify_bad_keys_and_types_return_false():
    sig = signatures.sign(SIGNER, b"m")
    assert not signatures.verify(b"\x04" + bytes(64), b"m", sig)
    assert not signatures.verify(b"short", b"m", sig)
    assert not signatures.verify(SIGNER.public_key, b"m", None)  # type: ignore[arg-type]
    assert not signatures.verify(keys.PrivateKey.random().public_key, b"m", sig)
    with pytest.raises(CryptoError):
        signatures.verify(SIGNER.public_key, b"m", sig, digests=("md5",))
    with pytest.raises(CryptoError):
        signatures.sign(SIGNER, b"m", digest="sha512")
    with pytest.raises(CryptoError):
        signatures.sign(bytes(32), b"m")


def test_rfc6979_nonce_known_answer():
    # The widely published secp256k1 RFC 6979 (SHA-256) case: key 1, message "Satoshi Nakamoto".
    one = (1).to_bytes(32, "big")
    k = signatures.rfc6979_nonce(one, hashlib.sha256(b"Satoshi Nakamoto").digest())
    assert k.hex() == "8f8a276c19f4149656b280621e358cce24f5f52542772691ee69063b74f15d15"
    r, _ = signatures.decode_der(signatures.sign(one, b"Satoshi Nakamoto"))
    assert r == int.from_bytes(keys.public_key(k)[1:33], "big")  # r = x(k·G)


# --- base58 ------------------------------------------------------------------------------------


@SETTINGS
@given(st.integers(min_value=0, max_value=2**600))
def test_base58_round_trip(n):
    s = base58.encode(n)
    assert base58.decode(s) == n
    assert n == 0 or not s.startswith("1")


def test_base58_long_input_matches_digitwise_value():
    s = "".join(base58.ALPHABET[(i * 7) % 58] for i in range(5000))
    n = 0
    for c in s:
        n = n * 58 + base58.ALPHABET.index(c)
    assert base58.decode(s) == n
    assert base58.decode("111" + base58.encode(12345)) == 12345  # leading 1s are zeros
    assert base58.decode("") == 0


@pytest.mark.parametrize("bad, offset", [("0", 0), ("abcO", 3), ("2l", 1), ("a b", 1), ("é", 0)])
def test_base58_invalid_characters(bad, offset):
    with pytest.raises(MalformedMessage) as info:
        base58.decode(bad)
    assert info.value.offset == offset


def test_base58_negative():
    with pytest.raises(ValueError):
        base58.encode(-1)


# --- addresses ---------------------------------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from([2, 3, 4]),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=16),
    st.integers(min_value=1, max_value=255),
    st.binary(min_size=20, max_size=20),
)
def test_address_round_trip(version, stream, zeros, first, raw):
    ripe = bytes(zeros) + bytes((first,)) + raw[zeros + 1 :]  # exactly `zeros` leading zero bytes
    text = addresses.encode_address(version, stream, ripe)
    assert text.startswith("BM-")
    assert addresses.decode_address(text) == ("success", version, stream, ripe)
    assert addresses.decode_address(text[3:]) == ("success", version, stream, ripe)
    assert addresses.parse_address(" " + text + "\n").encode() == text


def test_v4_ripe_with_more_than_16_zero_bytes_does_not_round_trip():
    # The reference's rule: a v4 address must carry at least 4 ripe bytes.
    text = addresses.encode_address(4, 1, bytes(17) + b"\x01\x02\x03")
    assert addresses.decode_address(text).status == "ripetooshort"


@SETTINGS
@given(st.text(max_size=60))
def test_decode_address_garbage_never_raises(text):
    result = addresses.decode_address(text)
    assert result.status in STATUSES
    if result.status != "success":
        assert tuple(result)[1:] == (0, 0, b"")
        with pytest.raises(InvalidAddress) as info:
            addresses.parse_address(text)
        assert info.value.status == result.status


@SETTINGS
@given(st.text(alphabet=base58.ALPHABET, min_size=1, max_size=60))
def test_decode_address_base58_garbage_never_raises(text):
    assert addresses.decode_address("BM-" + text).status in STATUSES


@SETTINGS
@given(st.binary(max_size=40))
def test_decode_address_of_arbitrary_checksummed_data(data):
    # Any payload with a valid checksum reaches the var_int and ripe rules without crashing.
    assume(data[:1] != b"\x00")
    result = addresses.decode_address(addresses.encode_address_data(data))
    assert result.status in STATUSES


def test_decode_address_non_string_inputs():
    good = addresses.encode_address(4, 1, b"\x00" + b"\x11" * 19)
    assert addresses.decode_address(good.encode()).ok  # bytes are read as ASCII
    assert addresses.decode_address(b"\xff\xfe").status == "invalidcharacters"
    assert addresses.decode_address(None).status == "invalidcharacters"  # type: ignore[arg-type]
    assert addresses.decode_address("BM-" + "1" * 40).status == "invalidcharacters"  # value 0


def test_decode_address_huge_input_is_rejected():
    assert addresses.decode_address("BM-" + "2" * 200_000).status == "checksumfailed"


@pytest.mark.parametrize(
    "version, stream, ripe, status",
    [
        (1, 1, b"\x11" * 20, "versiontoohigh"),
        (5, 1, b"\x11" * 20, "versiontoohigh"),
        (4, 0, b"\x11" * 20, "otherproblem"),
        (4, 2**64, b"\x11" * 20, "otherproblem"),
        (4, 1, b"\x11" * 19, "ripetooshort"),
        (3, 1, b"\x11" * 21, "ripetoolong"),
        (3, 1, "11" * 20, "ripetooshort"),
    ],
)
def test_encode_address_rejects(version, stream, ripe, status):
    with pytest.raises(InvalidAddress) as info:
        addresses.encode_address(version, stream, ripe)
    assert info.value.status == status


def test_decoded_address_accessors():
    text = addresses.encode_address(3, 1, b"\x00\x00" + b"\x22" * 18)
    decoded = addresses.decode_address(text)
    assert decoded.ok and decoded.address() == addresses.Address(3, 1, b"\x00\x00" + b"\x22" * 18)
    with pytest.raises(InvalidAddress):
        addresses.decode_address("BM-0").address()


# --- WIF ---------------------------------------------------------------------------------------


@SETTINGS
@given(secrets_st)
def test_wif_round_trip(secret):
    text = wif.encode_wif(secret)
    assert text[0] == "5"
    assert wif.decode_wif(text) == secret


def _wif_of_payload(payload: bytes) -> str:
    return base58.encode_bytes(payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4])


def test_wif_rejects():
    good = wif.encode_wif(b"\x42" * 32)
    altered = good[:-1] + ("2" if good[-1] != "2" else "3")
    cases = [
        altered,  # checksum
        good + "0",  # bad character
        "",
        _wif_of_payload(b"\x81" + b"\x42" * 32),  # prefix
        _wif_of_payload(b"\x80" + b"\x42" * 31),  # length
        _wif_of_payload(b"\x80" + b"\x42" * 32 + b"\x01"),  # compressed-key flag: not Bitmessage
        _wif_of_payload(b"\x80" + N.to_bytes(32, "big")),  # out of range
        _wif_of_payload(b"\x80" + bytes(32)),  # zero
    ]
    for text in cases:
        with pytest.raises(CryptoError):
            wif.decode_wif(text)
    with pytest.raises(CryptoError):
        wif.decode_wif(None)  # type: ignore[arg-type]
    with pytest.raises(CryptoError):
        wif.encode_wif(bytes(32))


# --- derived keys ------------------------------------------------------------------------------


def test_derived_rejects_short_ripe():
    with pytest.raises(InvalidAddress):
        derived.tag(4, 1, b"\x11" * 19)


def test_derived_v4_key_is_double_sha512():
    ripe = b"\x00" + b"\x33" * 19
    data = b"\x04\x01" + ripe
    d = hashlib.sha512(hashlib.sha512(data).digest()).digest()
    assert derived.address_key_and_tag(4, 1, ripe) == (d[:32], d[32:])
    assert derived.broadcast_private_key(3, 1, ripe) == hashlib.sha512(b"\x03\x01" + ripe).digest()[:32]


# --- generation --------------------------------------------------------------------------------


def test_random_address():
    g = generation.random_address()
    assert g.ripe[0] == 0 and g.version == 4 and g.stream == 1
    assert keys.public_key(g.priv_signing_key) == g.pub_signing_key
    assert keys.public_key(g.priv_encryption_key) == g.pub_encryption_key
    assert ripe_of(g.pub_signing_key, g.pub_encryption_key) == g.ripe
    assert addresses.parse_address(g.address) == g.as_address()
    assert g.signing_nonce is None and g.attempts >= 1
    assert generation.random_address().address != g.address


def test_random_address_other_parameters():
    g = generation.random_address(version=3, stream=2, leading_zero_bytes=0)
    assert addresses.parse_address(g.address) == addresses.Address(3, 2, g.ripe)


def test_deterministic_nonce_sequence_continues():
    three = generation.deterministic_addresses("continuation test", 3)
    two = generation.deterministic_addresses(b"continuation test", 2)
    assert [g.address for g in two] == [g.address for g in three[:2]]
    assert len({g.address for g in three}) == 3
    for earlier, later in zip(three, three[1:]):
        assert later.signing_nonce == earlier.signing_nonce + 2 * later.attempts
        assert later.encryption_nonce == later.signing_nonce + 1
    assert three[0].signing_nonce == 2 * (three[0].attempts - 1)
    # v3 and v4 share the keys; only the encoding differs.
    v3 = generation.deterministic_addresses("continuation test", 1, version=3)[0]
    assert (v3.ripe, v3.priv_signing_key) == (three[0].ripe, three[0].priv_signing_key)
    assert v3.address != three[0].address


def test_generation_cancel_and_bad_parameters():
    with pytest.raises(CryptoError):
        generation.deterministic_addresses("x", leading_zero_bytes=3, cancel=lambda: True)
    with pytest.raises(CryptoError):
        generation.random_address(leading_zero_bytes=3, cancel=lambda: True)
    with pytest.raises(InvalidAddress):
        generation.deterministic_addresses("x", version=2)
    with pytest.raises(InvalidAddress):
        generation.random_address(stream=0)
    with pytest.raises(ValueError):
        generation.deterministic_addresses("x", 0)


def test_join_chan_with_v3_address_and_garbage():
    v3 = generation.chan_address("old chan", version=3)
    assert generation.join_chan("old chan", v3.address).address == v3.address
    with pytest.raises(InvalidAddress) as info:
        generation.join_chan("old chan", "BM-garbage0")
    assert info.value.status == "invalidcharacters"


def test_all_crypto_errors_are_bmnode_errors():
    for cls in (CryptoError, DecryptionFailed, InvalidAddress, MalformedMessage):
        assert issubclass(cls, BmnodeError)


def test_hashing_falls_back_to_pure_ripemd160(monkeypatch):
    from bmnode.protocol import hashing

    def no_ripemd(name, *args, **kwargs):
        raise ValueError(f"unsupported hash type {name}")

    monkeypatch.setattr(hashing.hashlib, "new", no_ripemd)
    impl = hashing._ripemd160_impl()
    assert impl is _ripemd160.ripemd160
    assert impl(hashlib.sha512(b"hello").digest()).hex() == "79a324faeebcbf9849f310545ed531556882487e"
