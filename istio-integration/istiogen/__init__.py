"""istiogen: what istiod would send one sidecar, rendered from Kubernetes/Istio objects without a
cluster. API (stable, see README.md):

    from istiogen import World, render, node, resources, IstiogenError
    w = World.load(["world.yaml", {...}], mesh={"trustDomain": "cluster.local"})
    dump = render(w, pod="camera-v1-0", namespace="media")   # Envoy /config_dump dict
"""
from .render import node, render, resources  # noqa: F401
from .world import IstiogenError, World  # noqa: F401

__all__ = ["World", "render", "resources", "node", "IstiogenError"]
