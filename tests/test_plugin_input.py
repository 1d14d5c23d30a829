"""Bad input reaches the operator as one clear screen and a non-zero exit (pytest run as users run it)."""

from __future__ import annotations

import time

from conftest import SUITES, free_port

HEALTH = str(SUITES / "medium" / "test_health.py")


def test_help_shows_the_vllm_option_group(pytester):
    result = pytester.runpytest_subprocess("--help")
    out = result.stdout.str()
    assert "pytest-vllm: validate a vLLM deployment" in out
    for option in ("--profile", "--base-url", "--api-key", "--keep-up", "--reuse", "--health-timeout",
                   "--reports-dir"):
        assert option in out


def test_unknown_profile_lists_the_known_ones(run_suite):
    result = run_suite(HEALTH, "--profile=no_such_profile")
    assert result.ret == 4  # pytest's usage error
    err = result.stderr.str()
    assert "unknown profile 'no_such_profile'" in err
    assert "known profiles:" in err and "cpu_tiny" in err


def test_close_name_is_suggested(run_suite):
    result = run_suite(HEALTH, "--profile=cpu_tinny")
    assert "did you mean cpu_tiny" in result.stderr.str()


def test_yaml_syntax_error_names_file_and_line(run_suite, tmp_path):
    bad = tmp_path / "broken.yml"
    bad.write_text("model:\n  path: x\n server: [\n")
    result = run_suite(HEALTH, f"--profile={bad}")
    assert result.ret == 4
    err = result.stderr.str()
    assert "broken.yml:3:" in err and "YAML syntax error" in err


def test_unknown_key_is_named_with_a_suggestion(run_suite, tmp_path):
    bad = tmp_path / "typo.yml"
    bad.write_text("model:\n  path: x\nservr:\n  port: 1\n")
    err = run_suite(HEALTH, f"--profile={bad}").stderr.str()
    assert "typo.yml: servr: unknown key 'servr'" in err and "did you mean 'server'" in err


def test_unknown_nested_key_is_named(run_suite, tmp_path):
    bad = tmp_path / "nested.yml"
    bad.write_text("model:\n  path: x\n  quantisation: awq\n")
    err = run_suite(HEALTH, f"--profile={bad}").stderr.str()
    assert "model.quantisation: unknown key" in err and "did you mean 'quantization'" in err


def test_missing_key_says_which_and_why(run_suite, tmp_path):
    bad = tmp_path / "nomodel.yml"
    bad.write_text("deployment:\n  backend: process\n")
    err = run_suite(HEALTH, f"--profile={bad}").stderr.str()
    assert "missing key 'model.path' (required by the process backend)" in err


def test_extends_cycle_is_shown(run_suite, tmp_path):
    (tmp_path / "a.yml").write_text("extends: b\nmodel:\n  path: x\n")
    (tmp_path / "b.yml").write_text("extends: a\n")
    result = run_suite(HEALTH, f"--profile={tmp_path / 'a.yml'}")
    assert result.ret == 4
    assert "'extends' cycle: a -> b -> a" in result.stderr.str()


def test_unreachable_base_url_fails_at_the_health_timeout_with_what_it_saw(run_suite):
    port = free_port()
    start = time.monotonic()
    result = run_suite(HEALTH, f"--base-url=http://127.0.0.1:{port}", "--health-timeout=3")
    elapsed = time.monotonic() - start
    assert result.ret == 1
    out = result.stdout.str()
    assert "not healthy after 3s" in out
    assert f"GET http://127.0.0.1:{port}/health: connection refused" in out
    assert elapsed < 30, f"an unreachable endpoint took {elapsed:.0f}s to fail"
    # One deployment failure, every test of the suite reported as an error, not a hang.
    result.assert_outcomes(errors=8)


def test_wrong_api_key_is_explained(run_suite):
    from pytest_vllm.emulator import EmulatorServer

    with EmulatorServer(api_key="the-right-key-0123456789abcdef0123456789") as server:
        result = run_suite(HEALTH, f"--base-url={server.base_url}", "--api-key=a-wrong-key")
    out = result.stdout.str()
    assert result.ret == 1
    assert "answered 401" in out
    assert "the server wants an API key and this one was refused" in out
