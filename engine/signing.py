"""Signed bundles: an ed25519 signature over the bundle's manifest, checked against trusted keys.

bundle.json's integrity hash only finds damage: anyone who can write the bundle directory can edit
the file (a threshold that never alarms) and compute the hash again. A signature needs the private
key. ``ganomaly-build-engine ... --sign-key KEY.pem`` writes ``bundle.json.sig`` beside the manifest;
the manifest records the sha256 of the model, the reference outputs and every TensorRT plan, so the
signature covers all of them. With ``[model] trusted_keys`` set, the agent loads only bundles signed
by one of those public keys; without it nothing changes.

Anything that rewrites bundle.json (a TensorRT plan built on the device) leaves the old signature
behind, which then no longer matches: sign again with the same ``--sign-key``.

``cryptography`` is imported only here and only when a signature is made or checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from .errors import EngineError

SIGNATURE = "bundle.json.sig"
ALGORITHM = "ed25519"


class UntrustedBundle(EngineError, ValueError):
    """A bundle whose signature model.trusted_keys does not accept; the message says why and the fix."""


class SigningError(EngineError, RuntimeError):
    """A key cannot be read or made; the message names the file and the fix."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # a core dependency; a broken install says so
        raise SigningError(f"signed bundles need the 'cryptography' package ({e}): pip install cryptography") from e
    return serialization, ed25519


def key_id(public_key) -> str:
    """A short, stable name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key(path: str, what: str, hint: str = "") -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SigningError(f"cannot read the {what} {path}: {e.strerror or e}{hint}") from e


def load_public_key(path: str):
    serialization, ed25519 = _crypto()
    data = _read_key(path, "public key", " (check model.trusted_keys)")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            key = None
        if key is not None:
            raise SigningError(f"{path} is a private key: model.trusted_keys takes the public one (.pub); keep "
                               "the private key off the device's config") from None
        raise SigningError(f"{path} is not a PEM public key (make a key pair with 'ganomaly-build-engine "
                           "--new-signing-key KEY.pem')") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningError(f"{path} is not an ed25519 public key ({type(key).__name__})")
    return key


def load_private_key(path: str):
    serialization, ed25519 = _crypto()
    data = _read_key(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path} is not an unencrypted PEM private key ({e}); make one with "
                           "'ganomaly-build-engine --new-signing-key KEY.pem'") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path} is not an ed25519 private key ({type(key).__name__})")
    return key


def public_path(private_path: str) -> str:
    """KEY.pem -> KEY.pub (the public half, beside it)."""
    root, ext = os.path.splitext(private_path)
    return (root if ext in (".pem", ".key") else private_path) + ".pub"


def generate_key_pair(private_path: str) -> tuple[str, str]:
    """A new ed25519 key pair: the private key 0600 at ``private_path``, the public one (0644)
    beside it (``public_path``). Refuses to overwrite either."""
    serialization, ed25519 = _crypto()
    pub_path = public_path(private_path)
    for p in (private_path, pub_path):
        if os.path.exists(p):
            raise SigningError(f"{p} exists: a new key would orphan every bundle signed with the old one; "
                               "remove it first if that is what you want")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    with open(pub_path, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(pub_path, 0o644)
    return private_path, pub_path


def sign_bundle(bundle_dir: str, private_key_path: str) -> str:
    """Sign the bundle's manifest (bundle.json as it is on disk); returns the key's id."""
    key = load_private_key(private_key_path)
    with open(os.path.join(bundle_dir, "bundle.json"), "rb") as f:
        manifest = f.read()
    kid = key_id(key.public_key())
    sig = {"algorithm": ALGORITHM, "key_id": kid, "signature": base64.b64encode(key.sign(manifest)).decode(),
           "manifest_sha256": hashlib.sha256(manifest).hexdigest()}  # tells a stale signature without a key
    tmp = os.path.join(bundle_dir, SIGNATURE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(sig, f, indent=2)
    os.replace(tmp, os.path.join(bundle_dir, SIGNATURE))
    return kid


def stale_signature(bundle_dir: str) -> bool:
    """Whether the bundle has a signature made over another bundle.json than the one it has now."""
    try:
        with open(os.path.join(bundle_dir, SIGNATURE)) as f:
            signed = json.load(f).get("manifest_sha256")
        with open(os.path.join(bundle_dir, "bundle.json"), "rb") as f:
            now = hashlib.sha256(f.read()).hexdigest()
    except (OSError, ValueError, AttributeError):
        return os.path.exists(os.path.join(bundle_dir, SIGNATURE))
    return signed != now


def verify_manifest(manifest: bytes, sig_path: str, trusted_keys: list[str], where: str) -> str:
    """The id of the trusted key that signed ``manifest``; ValueError saying why not otherwise
    (no signature, another key, a manifest changed after signing)."""
    from cryptography.exceptions import InvalidSignature

    keys = {}
    for path in trusted_keys:
        keys.setdefault(key_id(load_public_key(path)), (path, load_public_key(path)))
    trusted = ", ".join(f"{p} (key {k})" for k, (p, _) in keys.items())
    if not os.path.exists(sig_path):
        raise UntrustedBundle(f"bundle {where} is not signed, and model.trusted_keys accepts only bundles signed by "
                              f"{trusted}: sign it where the private key is kept, with 'ganomaly-build-engine "
                              f"BUNDLE --out BUNDLE --sign-key KEY.pem'")
    try:
        with open(sig_path) as f:
            sig = json.load(f)
        kid, signature = str(sig["key_id"]), base64.b64decode(sig["signature"], validate=True)
        if sig.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {sig.get('algorithm')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UntrustedBundle(f"bundle {where}: {SIGNATURE} is unreadable ({e}): copy the bundle again or sign it "
                              "again") from None
    if kid not in keys:
        raise UntrustedBundle(f"bundle {where} is signed by key {kid}, which is not trusted here: model.trusted_keys "
                              f"holds {trusted}. Sign it with one of those keys, or add that key's public half to "
                              "model.trusted_keys if you trust whoever holds it")
    path, public = keys[kid]
    try:
        public.verify(signature, manifest)
    except InvalidSignature:
        raise UntrustedBundle(f"bundle {where}: bundle.json does not match its signature by key {kid} ({path}): it "
                              "was changed after it was signed (edited, or a TensorRT plan was added: sign it again "
                              "with 'ganomaly-build-engine BUNDLE --out BUNDLE --sign-key KEY.pem')") from None
    return kid
