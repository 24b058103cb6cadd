"""rancher-ha-lb: a highly available web entry point for a Rancher 2 cluster."""

import pulumi

from components.app_service import AppService, AppServiceArgs
from components.cluster import ClusterAccess, ClusterAccessArgs
from components.edge import Edge, EdgeArgs
from components.host_labels import HostLabels, HostLabelsArgs
from components.image import IMAGES, EdgeImages, EdgeImagesArgs, ImageSource
from components.monitoring import Monitoring, MonitoringArgs
from components.settings import Role
from components.stack_config import load_settings, secret
from components.tls import EdgeTls, EdgeTlsArgs

s = load_settings()
cluster = ClusterAccess(
    "cluster",
    ClusterAccessArgs(
        api_url=s.rancher.api_url,
        cluster_name=s.cluster,
        project_name=s.project_name,
        apps_namespace=s.apps_namespace,
        edge_namespace=s.edge_namespace,
        token_key=secret(s.rancher.token_key),
        insecure=s.rancher.insecure,
        ca_certs=s.rancher.ca_certs,
    ),
)
in_cluster = pulumi.ResourceOptions(providers=[cluster.k8s_provider, cluster.rancher_provider])

hosts = HostLabels(
    "hosts",
    HostLabelsArgs({n: h.role for n, h in s.hosts.items()}, cluster.node_command),
    in_cluster,
)
# Pods schedule by the role label: workloads go in once every host has it.
apps_namespace, edge_namespace = hosts.after(cluster.apps_namespace), hosts.after(cluster.edge_namespace)
images = EdgeImages(
    "images",
    EdgeImagesArgs(
        haproxy=ImageSource(s.load_balancer.image, s.load_balancer.build, IMAGES / "haproxy"),
        keepalived=ImageSource(s.keepalived.image, s.keepalived.build, IMAGES / "keepalived"),
        platform=s.image_platform,
        project_id=cluster.project_id,
        namespace_id=cluster.edge_namespace_id,
        registry=s.registry,
        registry_password=secret(s.registry_password),
        apps_namespace_id=cluster.apps_namespace_id,
        frr=ImageSource(s.frr.image, s.frr.build, IMAGES / "frr") if s.bgp is not None else None,
    ),
    in_cluster,
)
apps = [
    AppService(f"app-{svc.name}", AppServiceArgs(svc, apps_namespace, images.apps_pull_secret), in_cluster)
    for svc in s.services
]
# HTTPS: cert-manager Certificates and the shared session-ticket Secret.
tls = [EdgeTls("tls", EdgeTlsArgs(s, edge_namespace), in_cluster)] if s.tls_services else []
edge = Edge(
    "edge",
    EdgeArgs(
        s,
        edge_namespace,
        images.haproxy_ref,
        images.keepalived_ref,
        secret(s.vrrp_auth_pass),
        images.pull_secret,
        images.frr_ref,
        # The peers' passwords (addresses to keys): a Pulumi secret from the start.
        pulumi.Output.secret(s.bgp.passwords) if s.bgp is not None and s.bgp.passwords else None,
    ),
    # The pods mount what EdgeTls makes (the ticket Secret, cert-manager's Secrets).
    pulumi.ResourceOptions.merge(in_cluster, pulumi.ResourceOptions(depends_on=tls)),
)
if s.monitoring.enabled:
    Monitoring("monitoring", MonitoringArgs(s, cluster.edge_namespace), in_cluster)

pulumi.export("vip", edge.vip)
pulumi.export("appsNamespace", cluster.apps_namespace)
pulumi.export("edgeNamespace", cluster.edge_namespace)
pulumi.export("loadBalancerNodes", hosts.node_names[Role.LOAD_BALANCER])
pulumi.export("appsNodes", hosts.node_names[Role.APPS])
pulumi.export("services", [a.service_name for a in apps])
pulumi.export("haproxyImage", images.haproxy_ref)
pulumi.export("keepalivedImage", images.keepalived_ref)
if images.frr_ref is not None:
    pulumi.export("frrImage", images.frr_ref)
pulumi.export("registrationCommands", hosts.registration_commands)
