"""KeepalivedImage: where the edge tier's keepalived image comes from.

Creates: when `keepalived.build` is set, a pulumi_docker Image built from
images/keepalived and pushed; when a registry and its password are
configured, a Rancher Registry (the pods' image pull secret) in the edge
namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_rancher2 as rancher2

from components.settings import KeepalivedImage as ImageSettings
from components.settings import Registry

CONTEXT = Path(__file__).resolve().parent.parent / "images" / "keepalived"


@dataclass(frozen=True)
class KeepalivedImageArgs:
    image: ImageSettings
    project_id: pulumi.Input[str]
    namespace_id: pulumi.Input[str]
    registry: Registry | None = None
    registry_password: pulumi.Input[str] | None = None


class KeepalivedImage(pulumi.ComponentResource):
    """The image reference to run, pinned by digest when we built it."""

    image_ref: pulumi.Output[str]
    pull_secret: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: KeepalivedImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rancher-ha-lb:index:KeepalivedImage", name, None, opts)
        password = (
            pulumi.Output.secret(args.registry_password) if args.registry_password is not None else None
        )
        if args.image.build:
            built = docker.Image(
                f"{name}-build",
                image_name=args.image.image,
                build=docker.DockerBuildArgs(
                    context=str(CONTEXT),
                    dockerfile=str(CONTEXT / "Dockerfile"),
                    platform="linux/amd64",
                ),
                registry=docker.RegistryArgs(
                    server=args.registry.server,
                    username=args.registry.username,
                    password=password,
                )
                if args.registry is not None
                else None,
                opts=pulumi.ResourceOptions(parent=self),
            )
            # The digest, not the tag: every node runs the bytes we built.
            self.image_ref = built.repo_digest
        else:
            self.image_ref = pulumi.Output.from_input(args.image.image)

        self.pull_secret = None
        # Without a password the build pushes with the ambient `docker login`,
        # and nodes pull with their own credentials: no pull secret then.
        if args.registry is not None and password is not None:
            registry = rancher2.Registry(
                f"{name}-pull",
                name=f"{name}-pull",
                project_id=args.project_id,
                namespace_id=args.namespace_id,
                registries=[
                    rancher2.RegistryRegistryArgs(
                        address=args.registry.server,
                        username=args.registry.username,
                        password=password,
                    )
                ],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.pull_secret = registry.name
        self.register_outputs({"image_ref": self.image_ref})
