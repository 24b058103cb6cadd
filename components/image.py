"""EdgeImages: where the edge pod's two images come from.

Creates: for each of HAProxy (images/haproxy), keepalived
(images/keepalived) and, for a `bgp` stack, FRR (images/frr) whose `build`
is set, a pulumi_docker Image built for `imagePlatform` and pushed, run by
digest; when a registry and its password are configured, one Rancher
Registry (the pods' image pull secret) in the edge namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_rancher2 as rancher2

from components.settings import Registry

IMAGES = Path(__file__).resolve().parent.parent / "images"


@dataclass(frozen=True)
class ImageSource:
    """One image: the reference to push/run, and whether we build it."""

    image: str
    build: bool
    context: Path


@dataclass(frozen=True)
class EdgeImagesArgs:
    haproxy: ImageSource
    keepalived: ImageSource
    platform: str
    project_id: pulumi.Input[str]
    namespace_id: pulumi.Input[str]
    registry: Registry | None = None
    registry_password: pulumi.Input[str] | None = None
    # A `bgp` stack's FRR image (None: not built, not run).
    frr: ImageSource | None = None
    # Where the app Deployments run: the same registry's pull secret there too.
    apps_namespace_id: pulumi.Input[str] | None = None


class EdgeImages(pulumi.ComponentResource):
    """The image references to run, pinned by digest when we built them."""

    haproxy_ref: pulumi.Output[str]
    keepalived_ref: pulumi.Output[str]
    frr_ref: pulumi.Output[str] | None
    pull_secret: pulumi.Output[str] | None
    apps_pull_secret: pulumi.Output[str] | None

    def __init__(self, name: str, args: EdgeImagesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:EdgeImages", name, None, opts)
        password = (
            pulumi.Output.secret(args.registry_password) if args.registry_password is not None else None
        )
        registry = (
            docker.RegistryArgs(
                server=args.registry.server, username=args.registry.username, password=password
            )
            if args.registry is not None
            else None
        )
        self.haproxy_ref = self._ref(f"{name}-haproxy", args.haproxy, args.platform, registry)
        self.keepalived_ref = self._ref(f"{name}-keepalived", args.keepalived, args.platform, registry)
        self.frr_ref = (
            self._ref(f"{name}-frr", args.frr, args.platform, registry) if args.frr is not None else None
        )

        self.pull_secret = self.apps_pull_secret = None
        # Without a password the build pushes with the ambient `docker login`,
        # and nodes pull with their own credentials: no pull secret then.
        if args.registry is not None and password is not None:
            self.pull_secret = self._pull_secret(f"{name}-pull", args, args.namespace_id, password)
            if args.apps_namespace_id is not None:
                # A Secret serves only its own namespace: the apps get one of their own.
                self.apps_pull_secret = self._pull_secret(
                    f"{name}-apps-pull", args, args.apps_namespace_id, password
                )
        self.register_outputs({"haproxy_ref": self.haproxy_ref, "keepalived_ref": self.keepalived_ref})

    def _pull_secret(
        self, name: str, args: EdgeImagesArgs, namespace_id: pulumi.Input[str], password: pulumi.Output[str]
    ) -> pulumi.Output[str]:
        assert args.registry is not None
        pull = rancher2.Registry(
            name,
            name=name,
            project_id=args.project_id,
            namespace_id=namespace_id,
            registries=[
                rancher2.RegistryRegistryArgs(
                    address=args.registry.server, username=args.registry.username, password=password
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pull.name

    def _ref(
        self, name: str, src: ImageSource, platform: str, registry: docker.RegistryArgs | None
    ) -> pulumi.Output[str]:
        if not src.build:
            return pulumi.Output.from_input(src.image)
        built = docker.Image(
            f"{name}-build",
            image_name=src.image,
            build=docker.DockerBuildArgs(
                context=str(src.context),
                dockerfile=str(src.context / "Dockerfile"),
                platform=platform,
            ),
            registry=registry,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The digest, not the tag: every node runs the bytes we built.
        return built.repo_digest
