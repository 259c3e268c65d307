"""Package signatures: who made a package, and that nothing in it changed since.

``signature.json`` beside ``metadata.json`` holds a signature over the statement
``diffdefect-edge-package-signature-v1\\n<sha256 of metadata.json>``. metadata.json lists the size and sha256 of
every file and :func:`~diffdefect_edge.package.load_package` checks each one, so the signature covers the whole
package: a changed model file, class name or threshold breaks it. Keys are PEM files as ``openssl`` makes them
(ECDSA P-256 / P-384 / P-521, Ed25519). Needs the ``sign`` extra (``cryptography``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATEMENT = b"diffdefect-edge-package-signature-v1\n"
SIGNATURE_FORMAT = "diffdefect-edge-signature"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    except ImportError:
        from diffdefect_edge.package import PackageError

        raise PackageError("signing", "signatures need the 'sign' extra: pip install 'diffdefect-edge[sign]'") \
            from None
    return hashes, serialization, ec, ed25519


def _pem(source: str | Path | bytes, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        from diffdefect_edge.package import PackageError

        raise PackageError(source, f"cannot read the {what} ({exc.strerror})") from None


def key_id(public_key: Any) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: the key's name in signature.json."""
    _, serialization, _, _ = _crypto()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _statement(metadata_bytes: bytes) -> bytes:
    return STATEMENT + hashlib.sha256(metadata_bytes).hexdigest().encode()


def load_private_key(source: str | Path | bytes) -> Any:
    from diffdefect_edge.package import PackageError

    _, serialization, ec, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(_pem(source, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise PackageError(source if not isinstance(source, bytes) else "key", f"not an unencrypted PEM private "
                                                                              f"key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise PackageError(source if not isinstance(source, bytes) else "key",
                           f"{type(key).__name__} keys are not supported (ECDSA or Ed25519)")
    return key


def load_public_key(source: str | Path | bytes) -> Any:
    from diffdefect_edge.package import PackageError

    _, serialization, ec, ed25519 = _crypto()
    data = _pem(source, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:  # a private key file is accepted as the source of its public key
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise PackageError(source if not isinstance(source, bytes) else "key", f"not a PEM public key ({exc})") \
                from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise PackageError(source if not isinstance(source, bytes) else "key",
                           f"{type(key).__name__} keys are not supported (ECDSA or Ed25519)")
    return key


def _sign(key: Any, message: bytes) -> tuple[str, bytes]:
    hashes, _, ec, _ = _crypto()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ecdsa-{key.curve.name}-sha256", key.sign(message, ec.ECDSA(hashes.SHA256()))
    return "ed25519", key.sign(message)


def _verifies(key: Any, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    hashes, _, ec, _ = _crypto()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def sign_package(path: str | Path, private_key: str | Path | bytes) -> Path:
    """Write (or replace) ``signature.json`` of the package at ``path``; returns its path."""
    from diffdefect_edge.package import METADATA_FILE, SIGNATURE_FILE, load_package, read_package_file

    path = Path(path)
    load_package(path)  # only a valid, intact package is signed
    key = load_private_key(private_key)
    algorithm, signature = _sign(key, _statement(read_package_file(path, METADATA_FILE)))
    doc = {"format": SIGNATURE_FORMAT, "version": 1, "algorithm": algorithm, "key_id": key_id(key.public_key()),
           "signature": base64.b64encode(signature).decode()}
    tmp = path / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path / SIGNATURE_FILE)
    return path / SIGNATURE_FILE


def verify_signature(path: Path, metadata_bytes: bytes, trusted_keys: Sequence[str | Path | bytes]) -> str:
    """The id of the trusted key that signed ``metadata_bytes``; :class:`PackageError` when none did."""
    from diffdefect_edge.package import SIGNATURE_FILE, PackageError, read_package_file

    if isinstance(trusted_keys, (str, Path, bytes)):
        trusted_keys = [trusted_keys]
    keys = [load_public_key(k) for k in trusted_keys]
    if not keys:
        raise PackageError(path, "trusted_keys is empty: no package could be accepted")
    if not (path / SIGNATURE_FILE).exists() and not (path / SIGNATURE_FILE).is_symlink():
        raise PackageError(path, f"is not signed (no {SIGNATURE_FILE}) and trusted keys were given")
    try:
        doc = json.loads(read_package_file(path, SIGNATURE_FILE)[:65536])
        signature = base64.b64decode(doc["signature"], validate=True)
        if doc.get("format") != SIGNATURE_FORMAT:
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise PackageError(path, f"{SIGNATURE_FILE}: not a diffdefect-edge signature ({exc!s:.80})") from None
    message = _statement(metadata_bytes)
    for key in keys:
        if _verifies(key, signature, message):
            return key_id(key)
    raise PackageError(path, "signature does not verify with any trusted key: the package was changed after "
                             "signing, or signed by another key")
