"""rancher-ha-lb: a highly available web entry point for a Rancher 2 cluster."""

import pulumi

from components.app_service import AppService, AppServiceArgs
from components.cluster import ClusterAccess, ClusterAccessArgs
from components.host_labels import HostLabels, HostLabelsArgs
from components.image import KeepalivedImage, KeepalivedImageArgs
from components.keepalived import Keepalived, KeepalivedArgs
from components.load_balancer import GlobalLoadBalancer, GlobalLoadBalancerArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.settings import Role
from components.stack_config import load_settings, secret

s = load_settings()
cluster = ClusterAccess(
    "cluster",
    ClusterAccessArgs(
        api_url=s.rancher.api_url,
        cluster_name=s.cluster,
        project_name=s.project_name,
        apps_namespace=s.apps_namespace,
        edge_namespace=s.edge_ns,
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
apps = [
    AppService(f"app-{svc.name}", AppServiceArgs(svc, cluster.apps_namespace), in_cluster)
    for svc in s.services
]
GlobalLoadBalancer("lb", GlobalLoadBalancerArgs(s, cluster.edge_namespace), in_cluster)
image = KeepalivedImage(
    "keepalived-image",
    KeepalivedImageArgs(
        s.keepalived,
        cluster.project_id,
        cluster.edge_namespace_id,
        s.registry,
        secret(s.registry_password),
    ),
    in_cluster,
)
vrrp = Keepalived(
    "keepalived",
    KeepalivedArgs(s, cluster.edge_namespace, image.image_ref, secret(s.vrrp_auth_pass), image.pull_secret),
    in_cluster,
)
if s.monitoring.enabled:
    Monitoring("monitoring", MonitoringArgs(s, cluster.edge_namespace), in_cluster)

pulumi.export("vip", vrrp.vip)
pulumi.export("appsNamespace", cluster.apps_namespace)
pulumi.export("edgeNamespace", cluster.edge_namespace)
pulumi.export("loadBalancerNodes", hosts.node_names[Role.LOAD_BALANCER])
pulumi.export("appsNodes", hosts.node_names[Role.APPS])
pulumi.export("services", [a.service_name for a in apps])
pulumi.export("keepalivedImage", image.image_ref)
pulumi.export("registrationCommands", hosts.registration_commands)
