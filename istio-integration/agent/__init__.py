"""pilot-agent stand-in for msm-proxy (issue 7 point 3). See README.md."""
from .agent import Agent, NetnsRunner, http_request  # noqa: F401
from .ca import MeshCA, cert_serial  # noqa: F401
from . import bootstrap  # noqa: F401
from . import gotemplate  # noqa: F401
