"""Emulator backend: the vLLM-API emulator, in this process, as a deployment (dry runs, the project's tests).

A test instrument, never presented as vLLM: its log and `/v1/models` say so. Faults and the latency
model come from the profile (`deployment.faults`, `deployment.emulator`), or from the environment
variable PYTEST_VLLM_EMULATOR_FAULTS (comma-separated) so a test can inject one without a new profile.
"""

from __future__ import annotations

import os

from ..emulator import EmulatedModel, EmulatorServer, LatencyModel
from ..errors import ServerExited
from .base import Backend, read_tail
from .registry import KINDS


class EmulatorBackend(Backend):
    kind = KINDS["emulator"]
    server: EmulatorServer | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url if self.server else super().base_url

    def faults(self) -> list[str]:
        from_env = [f for f in os.environ.get("PYTEST_VLLM_EMULATOR_FAULTS", "").split(",") if f]
        return [*self.profile.deployment.faults, *from_env]

    def start(self) -> None:
        d, p = self.profile.deployment, self.profile
        logs = self.settings.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{p.name}-{self.settings.run_id}-emulator.log"
        options = d.emulator
        model = EmulatedModel.from_vllm_flags(p.server, served_name=p.served_name or None,
                                              vision=bool(p.capabilities.vision))
        self.server = EmulatorServer(d.host, d.port, faults=self.faults(), api_key=self.api_key,
                                     latency=LatencyModel(**options.get("latency", {})), model=model,
                                     slow_start_s=float(options.get("slow_start_s", 3600)),
                                     degrade_after_s=float(options.get("degrade_after_s", 120)),
                                     log_path=self.log_path).start()

    def check_alive(self) -> str:
        if self.server is None:
            return "not started"
        if self.server.dead:
            raise ServerExited("the emulator crashed (fault 'crash') during start-up",
                               log_tail=self.log_tail(), log_path=str(self.log_path))
        return "emulator running (a test instrument, not vLLM)"

    def log_tail(self, lines: int = 50) -> list[str]:
        return read_tail(self.log_path, lines)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
