"""The backends there are, and what each one is: the one table profile validation and deployment read.

Kept free of the backend classes (they import the profile module, which validates against this table);
each class is imported only when a profile chooses it, so compose's docker SDK is never loaded for a
process run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backend


@dataclass(frozen=True)
class BackendKind:
    name: str
    meaning: str
    owns_server: bool  # we start, lint and stop it; False: someone else runs it, we only test it
    required: tuple[str, ...]  # profile keys ("section.key") this backend cannot do without
    implementation: str  # "module:Class"

    def backend_class(self) -> type[Backend]:
        module, _, cls = self.implementation.partition(":")
        return getattr(importlib.import_module(module), cls)


KINDS: dict[str, BackendKind] = {k.name: k for k in (
    BackendKind("process", "vLLM as a subprocess of the test run (CPU development, CI)", True,
                ("model.path",), "pytest_vllm.backends.process:ProcessBackend"),
    BackendKind("compose", "docker compose on a real engine (the GPU hosts)", True,
                ("deployment.compose_files", "deployment.service", "model.path"),
                "pytest_vllm.backends.compose:ComposeBackend"),
    BackendKind("external", "a server that is already running (--base-url, deployment.base_url)", False,
                (), "pytest_vllm.backends.external:ExternalBackend"),
    BackendKind("emulator", "the vLLM-API emulator in this process (a test instrument)", True,
                (), "pytest_vllm.backends.emulator:EmulatorBackend"),
)}
# What `--base-url` runs: whatever the profile says, the server is someone else's.
BASE_URL_KIND = KINDS["external"]


def kind(name: str) -> BackendKind:
    """The backend called `name`; profile validation has already refused unknown names."""
    return KINDS[name]
