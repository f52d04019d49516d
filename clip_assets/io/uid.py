"""Sample identity: ``uid = sha256(image bytes + b"\\0" + caption utf-8)[:128 bits]`` as 32 hex chars."""

from __future__ import annotations

import hashlib


def compute_uid(image_bytes: bytes, caption: str) -> str:
    """First 128 bits (32 lowercase hex chars) of sha256(image bytes + NUL + caption encoded as UTF-8)."""
    return hashlib.sha256(image_bytes + b"\0" + caption.encode("utf-8")).hexdigest()[:32]


def uid_to_u64_pair(uid: str) -> tuple[int, int]:
    """Split a 32-hex-char uid into its high and low unsigned 64-bit halves (DataComp's "u8,u8" layout)."""
    if len(uid) != 32:
        raise ValueError(f"uid must be 32 hex characters, got {uid!r}")
    return int(uid[:16], 16), int(uid[16:], 16)
