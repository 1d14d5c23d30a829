"""The vLLM-API emulator: a test instrument that answers like vLLM's OpenAI server, with faults.

It exists so each suite can be shown to FAIL on the fault it is meant to catch and PASS on a good
server, and so latency measurements have a known ground truth. It never claims to be vLLM.
"""

from .config import EmulatedModel
from .faults import FAULTS, UnknownFault, parse_faults
from .latency import LatencyModel
from .server import EmulatorServer

__all__ = ["FAULTS", "EmulatedModel", "EmulatorServer", "LatencyModel", "UnknownFault", "parse_faults"]
