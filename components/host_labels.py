"""HostLabels: the `role` label that all scheduling in this design keys on.

Creates: per listed node, a read of the Node (the run stops if it is not in
the cluster under that name) and a server-side-apply NodePatch setting
`role=<role>`. Outputs the registration command per role, for hosts not
yet in the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import ROLE_LABEL
from components.settings import Role

# Rancher's system-agent install.sh stops with "You must select at least one
# role" when none is given; the UI adds one, the node command alone has none.
WORKER = "--worker"
T = TypeVar("T")


@dataclass(frozen=True)
class HostLabelsArgs:
    """Node name -> role, and Rancher's registration command to extend per role."""

    roles: Mapping[str, Role]
    node_command: pulumi.Input[str]


def registration_command(node_command: str, role: Role) -> str:
    """The cluster's node command, registering the host as a worker with its role label.

    Per role, not per host: a host the cluster lacks stops the run, so the
    commands a run exports serve the hosts added after it.
    """
    command = node_command.rstrip()
    if WORKER not in command.split():
        command += f" {WORKER}"
    return f"{command} --label {ROLE_LABEL}={role.value}"


class HostLabels(pulumi.ComponentResource):
    """Labels registered nodes `role=<role>`; exposes per-role registration commands."""

    node_names: dict[Role, list[str]]
    registration_commands: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: HostLabelsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:HostLabels", name, None, opts)
        self._patches: list[k8s.core.v1.NodePatch] = []
        for node, role in sorted(args.roles.items()):
            # A Patch's create is a plain server-side apply (and is skipped in
            # preview): on a name the cluster lacks it would create a ghost Node
            # and label nothing real. A read fails instead, in preview too.
            registered = k8s.core.v1.Node.get(
                f"{name}-{node}-registered", node, opts=pulumi.ResourceOptions(parent=self)
            )
            # No patchForce: a `role` the host registered with stays owned by
            # its registrant too, so deleting this patch leaves it; a different
            # one is a conflict to resolve, not a label to take over.
            patch = k8s.core.v1.NodePatch(
                f"{name}-{node}",
                metadata={"name": node, "labels": {ROLE_LABEL: role.value}},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[registered]),
            )
            self._patches.append(patch)
        self.node_names = {role: sorted(n for n, r in args.roles.items() if r == role) for role in Role}
        # The command embeds a registration token: it stays a secret.
        self.registration_commands = pulumi.Output.secret(
            pulumi.Output.from_input(args.node_command).apply(
                lambda cmd: {role.value: registration_command(cmd, role) for role in Role}
            )
        )
        self.register_outputs({"registration_commands": self.registration_commands})

    def after(self, value: pulumi.Output[T]) -> pulumi.Output[T]:
        """`value`, once every host has its label: what is built from it waits for them.

        A component's `depends_on` does not reach its children; an input does.
        The URNs are known in preview, so nothing turns unknown there.
        """

        def first(values: list[Any]) -> T:
            head: T = values[0]
            return head

        return pulumi.Output.all(value, *(p.urn for p in self._patches)).apply(first)
