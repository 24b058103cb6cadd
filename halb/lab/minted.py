"""The lab's pulumi_random: the keys `pulumi up` mints, minted once per lab.

The render writes the minted Secrets (TLS ticket seed, sticky-cookie key,
handoff key) with the mocks' `REDACTED` placeholder. A lab that ran on that
would authenticate handoffs under a key everyone knows. So the lab mints
them as pulumi_random does: random bytes of the same shape, made once and
kept (pulumi keeps them in state), the same for every host. They live
beside the CA's issued Secrets in the lab's `objects/`, which the pods'
kubelets read over the rendered ones.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from components.edge_pod import (
    COOKIE_SECRET,
    COOKIE_SECRET_CHARS,
    HANDOFF_SECRET,
    HANDOFF_SECRET_CHARS,
    TICKET_SECRET,
)
from components.tls import TICKET_SECRET_BYTES
from halb.lab.base import write_text_atomic
from halb.render import MINTED_SECRETS

# RandomPassword(special=False): upper, lower and digits.
_ALPHANUMERIC = string.ascii_letters + string.digits


def _password(chars: int) -> Callable[[], str]:
    return lambda: "".join(secrets.choice(_ALPHANUMERIC) for _ in range(chars))


# Each minted Secret's value, in the shape its pulumi_random resource gives.
MINTERS: dict[str, Callable[[], str]] = {
    # RandomBytes(length=48).base64
    TICKET_SECRET: lambda: base64.b64encode(secrets.token_bytes(TICKET_SECRET_BYTES)).decode(),
    COOKIE_SECRET: _password(COOKIE_SECRET_CHARS),
    HANDOFF_SECRET: _password(HANDOFF_SECRET_CHARS),
}
assert set(MINTERS) == MINTED_SECRETS, "a minted Secret the lab cannot mint"


def minted_path(lab_dir: Path, name: str) -> Path:
    return lab_dir / "objects" / f"Secret.{name}.json"


def mint_all(lab_dir: Path, manifests: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every minted Secret the rendered stack has and the lab does not hold yet,
    minted and stored (in a folder only root reads); their names. A Secret kept from an earlier
    render keeps its value, as pulumi state keeps a RandomPassword's."""
    made = []
    for doc in manifests:
        name = doc.get("metadata", {}).get("name")
        if doc.get("kind") != "Secret" or name not in MINTERS:
            continue
        path = minted_path(lab_dir, name)
        keys = sorted((doc.get("stringData") or {}).keys())
        if path.exists() and sorted(json.loads(path.read_text()).get("stringData", {})) == keys:
            continue
        kept = {k: v for k, v in doc.items() if k not in ("stringData", "data")}
        minted = {**kept, "stringData": {k: MINTERS[name]() for k in keys}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)  # the kubelets (root) read it; no one else
        write_text_atomic(path, json.dumps(minted))
        made.append(name)
    return made
