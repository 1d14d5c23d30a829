"""Preflight lint: every rule is caught on a bad example, the shipped configurations lint clean, exit codes.

The corpus is tests/data/lint/bad/: one file per case, named after the rule it must trigger, with
`# expect: RULE...` (ids that must be among the findings) and optionally `# env: FILE|none` (the env
file, as `--env-file`; compose cases default to _good.env). Files starting with '_' are shared parts.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_vllm import lint_cli
from pytest_vllm.capacity import capacity_findings
from pytest_vllm.errors import PreflightError, ProfileError
from pytest_vllm.lint import (
    RULES,
    Finding,
    LintInputError,
    Severity,
    compose_rules,
    flags,
    lint_compose,
    lint_profile,
    lint_target,
    versions,
)
from pytest_vllm.profile import known_profiles, load_profile

from conftest import DATA, PROFILES, REPO

BAD = DATA / "lint" / "bad"
# Rules whose severity follows the context: a versioned flag rule is a warning when the image runs another
# vLLM release than the table's; a missing key is an error only when a profile's run needs it; ...
SEVERITY_DEPENDS_ON_CONTEXT = ("VC006", "VC007", "VC010", "VC013", "VF001", "VG005", "VG008",
                               "VP002", "VP004")
CAPACITY_CASES_ELSEWHERE = {"VG001", "VG002", "VG003", "VG004", "VG005", "VG006"}
GPU_PROFILES = ["medium", "medium_vl", "chunked_only_safe", "safe_conservative", "optimized_balanced",
                "aggressive_cache", "baseline", "prefix_only_092", "prefix_only_095", "combined_balanced"]
# variables the corpus and the shipped compose files read: the developer's shell must not change results
CORPUS_VARIABLES = ["VLLM_API_KEY_MEDIUM", "VLLM_API_KEY_MEDIUM_VL", "VLLM_PORT_MEDIUM", "VLLM_PORT_MEDIUM_VL",
                    "HF_CACHE_DIR", "HF_TOKEN", "CUDA_VISIBLE_DEVICES_MEDIUM", "CUDA_VISIBLE_DEVICES_MEDIUM_VL"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for var in CORPUS_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # no checkpoint found locally


@pytest.fixture
def key_env(tmp_path) -> Path:
    """An env file as a user fills it from profiles/env/*.env.example."""
    path = tmp_path / "keys.env"
    path.write_text(f"VLLM_API_KEY_MEDIUM={secrets.token_urlsafe(32)}\n"
                    f"VLLM_API_KEY_MEDIUM_VL={secrets.token_urlsafe(32)}\n")
    return path


def cases() -> list[Path]:
    return [p for p in sorted(BAD.glob("*.yml")) if not p.name.startswith("_")]


def directives(case: Path) -> tuple[set[str], Path | None]:
    lines = case.read_text().splitlines()
    expected = next(line.split(":", 1)[1].split() for line in lines if line.startswith("# expect:"))
    env = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("# env:")), None)
    if env is None:
        env = "_good.env" if any(line.startswith("services:") for line in lines) else "none"
    return set(expected), None if env == "none" else BAD / env


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.stem)
def test_bad_case_is_caught_with_its_rule_id(case: Path):
    expected, env_file = directives(case)
    findings = lint_target(str(case), [PROFILES], env_file)
    assert expected <= {f.rule for f in findings}, "\n".join(map(str, findings)) or "no finding"
    for finding in findings:
        assert finding.file and finding.message and finding.fix, finding
        assert finding.severity is RULES[finding.rule].severity or finding.rule in SEVERITY_DEPENDS_ON_CONTEXT


def test_every_rule_has_a_bad_case():
    """Capacity rules VG001-VG006 need GPUs to check against: tests/test_capacity.py has their cases."""
    covered = {rule for case in cases() for rule in directives(case)[0]}
    assert sorted(set(RULES) - covered - CAPACITY_CASES_ELSEWHERE) == []


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_shipped_gpu_profiles_lint_clean(name: str, key_env: Path):
    assert beyond_implicit_defaults(lint_target(name, [PROFILES], key_env)) == []


def beyond_implicit_defaults(findings: list) -> list:
    """The shipped profiles leave engine defaults implicit where the seeds did (their champion has no
    prefix-caching flag): the lint says so (VP006, info), and that is all it may say about them."""
    return [f for f in findings if not (f.rule == "VP006" and f.severity is Severity.INFO)]


def test_the_champion_as_run_is_told_that_prefix_caching_is_on(key_env: Path):
    findings = [f for f in lint_target("chunked_only_safe", [PROFILES], key_env) if f.rule == "VP006"]
    assert [f.key for f in findings] == ["server.enable-prefix-caching"]
    assert "effectively ON" in findings[0].message and "does not disable it" in findings[0].message


@pytest.mark.parametrize("compose_file", ["medium.yml", "medium_vl.yml"])
def test_shipped_compose_files_lint_clean_as_users_run_them(compose_file: str, key_env: Path):
    assert beyond_implicit_defaults(lint_compose(PROFILES / "compose" / compose_file, key_env)) == []


def test_no_shipped_profile_has_a_blocking_finding(key_env: Path):
    """The plugin lints before `up`: no profile under profiles/ may be stopped by its own lint.

    GPU capacity is included, on the hardware each profile declares (not this machine's).
    """
    for name in known_profiles([PROFILES]):
        blocking = [f for f in lint_target(name, [PROFILES], key_env, [capacity_findings]) if f.blocking]
        assert blocking == [], f"{name}:\n" + "\n".join(map(str, blocking))


def test_env_example_is_flagged_as_a_placeholder():
    findings = beyond_implicit_defaults(lint_compose(PROFILES / "compose" / "medium.yml",
                                                     PROFILES / "env" / "medium.env.example"))
    assert [(f.rule, f.severity) for f in findings] == [("VC007", Severity.WARNING)]
    assert "placeholder" in findings[0].message


def test_missing_env_file_says_to_copy_the_example():
    findings = beyond_implicit_defaults(lint_target("medium", [PROFILES]))
    assert [f.rule for f in findings] == ["VP010"]
    assert "medium.env.example" in findings[0].fix


def test_key_resolved_by_the_caller_is_the_one_checked(key_env: Path):
    profile = load_profile("medium", [PROFILES])
    findings = beyond_implicit_defaults(lint_profile(profile, key_env, api_key="short"))
    assert [f.rule for f in findings] == ["VC007"] and "5 characters" in findings[0].message


def test_findings_name_file_key_and_fix():
    finding = next(f for f in lint_target(str(BAD / "VF003_mm_encoder_tp_mode.yml"), [PROFILES]) if f.rule == "VF003")
    assert finding.file.endswith("VF003_mm_encoder_tp_mode.yml")
    assert finding.key == "server.mm-encoder-tp-mode"
    assert "'replicate'" in finding.message and finding.fix == "use one of: data, weights"
    assert str(finding).startswith(f"{finding.file}: server.mm-encoder-tp-mode: error VF003: ")


def test_retired_rope_scaling_points_to_hf_overrides():
    finding = next(f for f in lint_target(str(BAD / "VF001_rope_scaling_flag.yml"), [PROFILES]))
    assert finding.rule == "VF001" and "hf-overrides" in finding.fix and "rope_parameters" in finding.fix


def test_comma_in_device_id_gives_the_corrected_list():
    findings = lint_compose(BAD / "VC017_device_ids_variable.yml", BAD / "_cuda_devices.env")
    vc017 = next(f for f in findings if f.rule == "VC017")
    assert "${CUDA_VISIBLE_DEVICES_MEDIUM}" in vc017.message and vc017.fix == "write device_ids: ['0', '1']"
    assert vc017.severity is Severity.WARNING and "CDI" in vc017.message
    assert vc017.file.endswith("VC017_device_ids_variable.yml:17")  # the line device_ids is written on


def test_extra_rules_plug_in_and_see_the_hardware_override(key_env: Path):
    seen = []

    def capacity(profile) -> list[Finding]:
        seen.append(dict(profile.hardware))
        return [Finding("VG001", Severity.ERROR, str(profile.path), "model.parameters_b", "does not fit", "fix")]

    findings = lint_target("medium", [PROFILES], key_env, [capacity], {"gpus": 1, "gpu_memory_gib": 16.0})
    assert seen == [{"gpus": 1, "gpu_memory_gib": 16.0, "device_ids": ["0", "1"]}]
    assert {"VG001", "VP004"} <= {f.rule for f in findings}  # TP 2 on one GPU: the profile's own rule too


def test_compose_missing_is_an_info_not_an_error(monkeypatch, key_env: Path):
    def no_compose() -> tuple[str, ...]:
        raise PreflightError("Docker Compose v2 was not found")

    monkeypatch.setattr("pytest_vllm.backends.compose.compose_command", no_compose)
    findings = beyond_implicit_defaults(lint_compose(PROFILES / "compose" / "medium.yml", key_env))
    assert [(f.rule, f.severity) for f in findings] == [("VC013", Severity.INFO)]


def test_unusable_inputs_raise(tmp_path: Path):
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        lint_target("nope", [PROFILES])
    with pytest.raises(LintInputError, match="compose file not found"):
        lint_compose(tmp_path / "absent.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  a: [\n")
    with pytest.raises(LintInputError, match=r"broken.yml:3:\d+: YAML syntax error"):
        lint_compose(broken)


# --- flag reading -------------------------------------------------------------------------------------

def test_argv_is_grouped_as_argparse_does():
    positional, uses = flags.split_argv(["Qwen/Qwen3-32B-AWQ", "-tp", "2", "--enable-prefix-caching",
                                         "--api-key", "a", "b", "--max-model-len=128k", "--max-model-len", "-1"],
                                        lambda i: f"[{i}]", versions.choose("0.32.0"))
    assert positional == "Qwen/Qwen3-32B-AWQ"
    assert [(u.found.spec.name, u.values) for u in uses] == [
        ("tensor-parallel-size", ["2"]), ("enable-prefix-caching", []), ("api-key", ["a", "b"]),
        ("max-model-len", ["128k"]), ("max-model-len", ["-1"])]
    assert flags.check_flags(uses, "f", in_profile=False, version=versions.choose("0.32.0"))[0].rule == "VF006"


def test_lookup_understands_underscores_negation_and_aliases():
    table = versions.choose("0.32.0").table
    assert table.lookup("--gpu_memory_utilization").spec.name == "gpu-memory-utilization"
    assert table.lookup("--no-enable-prefix-caching").negated
    assert table.lookup("-q").spec.name == "quantization"
    assert table.lookup("--q").spec is None  # aliases keep their dashes, as argparse does
    assert table.lookup("--enable-prefix").abbreviation_of == "enable-prefix-caching"
    assert table.lookup("--rope-scaling").spec is None


# --- command line ---------------------------------------------------------------------------------------

def test_cli_exit_0_when_clean(capsys, key_env: Path):
    assert lint_cli.main(["medium", "medium_vl", "--env-file", str(key_env), "--rootdir", str(REPO)]) == 0
    out = capsys.readouterr().out
    # capacity fits (VG003); prefix caching left implicit as the seeds ran it (VP006)
    assert "medium: 0 errors, 0 warnings, 2 infos" in out and "info VG003" in out and "info VP006" in out


def test_cli_exit_0_with_infos_only(capsys):
    assert lint_cli.main(["cpu_tiny", "--rootdir", str(REPO)]) == 0
    assert "info VP006" in capsys.readouterr().out


def test_cli_capacity_uses_the_gpus_given(capsys, key_env: Path):
    """The CLI runs the capacity rules by default; --gpus/--gpu-memory replace the profile's hardware."""
    argv = ["medium", "--env-file", str(key_env), "--rootdir", str(REPO), "--gpus", "2", "--gpu-memory", "16GiB"]
    assert lint_cli.main(argv) == 1
    assert "error VG00" in capsys.readouterr().out


def test_cli_exit_1_on_findings(capsys):
    assert lint_cli.main([str(BAD / "VC001_device_id_unset.yml"), "--env-file", str(BAD / "_good.env")]) == 1
    assert "error VC001" in capsys.readouterr().out


def test_cli_fail_on_sets_the_severity_that_fails(capsys):
    """device_ids ['0,1'] is a warning: exit 0 by default (preflight blocks on errors), 1 with --fail-on warning."""
    argv = [str(BAD / "VC017_device_ids_comma.yml"), "--env-file", str(BAD / "_good.env")]
    assert lint_cli.main(argv) == 0
    assert "warning VC017" in capsys.readouterr().out
    assert lint_cli.main([*argv, "--fail-on", "warning"]) == 1


def test_cli_json_report(capsys):
    import json
    argv = [str(BAD / "VC001_device_id_unset.yml"), "--env-file", str(BAD / "_good.env"), "--format", "json"]
    assert lint_cli.main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["exit_status"] == 1 and report["fail_on"] == "error"
    found = report["targets"][0]["findings"]
    assert {"rule": "VC001", "severity": "error"}.items() <= next(f for f in found if f["rule"] == "VC001").items()


def test_cli_exit_2_on_unusable_input(capsys, tmp_path: Path):
    assert lint_cli.main(["no_such_profile", "--rootdir", str(REPO)]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'no_such_profile'" in err and "known profiles:" in err and "medium" in err
    broken = tmp_path / "broken.yml"
    broken.write_text("server:\n  gpu-memory-utilization: [0.85\n")
    assert lint_cli.main([str(broken)]) == 2
    assert "broken.yml:3:" in capsys.readouterr().err
    assert lint_cli.main([]) == 2


def test_cli_unusable_target_wins_over_findings(capsys):
    assert lint_cli.main([str(BAD / "VC012_container_name.yml"), "no_such_profile", "--rootdir", str(REPO)]) == 2


def test_cli_lists_rules(capsys):
    assert lint_cli.main(["--list-rules"]) == 0
    out = capsys.readouterr().out
    assert all(rule in out for rule in RULES)


def test_cli_gpu_memory_sizes():
    assert lint_cli.gib("24GiB") == 24 and lint_cli.gib("24") == 24 and lint_cli.gib("24GB") == 22.352


def test_python_m_pytest_vllm_lint_runs_the_cli(key_env: Path):
    result = subprocess.run([sys.executable, "-m", "pytest_vllm", "lint", "medium", "--env-file", str(key_env)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "medium: 0 errors" in result.stdout


def test_run_variables_stand_in_for_what_the_compose_backend_writes():
    profile = load_profile("cpu_tiny_compose", [PROFILES])
    stand_ins = compose_rules.run_variables(profile, ["PYTEST_VLLM_VENV", "HF_TOKEN"])
    assert set(stand_ins) == {"PYTEST_VLLM_VENV", "PYTEST_VLLM_HOST", "PYTEST_VLLM_PORT"}
    assert stand_ins["PYTEST_VLLM_PORT"] == str(profile.deployment["port"])


# --- compose reading ------------------------------------------------------------------------------------

def test_interpolation_follows_compose():
    from pytest_vllm.lint.composefile import interpolate
    env = {"SET": "v", "EMPTY": ""}
    doc = {"a": "${SET}-$SET-$$SET", "b": "${EMPTY:-d1} ${EMPTY-d2} ${UNSET-${SET}}", "c": ["${NOPE}"],
           "d": "${EMPTY:?need it}", "e": "${SET:+alt}${EMPTY:+no}"}
    result = interpolate(doc, env)
    assert result.data == {"a": "v-v-$SET", "b": "d1  v", "c": [""], "d": "", "e": "alt"}
    assert result.unset == [("NOPE", "c[0]")]
    assert result.required == [("EMPTY", "d", "need it")]


def test_env_file_reads_like_compose(tmp_path: Path):
    from pytest_vllm.lint.composefile import read_env_file
    path = tmp_path / "x.env"
    path.write_text("# comment\nexport A=1\nB='two words'\nC=3 # inline\nD=\"x#y\"\nnot a line\nE='open\n")
    env = read_env_file(path)
    assert env.values == {"A": "1", "B": "two words", "C": "3", "D": "x#y"}
    assert [n for n, _ in env.bad_lines] == [6, 7]
