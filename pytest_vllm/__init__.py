"""pytest-vllm: decide whether a vLLM deployment may go to production.

What suites import. The objects themselves come from the plugin's fixtures: `vllm_profile` (Profile),
`vllm_deployment` (Deployment), `vllm_client` (VllmClient), `vllm_report` (RunReport), `vllm_ttft`.
Anything else in the package is internal and may change.
"""

from .deployment import Deployment
from .http import ApiError, ServerGone, VllmClient, error_message
from .metrics import has_vllm_metrics, total
from .profile import Profile
from .reports import RunReport
from .streaming import StreamResult

__version__ = "0.1.0"
__all__ = ["ApiError", "Deployment", "Profile", "RunReport", "ServerGone", "StreamResult", "VllmClient",
           "error_message", "has_vllm_metrics", "total"]
