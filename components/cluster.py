"""ClusterAccess: the Rancher side and the way into the cluster.

Creates: a rancher2 Provider, the cluster lookup (stops the run when the
token may not manage the cluster), a Kubernetes Provider through Rancher's
proxy with the stack's own token, a Rancher Project, and two namespaces in
it (apps, edge) with Pod Security labels.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_rancher2 as rancher2

from components.k8s import PART_OF

PSA = "pod-security.kubernetes.io"


def required_access(cluster: str) -> str:
    """What `pulumi up` needs from the token, in one sentence."""
    return (
        f"`pulumi up` needs the API token (no scope) of a user who is Cluster Owner of cluster "
        f"{cluster!r} or a Rancher administrator: it creates a project, labels nodes and sets the "
        "namespaces' Pod Security labels, which Rancher's webhook allows only with the `updatepsa` "
        "verb on projects (Cluster Owner has it, Project Owner does not)"
    )


def node_command_of(cluster: str, found: rancher2.GetClusterResult) -> str:
    """The cluster's node registration command, or RunError naming cluster and role.

    getCluster swallows Forbidden: a token that may not manage the cluster gets
    no registration token (among the built-in roles only Cluster Owner may read
    it) instead of an error, and an id-less result when the cluster read itself
    is refused. Everything after the lookup would then fail half-way, the
    namespaces with the webhook's bare denial: stop here instead.
    """
    token = found.cluster_registration_token
    command = token.node_command if token is not None else None
    if not found.id or found.id == "-" or not command:
        raise pulumi.RunError(
            f"rancher-ha-lb:cluster: Rancher gave no registration token for cluster {cluster!r} "
            "to the token in rancher2:tokenKey, so that token may not manage it. " + required_access(cluster)
        )
    return command


def ingress_clash_warning(cluster: str, driver: str | None) -> str | None:
    """RKE2 ships rke2-ingress-nginx, a DaemonSet holding host ports 80 and 443
    on every node: the edge pod's hostPorts clash on the load-balancer hosts."""
    if driver != "rke2":
        return None
    return (
        f"cluster {cluster!r} is RKE2: its bundled rke2-ingress-nginx holds host ports 80 and 443 on "
        "every node, so the edge pods cannot start on the load-balancer hosts. Disable it (`disable: "
        "[rke2-ingress-nginx]` in the cluster's RKE2 config, Rancher: Cluster Configuration > Add-on "
        "Config) or keep it off the load-balancer hosts (a nodeSelector role=apps in its HelmChartConfig)"
    )


def rancher_kubeconfig(
    api_url: str, cluster_id: str, cluster: str, token: str, ca_certs: str | None, insecure: bool
) -> str:
    """A kubeconfig for Rancher's proxy to the cluster (`/k8s/clusters/<id>`), as Rancher
    writes one (pkg/kubeconfig), with the stack's own token.

    Not getCluster's `kubeConfig`: generating it mints a new API token on
    every preview, up and refresh (a data source caches nothing), and it is ""
    for a disconnected cluster behind an authorized endpoint, which
    pulumi-kubernetes would read as "use ~/.kube/config", some other cluster.
    """
    base = api_url.rstrip("/").removesuffix("/v3")
    server: dict[str, str | bool] = {"server": f"{base}/k8s/clusters/{cluster_id}"}
    if ca_certs:
        server["certificate-authority-data"] = base64.b64encode(ca_certs.encode()).decode()
    if insecure:
        server["insecure-skip-tls-verify"] = True
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": server}],
            "users": [{"name": cluster, "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
        },
        indent=2,
    )


@dataclass(frozen=True)
class ClusterAccessArgs:
    """Which Rancher, which cluster, and the namespaces to make there."""

    api_url: str
    cluster_name: str
    project_name: str
    apps_namespace: str
    edge_namespace: str
    # Also the kubeconfig's token (Rancher's proxy takes API tokens).
    token_key: pulumi.Input[str] | None
    insecure: bool = False
    ca_certs: str | None = None


class ClusterAccess(pulumi.ComponentResource):
    """Rancher provider, cluster, project and namespaces; hands out a k8s provider."""

    cluster_id: pulumi.Output[str]
    project_id: pulumi.Output[str]
    apps_namespace: pulumi.Output[str]
    edge_namespace: pulumi.Output[str]
    edge_namespace_id: pulumi.Output[str]
    apps_namespace_id: pulumi.Output[str]
    node_command: pulumi.Output[str]
    k8s_provider: k8s.Provider
    rancher_provider: rancher2.Provider

    def __init__(
        self, name: str, args: ClusterAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if args.token_key is None:  # before registering anything
            raise ValueError("token_key is required: the cluster's kubeconfig carries it")
        super().__init__("rancher-ha-lb:index:ClusterAccess", name, None, opts)
        token = pulumi.Output.secret(args.token_key)
        rancher = rancher2.Provider(
            f"{name}-rancher",
            api_url=args.api_url,
            token_key=token,
            insecure=args.insecure,
            ca_certs=args.ca_certs,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # A plain invoke, so a refused lookup stops the run before any other
        # resource is registered (and it runs in preview, too).
        found = rancher2.get_cluster(
            name=args.cluster_name,
            generate_kube_config=False,
            opts=pulumi.InvokeOptions(parent=self, provider=rancher),
        )
        node_command = node_command_of(args.cluster_name, found)
        warning = ingress_clash_warning(args.cluster_name, found.driver)
        if warning:
            pulumi.log.warn(warning, resource=self)
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            # Secret: derived from the secret token.
            kubeconfig=token.apply(
                lambda t: rancher_kubeconfig(
                    args.api_url, found.id, args.cluster_name, t, args.ca_certs, args.insecure
                )
            ),
            # The cluster's identity: a new Rancher URL, CA or token is an
            # update, not a replacement of every Kubernetes resource (which
            # pulumi-kubernetes plans when the kubeconfig's cluster entry changes).
            cluster_identifier=found.id,
            # Server-side apply: NodePatch needs it, and field ownership keeps
            # us from fighting Rancher's own writes.
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        project = rancher2.Project(
            f"{name}-project",
            name=args.project_name,
            cluster_id=found.id,
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
        self.cluster_id = pulumi.Output.from_input(found.id)
        self.project_id = project.id
        self.apps_namespace = apps_ns.name
        self.edge_namespace = edge_ns.name
        self.edge_namespace_id = edge_ns.id
        self.apps_namespace_id = apps_ns.id
        # It embeds the cluster's registration token.
        self.node_command = pulumi.Output.secret(node_command)
        self.register_outputs(
            {
                "cluster_id": self.cluster_id,
                "project_id": self.project_id,
                "apps_namespace": self.apps_namespace,
                "edge_namespace": self.edge_namespace,
            }
        )
