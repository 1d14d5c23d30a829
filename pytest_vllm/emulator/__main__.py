"""`python -m pytest_vllm.emulator --port 8077 --fault think_leak`: run the emulator in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from .config import REASONING_FIELDS, EmulatedModel
from .faults import FAULTS, UnknownFault, parse_faults
from .latency import LatencyModel
from .server import EmulatorServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_vllm.emulator",
                                description="pytest-vllm emulator: a vLLM-shaped test server (not vLLM).",
                                epilog="faults: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8077)
    p.add_argument("--fault", action="append", default=[], metavar="NAME", help="repeatable; see below")
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--served-model-name", default=EmulatedModel.served_name)
    p.add_argument("--max-model-len", type=int, default=EmulatedModel.max_model_len)
    p.add_argument("--reasoning-parser", default=EmulatedModel.reasoning_parser, help="'' for none")
    p.add_argument("--tool-call-parser", default=EmulatedModel.tool_parser, help="'' for none")
    p.add_argument("--text-only", action="store_true", help="a model without vision: images get a 400")
    p.add_argument("--max-images", type=int, default=EmulatedModel.max_images)
    p.add_argument("--no-enable-prefix-caching", action="store_true")
    p.add_argument("--reasoning-field", choices=REASONING_FIELDS, default=EmulatedModel.reasoning_field)
    p.add_argument("--base-ms", type=float, default=LatencyModel.base_ms)
    p.add_argument("--prefill-ms-per-token", type=float, default=LatencyModel.prefill_ms_per_token)
    p.add_argument("--decode-ms-per-token", type=float, default=LatencyModel.decode_ms_per_token)
    p.add_argument("--block-size", type=int, default=LatencyModel.block_size)
    p.add_argument("--noise-cv", type=float, default=LatencyModel.noise_cv)
    p.add_argument("--seed", type=int, default=LatencyModel.seed)
    p.add_argument("--slow-start-s", type=float, default=3600.0)
    p.add_argument("--degrade-after-s", type=float, default=120.0, help="fault 'degrading': when the engine fails")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.fault)
    except UnknownFault as exc:
        parser.error(str(exc))
    model = EmulatedModel(served_name=args.served_model_name, max_model_len=args.max_model_len,
                          reasoning_parser=args.reasoning_parser or None, tool_parser=args.tool_call_parser or None,
                          vision=not args.text_only, max_images=args.max_images,
                          prefix_caching=not args.no_enable_prefix_caching, reasoning_field=args.reasoning_field)
    latency = LatencyModel(base_ms=args.base_ms, prefill_ms_per_token=args.prefill_ms_per_token,
                           decode_ms_per_token=args.decode_ms_per_token, block_size=args.block_size,
                           noise_cv=args.noise_cv, seed=args.seed)
    stop = threading.Event()
    # A crashed process exits non-zero at once, as a dead vLLM would.
    server = EmulatorServer(args.host, args.port, faults=faults, api_key=args.api_key, latency=latency,
                            model=model, slow_start_s=args.slow_start_s, log_path=args.log_file,
                            degrade_after_s=args.degrade_after_s,
                            on_crash=lambda: os._exit(70))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
