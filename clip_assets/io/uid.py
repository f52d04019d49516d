"""Sample identity.

* content uid: ``sha256(image bytes + b"\\0" + caption utf-8)[:128 bits]`` as 32 hex chars (:func:`compute_uid`);
  stored as ``content_uid`` and used to find the same pair twice in a drop.
* uid: the sample's own uid when it carries one (DataComp pools put a 32-hex-char ``"uid"`` in every
  ``{key}.json`` and in the metadata/sidecar parquet), so DataComp's resharder can select an exported subset
  from the user's pool; otherwise the content uid (:func:`carried_uid` decides).
"""

from __future__ import annotations

import hashlib
import re

UID_RE = re.compile(r"^[0-9a-f]{32}$")


def compute_uid(image_bytes: bytes, caption: str) -> str:
    """First 128 bits (32 lowercase hex chars) of sha256(image bytes + NUL + caption encoded as UTF-8)."""
    return hashlib.sha256(image_bytes + b"\0" + caption.encode("utf-8")).hexdigest()[:32]


def carried_uid(json_uid: object, sidecar_uid: object) -> tuple[str | None, tuple[str, str] | None]:
    """The uid a sample carries in its json and/or sidecar row, lower-cased: ``(uid or None, problem or None)``.

    Problems: ``bad_uid`` (present but not 32 hex characters), ``uid_mismatch`` (json and sidecar disagree).
    ``(None, None)`` when neither carries one (then the content uid is the sample's uid).
    """
    found = []
    for where, value in (("json", json_uid), ("sidecar", sidecar_uid)):
        if value is None or value == "":
            continue
        uid = value.lower() if isinstance(value, str) else None
        if uid is None or not UID_RE.match(uid):
            return None, ("bad_uid", f"{where} uid {value!r} is not 32 hex characters")
        found.append((where, uid))
    if not found:
        return None, None
    if len({u for _, u in found}) > 1:
        return None, ("uid_mismatch", f"json uid {found[0][1]} != sidecar uid {found[1][1]}")
    return found[0][1], None


def uid_to_u64_pair(uid: str) -> tuple[int, int]:
    """Split a 32-hex-char uid into its high and low unsigned 64-bit halves (DataComp's "u8,u8" layout)."""
    if len(uid) != 32:
        raise ValueError(f"uid must be 32 hex characters, got {uid!r}")
    return int(uid[:16], 16), int(uid[16:], 16)
