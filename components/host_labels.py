"""HostLabels: the `role` label that all scheduling in this design keys on.

Creates: one server-side-apply NodePatch per listed node. Outputs the node
registration command per role, for hosts not yet in the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import ROLE_LABEL
from components.settings import Role


@dataclass(frozen=True)
class HostLabelsArgs:
    """Node name -> role, and Rancher's registration command to extend per role."""

    roles: Mapping[str, Role]
    node_command: pulumi.Input[str]


def registration_command(node_command: str, role: Role) -> str:
    """The cluster's node command, registering the host with its role label."""
    return f"{node_command.rstrip()} --label {ROLE_LABEL}={role.value}"


class HostLabels(pulumi.ComponentResource):
    """Labels nodes `role=<role>`; exposes per-role registration commands."""

    node_names: dict[Role, list[str]]
    registration_commands: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: HostLabelsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:HostLabels", name, None, opts)
        for node, role in sorted(args.roles.items()):
            k8s.core.v1.NodePatch(
                f"{name}-{node}",
                metadata={
                    "name": node,
                    "labels": {ROLE_LABEL: role.value},
                    # Rancher may have set `role` at registration: we own it now.
                    "annotations": {"pulumi.com/patchForce": "true"},
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.node_names = {role: sorted(n for n, r in args.roles.items() if r == role) for role in Role}
        # The command embeds a registration token: it stays a secret.
        self.registration_commands = pulumi.Output.secret(
            pulumi.Output.from_input(args.node_command).apply(
                lambda cmd: {role.value: registration_command(cmd, role) for role in Role}
            )
        )
        self.register_outputs({"registration_commands": self.registration_commands})
