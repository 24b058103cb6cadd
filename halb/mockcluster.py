"""The Rancher server and cluster the mocks answer from: state and the rules that refuse.

Pure data, no Pulumi. `halb.mockrun` routes the program's invokes and
resources here, so the tests (and the offline render) meet the behaviour a
real `pulumi up` meets, read from the sources named beside each rule:
terraform-provider-rancher2 (`getCluster`, the provider's token check),
pulumi-kubernetes 4.3x (Patch resources, reads, the kubeconfig), Kubernetes'
structured-merge-diff (server-side-apply field ownership), rancher-webhook
(Pod Security labels), Rancher's built-in role templates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

CLUSTER_ID = "c-m-mock0001"
NODE_COMMAND = (
    "curl -fL https://rancher.example.invalid/system-agent-install.sh | sudo sh -s - "
    "--server https://rancher.example.invalid --token MOCKTOKEN --ca-checksum 0"
)
# The token a run's environment holds when the stack's config has none
# (`RANCHER_TOKEN_KEY`, as an operator's shell would).
ENV_TOKEN = "token-mockenv:REDACTED"
# Whoever wrote the labels a host registered with (`--label` reaches the
# kubelet's --node-labels; the kubelet creates the Node).
KUBELET = "kubelet"
CLUSTER_OWNER = "cluster-owner"
PROJECT_OWNER = "project-owner"
PSA_PREFIX = "pod-security.kubernetes.io/"


class ApiError(Exception):
    """What the real provider or API server answers, in its words."""


@dataclass
class Node:
    """A Node object: its labels and, per label, the field managers that own it."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    owners: dict[str, set[str]] = field(default_factory=dict)
    # Created by an apply, never by a kubelet: nothing runs there.
    ghost: bool = False

    def apply_labels(self, manager: str, labels: Mapping[str, str], force: bool) -> None:
        """Server-side apply of `metadata.labels` by `manager`.

        structured-merge-diff (merge/update.go): only a changed value conflicts
        with its other owners; `force` takes it from them; an equal value is
        shared. Labels this manager applied before and not now lose its
        ownership, and go when nobody owns them (prune).
        """
        conflicts = sorted(
            (other, key)
            for key, value in labels.items()
            if key in self.labels and self.labels[key] != value
            for other in self.owners.get(key, set()) - {manager}
        )
        if conflicts and not force:
            listed = "; ".join(f'conflict with "{m}": .metadata.labels.{k}' for m, k in conflicts)
            raise ApiError(
                "server-side apply field conflict detected: "
                f"Apply failed with {len(conflicts)} conflict(s): {listed}"
            )
        for key in [k for k, owners in self.owners.items() if manager in owners and k not in labels]:
            self._release(key, manager)
        for key, value in labels.items():
            keep = self.owners.get(key, set()) - {manager} if self.labels.get(key) == value else set()
            self.labels[key] = value
            self.owners[key] = keep | {manager}

    def relinquish(self, manager: str) -> None:
        """What deleting a Patch resource does: apply nothing (pulumi-kubernetes ssa.Relinquish)."""
        self.apply_labels(manager, {}, force=False)

    def _release(self, key: str, manager: str) -> None:
        self.owners[key].discard(manager)
        if not self.owners[key]:
            del self.owners[key]
            del self.labels[key]


@dataclass
class Rancher:
    """One Rancher server with one downstream cluster, seen through the stack's token."""

    cluster_name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    cluster_id: str = CLUSTER_ID
    # The token's user's role on the cluster (Rancher's built-in role templates).
    access: str = CLUSTER_OWNER
    # False: authorized cluster endpoint on and the cluster disconnected, when
    # kubeconfig generation gives "" (rancher2 getClusterKubeconfig).
    kubeconfig_available: bool = True
    # API tokens minted by kubeconfig generation, one per generating read.
    minted: list[str] = field(default_factory=list)
    # Objects created in Rancher or the cluster, "Kind/name", in order.
    created: list[str] = field(default_factory=list)
    # Field manager of each applied NodePatch, by resource name (a Patch keeps
    # its manager in its state, pulumi-kubernetes fieldManagerName).
    patch_managers: dict[str, tuple[str, str]] = field(default_factory=dict)
    api_url: str | None = None
    token: str | None = None
    # The cluster's `driver` as Rancher reports it: rke2, k3s, imported, ...
    driver: str = "imported"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def with_nodes(cls, cluster_name: str, nodes: Iterable[str]) -> Rancher:
        """A cluster where every named host has registered, unlabelled."""
        return cls(cluster_name, {n: Node(n) for n in nodes})

    def register(self, name: str, labels: Mapping[str, str] | None = None) -> Node:
        """A host joins (`--label k=v` sets labels the kubelet owns)."""
        node = Node(name)
        node.apply_labels(KUBELET, labels or {}, force=True)
        self.nodes[name] = node
        return node

    # rancher2 provider and data source

    def configure(self, api_url: str, token: str | None) -> None:
        """The rancher2 provider's Configure (provider.go providerValidateConfig)."""
        if not token:
            raise ApiError("[ERROR] No token_key nor access_key and secret_key are provided")
        # The provider takes the URL with or without `/v3`; Rancher's proxy sits beside it.
        self.api_url, self.token = api_url.rstrip("/").removesuffix("/v3"), token

    def get_cluster(self, name: str, generate_kube_config: bool) -> dict[str, Any]:
        """`getCluster` (data_source_rancher2_cluster.go) as the token sees it.

        The list is filtered by access: no role, no cluster. Forbidden on the
        registration token is swallowed (no `clusterRegistrationToken`); only
        Cluster Owner (resources `*`) may read it among the built-in roles.
        Kubeconfig generation, on unless `generateKubeConfig: false`, mints a
        new API token on every read: a data source caches nothing.
        """
        if name != self.cluster_name or self.access not in (CLUSTER_OWNER, PROJECT_OWNER):
            raise ApiError(f'[ERROR] cluster with name "{name}" not found')
        out: dict[str, Any] = {
            "id": self.cluster_id,
            "name": name,
            "kubeConfig": "",
            "defaultProjectId": f"{self.cluster_id}:p-default",
            "systemProjectId": f"{self.cluster_id}:p-system",
            "driver": self.driver,
        }
        if self.access == CLUSTER_OWNER:
            out["clusterRegistrationToken"] = {"nodeCommand": NODE_COMMAND, "command": ""}
        if generate_kube_config and self.kubeconfig_available:
            with self._lock:
                token = f"kubeconfig-u-mock:{len(self.minted) + 1:08d}"
                self.minted.append(token)
            out["kubeConfig"] = _generated_kubeconfig(
                f"{self.api_url}/k8s/clusters/{self.cluster_id}", name, token
            )
        return out

    def create_project(self, name: str) -> None:
        if self.access != CLUSTER_OWNER:
            raise ApiError(
                "Forbidden 403: projects.management.cattle.io is forbidden: "
                f'User cannot create resource "projects" in the namespace "{self.cluster_id}"'
            )
        self.created.append(f"Project/{name}")

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        """rancher-webhook psalabels.go: PSA labels need `updatepsa` on the project."""
        if any(k.startswith(PSA_PREFIX) for k in labels) and self.access != CLUSTER_OWNER:
            raise ApiError(
                'admission webhook "rancher.cattle.io.namespaces" denied the request: Unauthorized'
            )
        self.created.append(f"Namespace/{name}")

    # the downstream cluster, through the Kubernetes provider

    def connect(self, kubeconfig_text: str | None) -> None:
        """A Kubernetes provider's config: which cluster, as whom.

        pulumi-kubernetes with no kubeconfig loads the ambient one (KUBECONFIG,
        ~/.kube/config): whatever context the operator's shell points at.
        Rancher's proxy (/k8s/clusters/<id>) takes the tokens Rancher knows.
        """
        if not kubeconfig_text:
            raise ApiError(
                "kubeconfig is empty: pulumi-kubernetes would use the ambient kubeconfig "
                f"(KUBECONFIG, ~/.kube/config), not cluster {self.cluster_name!r}"
            )
        cfg = yaml.safe_load(kubeconfig_text)
        server = cfg["clusters"][0]["cluster"]["server"]
        token = cfg["users"][0]["user"].get("token")
        if server != f"{self.api_url}/k8s/clusters/{self.cluster_id}":
            raise ApiError(
                f"kubeconfig server {server!r} is not cluster {self.cluster_name!r} of this Rancher"
            )
        if token != self.token and token not in self.minted:
            raise ApiError("Unauthorized 401: the kubeconfig's token is not a Rancher token")

    def read_node(self, name: str) -> dict[str, Any]:
        """A Node read: 404 gives an empty read, which the engine reports so."""
        node = self.nodes.get(name)
        if node is None:
            raise ApiError(f"resource '{name}' does not exist")
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(node.labels)}}

    def patch_node(
        self, resource: str, name: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> None:
        """A NodePatch create/update: a plain server-side apply, so a missing Node is created."""
        if self.access != CLUSTER_OWNER:
            raise ApiError(f'nodes "{name}" is forbidden: User cannot patch resource "nodes"')
        manager = annotations.get("pulumi.com/patchFieldManager") or f"pulumi-kubernetes-{resource}"
        force = annotations.get("pulumi.com/patchForce") == "true"
        with self._lock:
            node = self.nodes.get(name)
            if node is None:
                node = self.nodes[name] = Node(name, ghost=True)
                self.created.append(f"Node/{name}")
            node.apply_labels(manager, labels, force)
            self.patch_managers[resource] = (name, manager)

    def delete_patch(self, resource: str) -> None:
        """Deleting a NodePatch relinquishes its fields, the Node stays.

        The relinquish is itself an apply (of the bare name): on a Node
        deleted meanwhile it creates a ghost, like any apply.
        """
        name, manager = self.patch_managers.pop(resource)
        if name not in self.nodes:
            self.nodes[name] = Node(name, ghost=True)
            self.created.append(f"Node/{name}")
        self.nodes[name].relinquish(manager)


def _generated_kubeconfig(server: str, name: str, token: str) -> str:
    """What `generateKubeconfig` returns (rancher pkg/kubeconfig/templates.go, no CA)."""
    return (
        f'apiVersion: v1\nkind: Config\nclusters:\n- name: "{name}"\n  cluster:\n    server: "{server}"\n'
        f'users:\n- name: "{name}"\n  user:\n    token: "{token}"\n'
        f'contexts:\n- name: "{name}"\n  context:\n    user: "{name}"\n    cluster: "{name}"\n'
        f'current-context: "{name}"\n'
    )
