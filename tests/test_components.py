"""Components one at a time under @pulumi.runtime.test: their outputs.

Mocks are set before each test (several modules set their own in one run);
each check returns `Output.all(res.urn, ...).apply(check)` so a failure names
the resource.
"""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest
from conftest import settings_of

from components.app_service import AppService, AppServiceArgs
from components.cluster import ClusterAccess, ClusterAccessArgs
from components.edge import Edge, EdgeArgs
from components.host_labels import HostLabels, HostLabelsArgs, registration_command
from components.image import IMAGES, EdgeImages, EdgeImagesArgs, ImageSource
from components.settings import Registry, Role
from halb.mockcluster import Rancher
from halb.mockrun import FAKE_DIGEST, RecordingMocks


@pytest.fixture(autouse=True)
def mocks() -> Iterator[RecordingMocks]:
    m = RecordingMocks(Rancher.with_nodes("test", ["lb-1", "app-1"]))
    pulumi.runtime.set_mocks(m, project="rancher-ha-lb", stack="test", preview=False)
    yield m


@pulumi.runtime.test
def test_app_service_exposes_its_service_name() -> pulumi.Output[None]:
    svc = settings_of("prod").services[1]
    app = AppService("app-api", AppServiceArgs(svc, "web"))

    def check(args: list[str]) -> None:
        urn, name = args
        assert name == "api", urn

    return pulumi.Output.all(app.urn, app.service_name).apply(check)


@pulumi.runtime.test
async def test_registration_commands_are_secret_and_register_workers_with_their_role() -> None:
    hosts = HostLabels(
        "hosts", HostLabelsArgs({"lb-1": Role.LOAD_BALANCER, "app-1": Role.APPS}, "register --token T")
    )
    assert hosts.node_names == {Role.LOAD_BALANCER: ["lb-1"], Role.APPS: ["app-1"]}
    # The command carries a registration token.
    assert await hosts.registration_commands.is_secret()
    assert await hosts.registration_commands.future() == {
        "load-balancer": "register --token T --worker --label role=load-balancer",
        "apps": "register --token T --worker --label role=apps",
    }


def haproxy_src(build: bool) -> ImageSource:
    return ImageSource("reg.example.com/edge/haproxy:1", build, IMAGES / "haproxy")


def keepalived_src(build: bool) -> ImageSource:
    return ImageSource("reg.example.com/edge/keepalived:1", build, IMAGES / "keepalived")


def test_registration_command_keeps_a_worker_flag_rancher_already_gave() -> None:
    assert registration_command("register --worker ", Role.APPS) == "register --worker --label role=apps"
    assert registration_command("register --workers-x", Role.APPS).count("--worker ") == 1


@pulumi.runtime.test
async def test_labels_land_on_registered_nodes_and_values_wait_for_them(mocks: RecordingMocks) -> None:
    hosts = HostLabels("hosts", HostLabelsArgs({"lb-1": Role.LOAD_BALANCER, "app-1": Role.APPS}, "x"))
    namespace = hosts.after(pulumi.Output.from_input("web"))
    assert await namespace.future() == "web"
    # What is built from it depends on every patch.
    assert {await r.urn.future() for r in await namespace.resources()} >= {
        "urn:pulumi:test::rancher-ha-lb::rancher-ha-lb:index:HostLabels$kubernetes:core/v1:NodePatch::hosts-lb-1",
        "urn:pulumi:test::rancher-ha-lb::rancher-ha-lb:index:HostLabels$kubernetes:core/v1:NodePatch::hosts-app-1",
    }
    assert mocks.rancher.nodes["lb-1"].labels == {"role": "load-balancer"}
    assert mocks.rancher.nodes["app-1"].labels == {"role": "apps"}


@pulumi.runtime.test
def test_image_build_yields_digests_and_one_pull_secret() -> pulumi.Output[None]:
    images = EdgeImages(
        "images",
        EdgeImagesArgs(
            haproxy_src(True),
            keepalived_src(True),
            platform="linux/arm64",
            project_id="c:p",
            namespace_id="c:ns",
            registry=Registry(server="reg.example.com", username="ci"),
            registry_password=pulumi.Output.secret("pw"),
        ),
    )
    assert images.pull_secret is not None

    def check(args: list[str]) -> None:
        urn, hap, ka = args
        assert hap == f"reg.example.com/edge/haproxy@{FAKE_DIGEST}", urn
        assert ka == f"reg.example.com/edge/keepalived@{FAKE_DIGEST}", urn

    return pulumi.Output.all(images.urn, images.haproxy_ref, images.keepalived_ref).apply(check)


@pulumi.runtime.test
def test_images_without_build_or_password() -> pulumi.Output[None]:
    images = EdgeImages(
        "images",
        EdgeImagesArgs(haproxy_src(False), keepalived_src(False), "linux/amd64", "c:p", "c:ns"),
    )
    assert images.pull_secret is None

    def check(args: list[str]) -> None:
        urn, hap, ka = args
        assert (hap, ka) == ("reg.example.com/edge/haproxy:1", "reg.example.com/edge/keepalived:1"), urn

    return pulumi.Output.all(images.urn, images.haproxy_ref, images.keepalived_ref).apply(check)


def test_edge_refuses_auth_mismatch_before_registering(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused Edge registers nothing: no half-made component in the state. (Registering
    first also made this test depend on an event loop left by the tests before it.)"""

    def registering(*_: object, **__: object) -> None:
        raise AssertionError("Edge registered itself before checking its arguments")

    monkeypatch.setattr(pulumi.ComponentResource, "__init__", registering)
    with pytest.raises(
        ValueError, match=r"^auth_pass must be given exactly when settings.vrrp_auth_pass is set$"
    ):
        Edge("edge", EdgeArgs(settings_of("lab"), "web-edge", "h", "k", auth_pass="x"))


def test_cluster_access_refuses_a_missing_token_before_registering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def registering(*_: object, **__: object) -> None:
        raise AssertionError("ClusterAccess registered itself before checking its arguments")

    monkeypatch.setattr(pulumi.ComponentResource, "__init__", registering)
    args = ClusterAccessArgs("https://rancher.example.com", "c", "p", "web", "web-edge", None)
    with pytest.raises(ValueError, match=r"^token_key is required: the cluster's kubeconfig carries it$"):
        ClusterAccess("cluster", args)


@pulumi.runtime.test
def test_edge_outputs() -> pulumi.Output[None]:
    edge = Edge("edge", EdgeArgs(settings_of("lab"), "web-edge", "h", "k"))
    assert edge.vip == "192.0.2.10" and edge.nodes == ["lb-1", "lb-2"]
    return edge.urn.apply(lambda urn: None)
