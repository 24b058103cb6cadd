"""ClusterAccess: the Rancher side and the way into the cluster.

Creates: a rancher2 Provider, the cluster lookup, a Kubernetes Provider from
the cluster's kubeconfig, a Rancher Project, and two namespaces in it (apps,
edge) with Pod Security labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_rancher2 as rancher2

from components.k8s import PART_OF

PSA = "pod-security.kubernetes.io"


@dataclass(frozen=True)
class ClusterAccessArgs:
    """Which Rancher, which cluster, and the namespaces to make there."""

    api_url: str
    cluster_name: str
    project_name: str
    apps_namespace: str
    edge_namespace: str
    # None: the provider falls back to RANCHER_TOKEN_KEY in the environment.
    token_key: pulumi.Input[str] | None = None
    insecure: bool = False
    ca_certs: str | None = None


class ClusterAccess(pulumi.ComponentResource):
    """Rancher provider, cluster, project and namespaces; hands out a k8s provider."""

    cluster_id: pulumi.Output[str]
    project_id: pulumi.Output[str]
    apps_namespace: pulumi.Output[str]
    edge_namespace: pulumi.Output[str]
    edge_namespace_id: pulumi.Output[str]
    node_command: pulumi.Output[str]
    k8s_provider: k8s.Provider
    rancher_provider: rancher2.Provider

    def __init__(
        self, name: str, args: ClusterAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rancher-ha-lb:index:ClusterAccess", name, None, opts)
        rancher = rancher2.Provider(
            f"{name}-rancher",
            api_url=args.api_url,
            token_key=pulumi.Output.secret(args.token_key) if args.token_key is not None else None,
            insecure=args.insecure,
            ca_certs=args.ca_certs,
            opts=pulumi.ResourceOptions(parent=self),
        )
        cluster = rancher2.get_cluster_output(
            name=args.cluster_name,
            opts=pulumi.InvokeOutputOptions(parent=self, provider=rancher),
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.secret(cluster.kube_config),
            # Server-side apply: NodePatch needs it, and field ownership keeps
            # us from fighting Rancher's own writes.
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        project = rancher2.Project(
            f"{name}-project",
            name=args.project_name,
            cluster_id=cluster.id,
            description="rancher-ha-lb: highly available web entry point",
            labels={"app.kubernetes.io/part-of": PART_OF},
            opts=pulumi.ResourceOptions(parent=self, provider=rancher),
        )
        apps_ns = rancher2.Namespace(
            f"{name}-apps",
            name=args.apps_namespace,
            project_id=project.id,
            description="App services (Pod Security: restricted)",
            labels={
                "app.kubernetes.io/part-of": PART_OF,
                f"{PSA}/enforce": "restricted",
                f"{PSA}/enforce-version": "latest",
                f"{PSA}/warn": "restricted",
                f"{PSA}/audit": "restricted",
            },
            opts=pulumi.ResourceOptions(parent=self, provider=rancher),
        )
        # The edge tier owns the node's network: HAProxy binds the host's port
        # 80 and keepalived adds the VIP to the host's interface and speaks VRRP
        # (raw IP protocol 112), so its pods need hostNetwork and NET_ADMIN /
        # NET_RAW / SETGID, which only the `privileged` Pod Security
        # level admits. Nothing else runs here; audit still records what
        # `baseline` would refuse.
        edge_ns = rancher2.Namespace(
            f"{name}-edge",
            name=args.edge_namespace,
            project_id=project.id,
            description="Edge tier: HAProxy + keepalived in host networking",
            labels={
                "app.kubernetes.io/part-of": PART_OF,
                "rancher-ha-lb/host-network": "allowed",
                f"{PSA}/enforce": "privileged",
                f"{PSA}/enforce-version": "latest",
                f"{PSA}/audit": "baseline",
            },
            opts=pulumi.ResourceOptions(parent=self, provider=rancher),
        )
        self.rancher_provider = rancher
        self.cluster_id = cluster.id
        self.project_id = project.id
        self.apps_namespace = apps_ns.name
        self.edge_namespace = edge_ns.name
        self.edge_namespace_id = edge_ns.id
        self.node_command = pulumi.Output.secret(cluster.cluster_registration_token.node_command)
        self.register_outputs(
            {
                "cluster_id": self.cluster_id,
                "project_id": self.project_id,
                "apps_namespace": self.apps_namespace,
                "edge_namespace": self.edge_namespace,
            }
        )
