"""The pytest plugin: options, profile selection, the session-scoped deployment fixture, reports.

    pytest suites/medium --profile=chunked_only_safe

Tests that use `vllm_profile` (directly or through `vllm_deployment` / `vllm_client`) are parametrized
over the selected profiles with session scope, so pytest brings one deployment up, runs every test
against it, tears it down, then moves to the next profile: one GPU set, one deployment at a time.
"""

from __future__ import annotations

import fnmatch
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from . import engine_config
from .backends.base import RunSettings
from .deployment import Deployment, deployed
from .errors import DeploymentError, PreflightError, ProfileError
from .grid import RANK_METRICS, STATE_FILE, GridRecorder, GridState
from .http import VllmClient
from .profile import Profile, external_profile, known_profiles, load_profile, profile_dirs
from .reports import RunReport, TestResult, new_run_dir
from .telemetry import Sampler, snapshot

# Plugin modules loaded with this one (fixtures and hooks of their own concept).
pytest_plugins = ["pytest_vllm.history"]

DEFAULT_PROFILE = "cpu_tiny"
PROFILES = pytest.StashKey[dict[str, Profile]]()
PROFILE_ERROR = pytest.StashKey[ProfileError | None]()
SETTINGS = pytest.StashKey[RunSettings]()
REPORT = pytest.StashKey[RunReport]()
ITEM_PROFILE = pytest.StashKey[dict[str, str]]()  # test node id -> profile name

CAPABILITY_MEANING = {
    "reasoning_parser": "reasoning (capabilities.reasoning_parser)",
    "tool_parser": "tool calling (capabilities.tool_parser)",
    "vision": "vision (capabilities.vision)",
    "semantic": "meaningful answers (capabilities.semantic; the tiny random model has none)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm", "pytest-vllm: validate a vLLM deployment")
    group.addoption("--profile", default=None, metavar="NAME|PATH[,...]",
                    help="deployment profile(s) to test: a name from profiles/, a YAML path, a comma-separated "
                         f"list or a glob (cpu_grid_*). Several = one deployment after another. Default: "
                         f"{DEFAULT_PROFILE} (real vLLM on CPU with a tiny model, no GPU needed).")
    group.addoption("--base-url", default=None, metavar="URL",
                    help="test a server that is already running (e.g. http://127.0.0.1:8000); nothing is "
                         "started or stopped. With --profile, the profile's expectations still apply.")
    group.addoption("--api-key", default=None, metavar="KEY",
                    help="API key for the server; default: the variable named by the profile's auth.api_key_env "
                         "(VLLM_API_KEY), else that variable in the profile's env file or ./.env.")
    group.addoption("--keep-up", action="store_true",
                    help="leave the deployment running after the run (for debugging); default: always torn down.")
    group.addoption("--reuse", action="store_true",
                    help="attach to a deployment of the same profile that is already up instead of starting one "
                         "(it is then left running).")
    group.addoption("--health-timeout", type=float, default=None, metavar="SECONDS",
                    help="how long to wait for the deployment to become healthy (default: the profile's "
                         "timeouts.health, 900 s).")
    group.addoption("--reports-dir", default="reports", metavar="DIR",
                    help="where summaries (JSON + Markdown), server logs and benchmark history go "
                         "(default: reports/). For JUnit XML add pytest's own --junitxml=reports/junit.xml.")
    group.addoption("--resume", action="store_true",
                    help="grid: skip the profiles an interrupted grid already finished (state in "
                         "<reports-dir>/grid-state.json) and report on all of them.")
    group.addoption("--grid-rank-by", default="acceleration", choices=sorted(RANK_METRICS),
                    help="grid: metric that ranks the profiles in reports/grid-report.md (default: acceleration, "
                         "then TTFT on a hit).")
    group.addoption("--grid-baseline", default=None, metavar="PROFILE",
                    help="grid: profile the others are compared with (delta columns).")
    group.addoption("--hosts", default=None, metavar="CTX[,CTX...]",
                    help="grid over several Docker hosts: Docker context names or engine URLs (ssh://user@gpu1, "
                         "unix:///run/docker.sock). One deployment per host at a time, each profile handed to the "
                         "next free host, one grid report. Compose backend profiles only.")
    group.addoption("--client-host", default=None, metavar="ADDRESS",
                    help="address the test client uses to reach the deployment, when it differs from the profile's "
                         "deployment.host (set by --hosts for each child run: the host's address).")
    group.addoption("--compare-across-gpus", action="store_true",
                    help="grid: compute deltas against the baseline even for profiles measured on another GPU model.")
    group.addoption("--profiles-dir", action="append", default=None, metavar="DIR",
                    help="where profile names are looked up (default: <rootdir>/profiles); repeatable.")
    # --- TTFT history and regression gate (pytest_vllm.history, pytest_vllm.regression) ---
    group.addoption("--no-history", action="store_true",
                    help="do not save TTFT series to the benchmark history nor compare them with it. By default "
                         "they go through pytest-benchmark to <reports-dir>/benchmarks (--benchmark-storage "
                         "overrides) and a regression against the history fails the test that measured it.")
    group.addoption("--regression-tolerance", type=float, default=None, metavar="FRACTION",
                    help="allowed TTFT slowdown against history, 0.10 = 10%% (default: the profile's "
                         "thresholds.regression_tolerance).")
    group.addoption("--regression-confidence", type=float, default=None, metavar="LEVEL",
                    help="confidence the slowdown must be established with, e.g. 0.95 (default: the profile's "
                         "thresholds.regression_confidence).")
    group.addoption("--baseline-runs", type=int, default=3, metavar="N",
                    help="compare with the latest N comparable runs that passed the gate, pooled (default: 3; "
                         "1 = the last run only, as pytest-benchmark compares).")
    group.addoption("--accept-regression", action="store_true",
                    help="report TTFT regressions without failing, and make this run the new baseline.")
    # --- end TTFT history ---


def _select_profiles(config: pytest.Config) -> dict[str, Profile]:
    base_url = config.getoption("base_url")
    spec = config.getoption("profile")
    dirs = [Path(d) for d in config.getoption("profiles_dir") or []] or profile_dirs(config.rootpath)
    if spec is None and base_url:
        return {"external": external_profile(base_url)}
    names: list[str] = []
    for part in (spec or DEFAULT_PROFILE).split(","):
        part = part.strip()
        if any(ch in part for ch in "*?["):
            matched = [n for n in known_profiles(dirs) if fnmatch.fnmatch(n, part)]
            if not matched:
                raise ProfileError(f"no profile matches '{part}'", file=", ".join(map(str, dirs)),
                                   fix=f"known profiles: {', '.join(known_profiles(dirs))}")
            names += matched
        elif part.endswith((".yml", ".yaml")) and Path(part).is_file() and "grid" in (_yaml(Path(part)) or {}):
            names += _yaml(Path(part))["grid"]
        elif part:
            names.append(part)
    profiles: dict[str, Profile] = {}
    for name in names:
        profile = load_profile(name, dirs)
        profiles[profile.name] = profile
    return profiles


def _yaml(path: Path) -> Any:
    import yaml
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None  # not a grid file: load_profile reports the syntax error with file:line
    return data if isinstance(data, dict) else None


def _progress_writer(config: pytest.Config) -> Any:
    """Progress lines reach the terminal even while pytest captures output (long waits must show)."""
    def write(line: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            print(line, flush=True)
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)
    return write


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (CI cancelling a job, `docker stop`, systemd) then unwinds like Ctrl-C: fixtures tear down.
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm_capability(name): skip unless the profile claims this capability "
                                       "(reasoning_parser, tool_parser, vision, semantic)")
    config.stash[PROFILE_ERROR] = None
    try:
        config.stash[PROFILES] = _select_profiles(config)
    except ProfileError as exc:
        if config.getoption("profile") is not None:
            raise pytest.UsageError(f"pytest-vllm: {exc}") from None
        config.stash[PROFILES] = {}
        config.stash[PROFILE_ERROR] = exc  # only an error if a test actually needs a deployment
    reports_dir = Path(config.getoption("reports_dir"))
    settings = RunSettings(reports_dir=reports_dir, api_key=config.getoption("api_key"),
                           base_url=config.getoption("base_url"), keep_up=config.getoption("keep_up"),
                           reuse=config.getoption("reuse"), health_timeout=config.getoption("health_timeout"),
                           client_host=config.getoption("client_host"), progress=_progress_writer(config))
    settings.reports_dir = new_run_dir(reports_dir, settings.run_id)
    config.stash[SETTINGS] = settings
    config.stash[REPORT] = RunReport(run_dir=settings.reports_dir)
    config.stash[ITEM_PROFILE] = {}
    config.pluginmanager.register(ResultRecorder(config), "vllm-result-recorder")
    _start_grid(config, reports_dir)
    if not hasattr(config, "workerinput"):
        try:
            signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        except ValueError:  # not the main thread (embedded pytest): leave signals alone
            pass


def _start_grid(config: pytest.Config, reports_dir: Path) -> None:
    """Several profiles (or --resume): record each finished profile and rank them at the end."""
    profiles = config.stash[PROFILES]
    hosts = _hosts(config, profiles)
    if len(profiles) < 2 and not config.getoption("resume") and not hosts:
        return
    path = reports_dir / STATE_FILE
    if config.getoption("resume"):
        state = GridState.load(path, list(profiles))
        done = state.completed() & set(profiles)
        if done:
            config.stash[SETTINGS].progress(f"[vllm] --resume: skipping finished profiles {', '.join(sorted(done))}")
        config.stash[PROFILES] = {n: p for n, p in profiles.items() if n not in done}
    else:
        state = GridState(path, list(profiles))
        state.save()
    recorder = GridRecorder(config, state, profiles, config.getoption("grid_rank_by"),
                            config.getoption("grid_baseline"), config.getoption("compare_across_gpus"))
    config.pluginmanager.register(recorder, "vllm-grid")
    if hosts:
        from .multihost import MultiHostGrid
        config.pluginmanager.register(MultiHostGrid(config, hosts, config.stash[PROFILES], state,
                                                    config.stash[SETTINGS].progress), "vllm-multihost")


def _hosts(config: pytest.Config, profiles: dict[str, Profile]) -> list[Any]:
    """--hosts resolved (contexts to engine URLs); only compose profiles can be sent to another engine."""
    if not config.getoption("hosts"):
        return []
    from .hosts import HostError, parse_hosts
    try:
        hosts = parse_hosts(config.getoption("hosts"))
    except HostError as exc:
        raise pytest.UsageError(f"pytest-vllm: {exc}") from None
    others = [f"{n} ({p.backend})" for n, p in profiles.items() if p.backend != "compose"]
    if others:
        raise pytest.UsageError(f"pytest-vllm: --hosts runs compose deployments on Docker hosts; these profiles "
                                f"use another backend: {', '.join(others)}")
    return hosts


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [snapshot(with_processes=False).header()] if config.stash[PROFILES] else []
    for p in config.stash[PROFILES].values():
        backend = "external" if config.getoption("base_url") else p.backend
        endpoint = config.getoption("base_url") or p.deployment.get("base_url") or \
            f"http://{p.deployment['host']}:{p.deployment['port']}"
        lines.append(f"vllm profile: {p.name} ({p.path}), backend {backend}, endpoint {endpoint}, "
                     f"model {p.served_name or '(from /v1/models)'}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vllm_profile" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if config.stash[PROFILE_ERROR] is not None:
        raise pytest.UsageError(f"pytest-vllm: {config.stash[PROFILE_ERROR]}")
    names = list(config.stash[PROFILES])
    metafunc.parametrize("vllm_profile", names, indirect=True, scope="session", ids=names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    profiles = config.stash[PROFILES]
    for item in items:
        name = _item_profile(item)
        if name:
            config.stash[ITEM_PROFILE][item.nodeid] = name
        if name in profiles and item.get_closest_marker("timeout") is None:
            # func_only: the deployment wait has its own (longer) timeout and must not count here.
            item.add_marker(pytest.mark.timeout(profiles[name].timeouts["test"], func_only=True))


def _item_profile(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("vllm_profile") if callspec else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    name = _item_profile(item)
    if name is None:
        return
    profile = item.config.stash[PROFILES][name]
    for marker in item.iter_markers("vllm_capability"):
        for capability in marker.args:
            if not profile.capabilities.get(capability):
                pytest.skip(f"profile '{name}' does not claim {CAPABILITY_MEANING.get(capability, capability)}")


@pytest.fixture(scope="session")
def vllm_profile(request: pytest.FixtureRequest) -> Profile:
    """The profile under test (parametrized over --profile)."""
    return request.config.stash[PROFILES][request.param]


@pytest.fixture(scope="session")
def vllm_deployment(vllm_profile: Profile, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The healthy deployment of the profile: brought up once per profile, always torn down."""
    config = request.config
    report = config.stash[REPORT]
    failure = ""
    sampler = Sampler().start()  # GPU memory/utilisation through the session; "unavailable" without NVML
    try:
        with deployed(vllm_profile, config.stash[SETTINGS]) as deployment:
            deployment.telemetry = sampler
            report.profiles[vllm_profile.name] = deployment.describe()
            yield deployment
            report.profiles[vllm_profile.name]["gpu"] = sampler.result().to_dict()
    except (DeploymentError, PreflightError) as exc:
        report.deploy_failures[vllm_profile.name] = failure = str(exc)
    finally:
        sampler.stop()
    if failure:  # outside the except block: no "during handling of the above exception" noise
        pytest.fail(f"deployment of profile '{vllm_profile.name}' failed:\n{failure}", pytrace=False)


@pytest.fixture(scope="session")
def vllm_client(vllm_deployment: Deployment) -> VllmClient:
    """An HTTP client on the deployment (API key and served model filled in)."""
    return vllm_deployment.client()


@pytest.fixture(scope="session")
def vllm_report(request: pytest.FixtureRequest) -> RunReport:
    """The run's report: suites add measurements with `vllm_report.add_measurement(profile, name, data)`."""
    return request.config.stash[REPORT]


class ResultRecorder:
    """Registered per run: records each test's outcome and profile into the run report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
            return
        outcome = report.outcome if report.when == "call" else ("error" if report.failed else "skipped")
        message = ""
        if report.failed:  # the assertion's own words (pytest's "E " lines), not the traceback
            text = report.longreprtext
            said = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
            message = "\n".join(said[:20]) if said else text[-2000:]
        elif report.skipped and isinstance(report.longrepr, tuple):
            message = report.longrepr[2]
        profile = self.config.stash[ITEM_PROFILE].get(report.nodeid)
        self.config.stash[REPORT].results.append(
            TestResult(report.nodeid, profile, outcome, round(report.duration, 3), message))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash[REPORT]
    if not (report.profiles or report.deploy_failures):
        return  # no deployment was involved (e.g. the project's own unit tests)
    path = report.write()
    terminalreporter.section("vllm")
    for name, d in report.profiles.items():
        terminalreporter.write_line(f"{name}: {d['backend']} {d['endpoint']} model {d['model']} "
                                    f"vLLM {d.get('vllm_version') or '?'}; timings {d.get('timings')}")
        terminalreporter.write_line(f"  effective: {engine_config.summary(d.get('engine_config') or {})}")
    for name in report.deploy_failures:
        terminalreporter.write_line(f"{name}: deployment FAILED (see {path.parent / 'summary.md'})")
    for warning in report.warnings:
        terminalreporter.write_line(f"warning: {warning}")
    terminalreporter.write_line(f"reports: {path.parent}/summary.md, summary.json")
