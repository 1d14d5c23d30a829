"""Ground truth for the lint corpus: what compose and vLLM's own parser make of each public compose file.

    python scripts/lint_ground_truth.py                 # every file of tests/data/lint/real/
    python scripts/lint_ground_truth.py FILE.yml ...    # given files (their .expect.yml env is used if any)

For each file: `docker compose config --format json` renders it (with the `.env` its sidecar describes,
every profile on); each vLLM engine's argv (pytest_vllm.lint.engines) is then parsed

- by the real parser of the installed vLLM (`vllm serve`'s own FlexibleArgumentParser), when the image
  runs that release (an unpinned tag, latest/nightly, runs the newest release with a table);
- else against the flag table of the release the image pins (pytest_vllm.lint.versions), and the line
  says which release judged it.

It prints one line per engine: the release, then `ok` or what the parser rejects. Compare with the
findings `scripts/lint_corpus.py -v` prints. Exit 0 (a report, not a gate).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_vllm.backends.compose import compose_command  # noqa: E402
from pytest_vllm.lint import versions  # noqa: E402
from pytest_vllm.lint.composefile import compose_config  # noqa: E402
from pytest_vllm.lint.engines import engine_call  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lint_corpus import cases, spec_of  # noqa: E402


def installed_parser() -> tuple[str, Any] | None:
    """(version, `vllm serve`'s argument parser) of the installed vLLM, or None."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.version import __version__
        try:
            from vllm.entrypoints.launchers.cli_args import make_arg_parser
        except ImportError:
            from vllm.entrypoints.openai.cli_args import make_arg_parser
    except ImportError:
        return None
    return __version__.split("+")[0], make_arg_parser(FlexibleArgumentParser())


def parse_with(parser: Any, args: list[str]) -> str:
    """'ok' or argparse's complaint; a positional model (`vllm serve MODEL`) is given as --model."""
    argv = ["--model", args[0], *args[1:]] if args and not args[0].startswith("-") else list(args)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "rejected"
    except Exception as exc:  # noqa: BLE001 - a value converter that raises is a rejection too
        return f"rejected: {type(exc).__name__}: {exc}"
    return "ok"


def by_table(image: str, args: list[str]) -> tuple[str, str]:
    """(release judged against, 'ok' or the unknown flags) with the per-release tables (lint/versions.py)."""
    choice = versions.choose(image=image)
    unknown = [a for a in args if a.startswith("--") and choice.table.lookup(a.partition("=")[0]).spec is None]
    return choice.describe(), "ok" if not unknown else "unknown: " + " ".join(unknown)


def render(case: Path) -> dict[str, dict[str, Any]] | str:
    spec = spec_of(case) if case.with_suffix(".expect.yml").is_file() else {}
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "docker-compose.yml"
        shutil.copyfile(case, target)
        env = Path(folder) / ".env"
        env.write_text("".join(f"{k}={v}\n" for k, v in (spec.get("env") or {}).items()))
        rendering = compose_config(list(compose_command()), [target], env, {})
    return rendering.services if rendering.services is not None else f"compose refuses: {rendering.stderr}"


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or cases()
    parser = installed_parser()
    print(f"installed vLLM parser: {parser[0] if parser else 'none'}")
    for case in files:
        services = render(case)
        if isinstance(services, str):
            said = [line for line in services.splitlines() if "level=warning" not in line]
            print(f"{case.stem}: {said[0] if said else 'compose refuses'}")
            continue
        engines = {name: engine_call(data) for name, data in services.items()}
        if not any(engines.values()):
            print(f"{case.stem}: no vLLM engine")
        for name, call in engines.items():
            if call is None:
                continue
            image = str(services[name].get("image") or "")
            judged = versions.choose(image=image or None).version  # latest/nightly: the newest table's release
            if parser and judged == parser[0]:
                release, verdict = f"vLLM {parser[0]} parser", parse_with(parser[1], call.args)
            else:
                release, verdict = by_table(image, call.args)
            doubled = f" [`{call.doubled}` doubled]" if call.doubled else ""
            print(f"{case.stem}/{name}: {image or '(build)'} -> {release}: {verdict}{doubled}")
    print(json.dumps({"files": len(files)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
