"""The lab's cert-manager stand-in: a CA of the lab's own issues every TLS Secret.

In a cluster the certificates' Secrets come from cert-manager (`issuer`) or
from the user (`secretName`). In the lab, `lab up` makes a root CA and an
intermediate under the lab's directory (`tls/`; `lab status --json` names
the root as `tls_ca`) and issues each Secret the stack's TLS services name,
for the service's hostnames: `tls.crt` is the leaf and the intermediate with
a blank line between the blocks (as cert-manager writes them), `tls.key`
the key, `ca.crt` the root. `lab renew SERVICE` issues the service's again
(a new key, a new serial) and hands it to the kubelets, as a renewal by
cert-manager would reach the API server. Keys: each `issuer` Secret has its
Certificate's algorithm; a `secretName` Secret is ECDSA P-256, each of its
`additionalSecretNames` RSA-2048 (the lab's choice: an existing Secret's key
type is the user's).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.settings import Service, Settings
from components.settings.tls import KEY_SIZES, KeyAlgorithm, certificate_secrets
from halb.lab.base import LabError, LabInputError, write_text_atomic

DAYS = 7


@dataclass(frozen=True)
class Issued:
    secret: str
    service: str
    algorithm: KeyAlgorithm
    names: tuple[str, ...]


def wanted(s: Settings) -> list[Issued]:
    """Every Secret the stack's TLS services name, with what the lab issues into it."""
    out: list[Issued] = []
    for svc in s.tls_services:
        assert svc.tls is not None
        names = svc.hostnames or (f"{svc.name}.lab.invalid",)
        secrets = certificate_secrets(svc.name, svc.tls)
        algs: list[KeyAlgorithm] = list(svc.tls.key_algorithms)
        if svc.tls.issuer is None:
            rsa: list[KeyAlgorithm] = ["RSA"] * (len(secrets) - 1)
            algs = ["ECDSA", *rsa]
        out += [Issued(name, svc.name, alg, names) for name, alg in zip(secrets, algs, strict=True)]
    return out


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise LabError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()[-300:]}")


def _key(path: Path, algorithm: KeyAlgorithm, cwd: Path) -> None:
    if algorithm == "ECDSA":
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=cwd
        )
    else:
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{KEY_SIZES['RSA']}",
                 "-out", str(path), cwd=cwd)  # fmt: skip


class LabCA:
    """The lab's root and intermediate CA, and the Secrets they issued."""

    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir / "tls"
        self.objects = lab_dir / "objects"

    @property
    def root(self) -> Path:
        return self.dir / "ca.crt"

    def ensure(self) -> None:
        if self.root.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        _key(self.dir / "ca.key", "ECDSA", self.dir)
        _openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt.tmp", "-days", str(DAYS),
                 "-subj", "/CN=rancher-ha-lb lab root CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)  # fmt: skip
        _key(self.dir / "int.key", "ECDSA", self.dir)
        _openssl("req", "-new", "-key", "int.key", "-out", "int.csr",
                 "-subj", "/CN=rancher-ha-lb lab intermediate", cwd=self.dir)  # fmt: skip
        (self.dir / "int.ext").write_text(
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
        )
        _openssl("x509", "-req", "-in", "int.csr", "-CA", "ca.crt.tmp", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "int.crt", "-days", str(DAYS), "-extfile", "int.ext", cwd=self.dir)  # fmt: skip
        (self.dir / "ca.crt.tmp").rename(self.root)  # last: a half-made CA is made again

    def issue(self, item: Issued) -> dict[str, Any]:
        """A kubernetes.io/tls Secret for `item`: a new key and serial every time."""
        self.ensure()
        work = self.dir / "issue"
        work.mkdir(exist_ok=True)
        _key(work / "leaf.key", item.algorithm, work)
        _openssl(
            "req", "-new", "-key", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={item.names[0]}", cwd=work
        )
        usage = "digitalSignature" + (",keyEncipherment" if item.algorithm == "RSA" else "")
        (work / "leaf.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            f"keyUsage=critical,{usage}\nextendedKeyUsage=serverAuth\n"
            "subjectAltName=" + ",".join(f"DNS:{n}" for n in item.names) + "\n"
        )
        _openssl("x509", "-req", "-in", "leaf.csr", "-CA", str(self.dir / "int.crt"), "-CAkey",
                 str(self.dir / "int.key"), "-set_serial", str(int.from_bytes(os.urandom(16), "big")),
                 "-out", "leaf.crt", "-days", str(DAYS), "-extfile", "leaf.ext", cwd=work)  # fmt: skip
        chain = (work / "leaf.crt").read_text() + "\n" + (self.dir / "int.crt").read_text()
        data = {"tls.crt": chain, "tls.key": (work / "leaf.key").read_text(), "ca.crt": self.root.read_text()}
        for f in ("leaf.key", "leaf.csr", "leaf.crt", "leaf.ext"):
            (work / f).unlink(missing_ok=True)
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": item.secret, "annotations": {"halb.lab/issued-for": item.service}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def store(self, doc: dict[str, Any]) -> None:
        """The Secret as the API server would now hold it (the pods' kubelets read it)."""
        self.objects.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.objects / f"Secret.{doc['metadata']['name']}.json", json.dumps(doc))

    def issue_all(self, s: Settings) -> list[str]:
        """Every Secret the stack needs that the lab does not hold yet."""
        made = []
        for item in wanted(s):
            if not (self.objects / f"Secret.{item.secret}.json").exists():
                self.store(self.issue(item))
                made.append(item.secret)
        return made

    def renew(self, s: Settings, service: str) -> list[str]:
        """The service's Secrets issued again; their names."""
        svc: Service | None = next((x for x in s.tls_services if x.name == service), None)
        if svc is None:
            names = ", ".join(x.name for x in s.tls_services) or "none"
            raise LabInputError(f"{service}: not a TLS service of this lab (TLS services: {names})")
        items = [i for i in wanted(s) if i.service == service]
        for item in items:
            self.store(self.issue(item))
        return [i.secret for i in items]


def lab_objects(lab_dir: Path) -> list[dict[str, Any]]:
    """The objects the lab's stand-ins made (the issued Secrets)."""
    folder = lab_dir / "objects"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
