"""The pytest plugin: options, profile selection, the session-scoped deployment fixture, reports.

    pytest suites/medium --profile=chunked_only_safe

Tests that use `vllm_profile` (directly or through `vllm_deployment` / `vllm_client`) are parametrized
over the selected profiles with session scope, so pytest brings one deployment up, runs every test
against it, tears it down, then moves to the next profile: one GPU set, one deployment at a time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import engine_config, interrupts, multihost
from .backends.base import RunSettings, new_run_id
from .backends.registry import BASE_URL_KIND
from .deployment import Deployment, deployed
from .errors import DeploymentError, PreflightError, ProfileError
from .grid import RANK_METRICS, start_grid
from .gridfile import read_grid_file
from .http import VllmClient
from .profile import Profile, external_profile, known_profiles, load_profile, profile_dirs
from .reports import DeployFailure, RunReport, TestResult, new_run_dir
from .sdk import OpenAIChat
from .session import VllmSession
from .telemetry import Sampler, snapshot

# Plugin modules loaded with this one (fixtures and hooks of their own concept).
pytest_plugins = ["pytest_vllm.history"]

DEFAULT_PROFILE = "cpu_tiny"

CAPABILITY_MEANING = {
    "reasoning_parser": "reasoning (capabilities.reasoning_parser)",
    "tool_parser": "tool calling (capabilities.tool_parser)",
    "vision": "vision (capabilities.vision)",
    "semantic": "meaningful answers (capabilities.semantic; the tiny random model has none)",
    "embeddings": "embeddings (capabilities.embeddings: a pooling model serving /v1/embeddings)",
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
                    help="grid: profile the others are compared with (delta columns); it runs first, and when it "
                         "fails to deploy the grid stops (default: the grid file's `baseline:`).")
    group.addoption("--grid-keep-going", action="store_true",
                    help="grid: run the other profiles even when the baseline fails to deploy (default: abort, as "
                         "the seeds' grid script did).")
    group.addoption("--grid-min-acceleration", type=float, default=1.5, metavar="RATIO",
                    help="grid: acceleration a profile without thresholds.kv_cache_acceleration_min must reach to "
                         "be recommended (default 1.5: a real speed-up, not noise).")
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
                    help="TTFT slowdown against history the gate must catch, 0.10 = 10%% (default: the profile's "
                         "thresholds.regression_tolerance).")
    group.addoption("--acceleration-tolerance", type=float, default=None, metavar="FRACTION",
                    help="loss of MISS/HIT acceleration against history the gate must catch, 0.10 = HIT 10%% "
                         "slower relative to MISS (default: the profile's thresholds.acceleration_tolerance).")
    group.addoption("--regression-confidence", type=float, default=None, metavar="LEVEL",
                    help="confidence a slowdown must be established with, over a workload's three gates together "
                         "(MISS TTFT, HIT TTFT, acceleration), e.g. 0.95 (default: the profile's "
                         "thresholds.regression_confidence).")
    group.addoption("--baseline-runs", type=int, default=5, metavar="N",
                    help="compare with the latest N comparable runs that passed the gate, pooled (default: 5; "
                         "1 = the last run only, as pytest-benchmark compares).")
    group.addoption("--accept-regression", action="store_true",
                    help="report TTFT regressions without failing, and make this run the new baseline.")
    # --- end TTFT history ---
    group.addoption("--soak", type=float, default=None, metavar="MINUTES",
                    help="run the soak suite (suites/medium/test_soak.py): steady load at the profile's "
                         "load.soak_rate_rps for MINUTES; fails on any error, restart, unhealthy /health, error "
                         "line in the server log or memory growth (pytest_vllm.soak). Default: soak skipped.")


def _select_profiles(config: pytest.Config) -> tuple[dict[str, Profile], str | None]:
    """The profiles --profile names, in run order, and the `baseline:` of a grid file among them."""
    base_url = config.getoption("base_url")
    spec = config.getoption("profile")
    dirs = [Path(d) for d in config.getoption("profiles_dir") or []] or profile_dirs(config.rootpath)
    if spec is None and base_url:
        profile = external_profile(base_url)
        return {profile.name: profile}, None
    names: list[str] = []
    grid_baseline = None
    for part in (spec or DEFAULT_PROFILE).split(","):
        part = part.strip()
        if any(ch in part for ch in "*?["):
            matched = [n for n in known_profiles(dirs) if fnmatch.fnmatch(n, part)]
            if not matched:
                raise ProfileError(f"no profile matches '{part}'", file=", ".join(map(str, dirs)),
                                   fix=f"known profiles: {', '.join(known_profiles(dirs))}")
            names += matched
        elif part.endswith((".yml", ".yaml")) and Path(part).is_file() and (grid := read_grid_file(Path(part))):
            names += grid.profiles
            grid_baseline = grid.baseline
        elif part:
            names.append(part)
    profiles: dict[str, Profile] = {}
    for name in names:
        profile = load_profile(name, dirs)
        profiles[profile.name] = profile
    return profiles, grid_baseline


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm_capability(name): skip unless the profile claims this capability "
                                       "(reasoning_parser, tool_parser, vision, semantic, embeddings)")
    config.addinivalue_line("markers", "vllm_language(code): skip unless the profile's capabilities.languages "
                                       "lists this language (en, fr)")
    config.addinivalue_line("markers", "vllm_soak: the test runs --soak minutes longer than timeouts.test")
    profiles: dict[str, Profile] = {}
    profile_error = grid_baseline = None
    try:
        profiles, grid_baseline = _select_profiles(config)
    except ProfileError as exc:
        if config.getoption("profile") is not None:
            raise pytest.UsageError(f"pytest-vllm: {exc}") from None
        profile_error = exc  # only an error if a test actually needs a deployment
    reports_root = Path(config.getoption("reports_dir"))
    run_id = new_run_id()
    run_dir = new_run_dir(reports_root, run_id)
    settings = RunSettings(run_dir=run_dir, run_id=run_id, api_key=config.getoption("api_key"),
                           base_url=config.getoption("base_url"), keep_up=config.getoption("keep_up"),
                           reuse=config.getoption("reuse"), health_timeout=config.getoption("health_timeout"),
                           client_host=config.getoption("client_host"), progress=_progress_writer(config))
    session = VllmSession(profiles, settings, reports_root, RunReport(run_dir=run_dir, reports_root=reports_root),
                          profile_error=profile_error, grid_file_baseline=grid_baseline)
    session.install(config)
    # The signal handlers go back as pytest's very last cleanup (this configure runs before the builtin
    # plugins' ones, so it is popped last): a second Ctrl-C during pytest's own final cleanup (its gc pass)
    # must still find ours, not the default handler's traceback.
    config.add_cleanup(lambda: _restore_signals(config))
    config.pluginmanager.register(ResultRecorder(session), "vllm-result-recorder")
    if config.getoption("hosts"):
        multihost.start(config, session)  # the grid spread over Docker hosts: child runs, one report
    else:
        start_grid(config, session)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Ctrl-C and SIGTERM (CI cancelling a job) unwind the run and stop what it started (pytest_vllm.interrupts);
    # one that lands while a deployment stops ends the run after the current test instead.
    if not hasattr(session.config, "workerinput") and \
            interrupts.install(on_deferred=lambda why: setattr(session, "shouldstop", why)):
        session.config.pluginmanager.register(interrupts.ShortInterruptTrace(session.config), "vllm-interrupts")


def _restore_signals(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("vllm-interrupts"):  # this run installed the handlers: give them back
        interrupts.end_process_if_interrupted()  # an interrupted run has nothing left to do: no teardown wait
        interrupts.restore()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = VllmSession.of(config)
    lines = [snapshot(with_processes=False).header()] if session.profiles else []
    for p in session.profiles.values():
        backend = BASE_URL_KIND.name if session.settings.base_url else p.backend
        lines.append(f"vllm profile: {p.name} ({p.path}), backend {backend}, endpoint "
                     f"{session.settings.endpoint(p)}, model {p.served_name or '(from /v1/models)'}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vllm_profile" not in metafunc.fixturenames:
        return
    session = VllmSession.of(metafunc.config)
    if session.profile_error is not None:
        raise pytest.UsageError(f"pytest-vllm: {session.profile_error}")
    names = list(session.profiles)
    metafunc.parametrize("vllm_profile", names, indirect=True, scope="session", ids=names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = VllmSession.of(config)
    profiles = session.profiles
    for item in items:
        name = _item_profile(item)
        if name:
            session.item_profile[item.nodeid] = name
        if name in profiles and item.get_closest_marker("timeout") is None:
            soak_s = 60 * (config.getoption("soak") or 0) if item.get_closest_marker("vllm_soak") else 0
            # func_only: the deployment wait has its own (longer) timeout and must not count here.
            item.add_marker(pytest.mark.timeout(profiles[name].timeouts.test + soak_s, func_only=True))


def _item_profile(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("vllm_profile") if callspec else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    name = _item_profile(item)
    if name is None:
        return
    profile = VllmSession.of(item.config).profiles[name]
    for marker in item.iter_markers("vllm_capability"):
        for capability in marker.args:
            if not getattr(profile.capabilities, capability, None):
                pytest.skip(f"profile '{name}' does not claim {CAPABILITY_MEANING.get(capability, capability)}")
    languages = profile.capabilities.languages
    for marker in item.iter_markers("vllm_language"):
        if marker.args[0] not in languages:
            pytest.skip(f"profile '{name}' does not select language '{marker.args[0]}' "
                        f"(capabilities.languages: {languages})")


def selected_profiles(config: pytest.Config) -> list[Profile]:
    """The profiles this run tests (suites size their parameters from them, e.g. concurrency levels)."""
    return list(VllmSession.of(config).profiles.values())


@pytest.fixture(scope="session")
def vllm_profile(request: pytest.FixtureRequest) -> Profile:
    """The profile under test (parametrized over --profile)."""
    return VllmSession.of(request.config).profiles[request.param]


@pytest.fixture(scope="session")
def vllm_deployment(vllm_profile: Profile, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The healthy deployment of the profile: brought up once per profile, always torn down."""
    session = VllmSession.of(request.config)
    report = session.report
    failure = ""
    sampler = Sampler().start()  # GPU memory/utilisation through the session; "unavailable" without NVML
    try:
        with deployed(vllm_profile, session.settings) as deployment:
            deployment.telemetry = sampler
            report.profiles[vllm_profile.name] = deployment.describe()
            yield deployment
            report.profiles[vllm_profile.name]["gpu"] = sampler.result().to_dict()
    except (DeploymentError, PreflightError) as exc:
        report.deploy_failures[vllm_profile.name] = DeployFailure.of(exc)
        failure = str(exc)
    finally:
        sampler.stop()
    if failure:  # outside the except block: no "during handling of the above exception" noise
        raise DeploymentFailed(vllm_profile.name, failure)


class DeploymentFailed(pytest.fail.Exception):
    """The session fixture's failure: pytest re-raises it for every test of the profile; shown in full once."""

    def __init__(self, profile: str, failure: str) -> None:
        super().__init__(f"deployment of profile '{profile}' failed:\n{failure}", pytrace=False)
        self.profile = profile


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed deployment is reported in full on its first test; the others get one line pointing there."""
    report = yield
    if call.when == "setup" and call.excinfo is not None and isinstance(call.excinfo.value, DeploymentFailed):
        profile = call.excinfo.value.profile
        first = VllmSession.of(item.config).failure_shown.setdefault(profile, item.nodeid)
        if first != item.nodeid:
            report.longrepr = f"deployment of profile '{profile}' failed: shown in full at {first}"
    return report


@pytest.fixture(scope="session")
def vllm_client(vllm_deployment: Deployment) -> VllmClient:
    """An HTTP client on the deployment (API key and served model filled in)."""
    return vllm_deployment.client()


@pytest.fixture(scope="session")
def vllm_openai(vllm_deployment: Deployment) -> Iterator[OpenAIChat]:
    """Chat completions through the official OpenAI client (key, timeout, no retries), as applications call."""
    chat = vllm_deployment.openai()
    yield chat
    chat.close()


@pytest.fixture(scope="session")
def vllm_report(request: pytest.FixtureRequest) -> RunReport:
    """The run's report: suites add measurements with `vllm_report.add_measurement(profile, name, data)`."""
    return VllmSession.of(request.config).report


class ResultRecorder:
    """Registered per run: records each test's outcome and profile into the run report."""

    def __init__(self, session: VllmSession) -> None:
        self.session = session

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
        profile = self.session.item_profile.get(report.nodeid)
        self.session.report.results.append(
            TestResult(report.nodeid, profile, outcome, round(report.duration, 3), message))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = VllmSession.of(config).report
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
