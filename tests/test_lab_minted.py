"""The lab mints the keys pulumi_random would: random, in the resource's shape,
kept across renders, read by the pods over the render's placeholder."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path
from typing import Any

from conftest import cached, lab_value, settings_of, stack_raw, with_overrides

from components.edge_pod import COOKIE_SECRET, HANDOFF_SECRET, TICKET_SECRET
from halb.lab.journal import Journal
from halb.lab.minted import mint_all, minted_path
from halb.lab.pods import Pods
from halb.lab.topology import plan_lab
from halb.mockrun import run_program
from halb.render import manifests
from halb.stackfile import REDACTED

S = lab_value("services")


@cached
def _docs() -> list[dict[str, Any]]:
    """The lab stack with a TLS service: every minted Secret rendered."""
    services = [{**S[0], "tls": {"issuer": "lab-ca"}}, *S[1:]]
    return manifests(run_program(with_overrides(stack_raw("lab"), services=services), "lab"))


def _minted(lab_dir: Path, name: str) -> dict[str, str]:
    return dict(json.loads(minted_path(lab_dir, name).read_text())["stringData"])


def test_the_render_holds_only_the_placeholder_which_the_lab_replaces(tmp_path: Path) -> None:
    docs = _docs()
    rendered_values = {
        d["metadata"]["name"]: d["stringData"]
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] in (TICKET_SECRET, COOKIE_SECRET, HANDOFF_SECRET)
    }
    assert rendered_values == {
        TICKET_SECRET: {"secret": REDACTED},
        COOKIE_SECRET: {"key": REDACTED},
        HANDOFF_SECRET: {"key": REDACTED},
    }
    assert sorted(mint_all(tmp_path, docs)) == sorted(rendered_values)
    tickets = base64.b64decode(_minted(tmp_path, TICKET_SECRET)["secret"], validate=True)
    assert len(tickets) == 48  # RandomBytes(length=48)
    for name, chars in ((COOKIE_SECRET, 32), (HANDOFF_SECRET, 43)):  # RandomPassword(special=False)
        assert re.fullmatch(rf"[A-Za-z0-9]{{{chars}}}", _minted(tmp_path, name)["key"])
    assert stat.S_IMODE((tmp_path / "objects").stat().st_mode) == 0o700
    kept = json.loads(minted_path(tmp_path, HANDOFF_SECRET).read_text())
    original = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == HANDOFF_SECRET)
    assert kept["metadata"] == original["metadata"]


def test_two_labs_never_share_a_key(tmp_path: Path) -> None:
    mint_all(tmp_path / "a", _docs())
    mint_all(tmp_path / "b", _docs())
    for name, key in ((TICKET_SECRET, "secret"), (COOKIE_SECRET, "key"), (HANDOFF_SECRET, "key")):
        assert _minted(tmp_path / "a", name)[key] != _minted(tmp_path / "b", name)[key]


def test_a_key_outlives_a_new_render_as_in_pulumi_state(tmp_path: Path) -> None:
    mint_all(tmp_path, _docs())
    before = _minted(tmp_path, HANDOFF_SECRET)
    assert mint_all(tmp_path, _docs()) == []
    assert _minted(tmp_path, HANDOFF_SECRET) == before


def test_the_pods_read_the_minted_key_not_the_placeholder(tmp_path: Path) -> None:
    plan = plan_lab(settings_of("lab"), "tmint")
    (tmp_path / "render").mkdir()
    (tmp_path / "render" / "manifests.yaml").write_text(
        "\n---\n".join(json.dumps(d) for d in _docs())  # JSON is YAML
    )
    pods = Pods(plan, tmp_path, Journal(tmp_path / "journal.jsonl"))
    assert pods.objects()[("Secret", HANDOFF_SECRET)]["stringData"] == {"key": REDACTED}
    mint_all(tmp_path, pods.manifests())
    served = pods.objects()[("Secret", HANDOFF_SECRET)]["stringData"]
    assert served == _minted(tmp_path, HANDOFF_SECRET) and served["key"] != REDACTED
