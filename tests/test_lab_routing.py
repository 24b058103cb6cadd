"""Issue 21 in the lab, on the shipped images and rendered pods: path rules
route, a tcpPort answers over the VIP and fails over, allowFrom refuses the
client's outside address and admits its inside one, and websockets stay open
across `lab apply` (a new hostname) and across `lab handoff`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import fresh, lab_settled, lab_value, running_lab, stack_raw, with_overrides

from components.settings import parse_settings
from halb.bench.changes import NEW_HOSTNAME, changed
from halb.lab.apply import apply
from halb.lab.base import in_ns, run, wait_until
from halb.lab.faults import inject
from halb.lab.handoff import handoff
from halb.lab.held import held
from halb.lab.lab import Lab
from halb.lab.topology import plan_lab

pytestmark = pytest.mark.netns

TCP_PORT = 7000
# Wide enough that a websocket begun on the old MASTER is still served there
# well after the VIP moved (the window the handoff test holds it in).
DRAIN_S = 20


def stack() -> Any:
    """The lab stack plus an /api path service open to the client's first address only,
    and a TCP-only echo service on the VIP."""
    base = stack_raw("lab")
    shop, blog = lab_value("services")
    api = {"name": "api", "image": "ghcr.io/example/api:1", "port": 8083, "replicas": 2,
           "hostnames": ["shop.lab.invalid"], "paths": ["/api"], "healthPath": "/healthz"}  # fmt: skip
    echo = {
        "name": "echo",
        "image": "ghcr.io/example/echo:1",
        "port": 8084,
        "replicas": 2,
        "tcpPort": TCP_PORT,
    }
    raw = with_overrides(base, services=[shop, blog, api, echo], vrrp={"handoff": {"drainSeconds": DRAIN_S}})
    inside = plan_lab(parse_settings(raw)).client_address  # allowFrom plans no address: the same plan
    api["allowFrom"] = [f"{inside}/32"]
    return with_overrides(raw, services=[shop, blog, api, echo])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(stack()) as the_lab:
        yield the_lab


def curl(lab: Lab, host: str, path: str, source: str | None = None) -> tuple[str, str]:
    """(status, body) of one request to the VIP from the client namespace."""
    src = ["--interface", source] if source else []
    url = f"http://{lab.plan.vip}:{lab.plan.settings.load_balancer.http_port}{path}"
    out = run(in_ns(lab.plan.client_netns, "curl", "-s", "--max-time", "2", *src, "-H", f"Host: {host}",
                    "-w", "\n%{http_code}", url), check=False).stdout  # fmt: skip
    body, _, code = out.rpartition("\n")
    return code, body


def service_of(body: str) -> str:
    return next((w.split("=", 1)[1] for w in body.split() if w.startswith("service=")), body)


def tcp_hello(lab: Lab) -> str:
    """The echo service's greeting and one echoed line over the VIP's tcpPort, or the error."""
    script = (
        "import socket\n"
        "try:\n"
        f"    c = socket.create_connection(('{lab.plan.vip}', {TCP_PORT}), timeout=1)\n"
        "    c.sendall(b'ping\\n'); buf = b''\n"
        "    while buf.count(b'\\n') < 2 and (chunk := c.recv(200)):\n"
        "        buf += chunk\n"
        "    print(buf.decode(), end='')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    import sys

    return run(in_ns(lab.plan.client_netns, sys.executable, "-c", script), check=False).stdout


@pytest.fixture
def steady(lab: Lab) -> Iterator[Lab]:
    assert wait_until(lambda: lab_settled(fresh(lab)), 60, poll=0.2), lab.status()
    yield fresh(lab)
    inject(fresh(lab), "restore", None)
    assert wait_until(lambda: lab_settled(fresh(lab)), 60, poll=0.2), lab.status()


def test_paths_route_by_host_and_longest_prefix(steady: Lab) -> None:
    inside = str(steady.plan.client_address)
    assert wait_until(lambda: service_of(curl(steady, "shop.lab.invalid", "/api/v1", inside)[1]) == "api", 20)
    assert service_of(curl(steady, "shop.lab.invalid", "/api", inside)[1]) == "api"
    assert service_of(curl(steady, "shop.lab.invalid", "/apis", inside)[1]) == "shop"
    assert service_of(curl(steady, "shop.lab.invalid", "/", inside)[1]) == "shop"
    assert (
        service_of(curl(steady, "blog.lab.invalid", "/api", inside)[1]) == "blog"
    )  # the rule is shop's host's
    assert "path=/api/v1" in curl(steady, "shop.lab.invalid", "/api/v1", inside)[1]


def test_allow_from_refuses_the_outside_address_and_admits_the_inside_one(steady: Lab) -> None:
    inside, outside = str(steady.plan.client_address), str(steady.plan.client_other_address)
    assert curl(steady, "shop.lab.invalid", "/api/x", inside)[0] == "200"
    code, body = curl(steady, "shop.lab.invalid", "/api/x", outside)
    assert code == "403" and "service=" not in body
    # A forged header changes nothing: HAProxy judges the TCP peer.
    src = ["--interface", outside, "-H", f"X-Forwarded-For: {inside}"]
    url = f"http://{steady.plan.vip}/api/x"
    out = run(in_ns(steady.plan.client_netns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *src,
                    "-H", "Host: shop.lab.invalid", url), check=False).stdout  # fmt: skip
    assert out == "403"
    # The rest of the host is open to both.
    assert curl(steady, "shop.lab.invalid", "/", outside)[0] == "200"


def test_tcp_port_answers_over_the_vip_and_fails_over(steady: Lab) -> None:
    assert wait_until(lambda: tcp_hello(steady).startswith("hello "), 20, poll=0.2), tcp_hello(steady)
    greeting, echoed = tcp_hello(steady).splitlines()
    assert greeting.startswith("hello host=app-") and "service=echo" in greeting and echoed == "ping"
    (master,) = steady.vip_holders()
    inject(steady, "kill-haproxy", master)
    began = time.monotonic()
    assert wait_until(lambda: tcp_hello(fresh(steady)).startswith("hello "), 10, poll=0.05)
    resumed = time.monotonic() - began
    assert master not in fresh(steady).vip_holders()
    assert resumed < 5, f"the TCP service came back after {resumed:.2f} s"


def test_websockets_stay_open_across_a_new_hostname(steady: Lab) -> None:
    with held(steady, "ws", 4, host="blog.lab.invalid") as h:
        apply(steady, changed(stack(), "add-hostname"), "lab", lambda _: None)
        assert wait_until(
            lambda: service_of(curl(fresh(steady), NEW_HOSTNAME, "/")[1]) == "blog", 30, poll=0.2
        )
        time.sleep(2)  # messages after the reload too
    assert (h.report["opened"], h.report["cut"], h.report["held"]) == (4, 0, 4), json.dumps(h.report)
    apply(fresh(steady), stack(), "lab", lambda _: None)


def test_websockets_stay_open_across_a_handoff_within_the_drain_window(steady: Lab) -> None:
    (old,) = steady.vip_holders()
    done: list[str] = []
    with held(steady, "ws", 4, host="blog.lab.invalid") as h:
        t = threading.Thread(target=lambda: done.append(handoff(fresh(steady), lambda _: None)), daemon=True)
        t.start()
        assert wait_until(lambda: old not in fresh(steady).vip_holders(), 10, poll=0.05)
        time.sleep(5)  # the VIP is elsewhere; the connections go on, steered back to the old MASTER
    t.join(timeout=DRAIN_S + 40)
    assert done, "the handoff did not finish"
    assert (h.report["opened"], h.report["cut"], h.report["held"]) == (4, 0, 4), json.dumps(h.report)
    assert h.report["messages"] > 4 * 4  # echoed every second, on every connection
