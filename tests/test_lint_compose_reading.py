"""Compose read as compose reads it: rendering, merge keys, which services are vLLM, keys, topology, GPUs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_vllm.capacity import Hardware
from pytest_vllm.errors import PreflightError
from pytest_vllm.lint import Finding, Severity, lint_compose
from pytest_vllm.lint.composefile import key_lines
from pytest_vllm.lint.engines import engine_call, is_vllm_image

from conftest import DATA, PROFILES

BAD = DATA / "lint" / "bad"
TWO_4090 = Hardware("options", 2, 24.0)
KEY = "k3Jp9vQ2xW7mZr4tLb8NcY1dF6hS0aUeGiXoVq5wTnM"  # looks like a real key: 43 random characters


def compose(tmp_path: Path, text: str, env: str = "") -> Path:
    path = tmp_path / "docker-compose.yml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / ".env").write_text(env)
    return path


def rules(findings: list[Finding], severity: Severity | None = None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity is severity}


@pytest.fixture
def needs_compose() -> None:
    from pytest_vllm.backends.compose import compose_command
    try:
        compose_command()
    except PreflightError as exc:
        pytest.skip(str(exc))


def no_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> tuple[str, ...]:
        raise PreflightError("Docker Compose v2 was not found")

    monkeypatch.setattr("pytest_vllm.backends.compose.compose_command", missing)


MERGE_KEYS = """\
    x-engine: &engine
      image: vllm/vllm-openai:v0.32.0
      ipc: host
      command: ["--model", "Qwen/Qwen3-8B", "--mm-encoder-tp-mode", "replicate"]
    services:
      llm:
        <<: *engine
        ports: ["8000:8000"]
    """


@pytest.mark.parametrize("compose_installed", [True, False])
def test_merge_keys_are_read_with_or_without_compose(tmp_path, monkeypatch, request, compose_installed):
    """A `<<: *anchor` crashed the lint (exit 2); the anchor's command is checked like any other."""
    if compose_installed:
        request.getfixturevalue("needs_compose")
    else:
        no_compose(monkeypatch)
    findings = lint_compose(compose(tmp_path, MERGE_KEYS))
    vf003 = next(f for f in findings if f.rule == "VF003")
    assert vf003.file.endswith("docker-compose.yml:4")  # the anchor's command: where the value is written
    assert ("VC013" in rules(findings, Severity.INFO)) is not compose_installed


@pytest.mark.usefixtures("needs_compose")
def test_compose_rendering_is_the_source_of_truth(tmp_path):
    """`extends:` is compose's business: only its rendering gives `chat` the base service's command."""
    findings = lint_compose(compose(tmp_path, """\
        services:
          base:
            image: vllm/vllm-openai:v0.32.0
            profiles: [never]
            command: ["--model", "Qwen/Qwen3-8B", "--mm-encoder-tp-mode", "replicate"]
          chat:
            extends: base
            profiles: []
            ports: ["8000:8000"]
        """))
    assert {f.key for f in findings if f.rule == "VF003"} == {"services.base.command[2]", "services.chat.command[2]"}


def test_key_lines_follow_anchors(tmp_path):
    lines = key_lines(compose(tmp_path, MERGE_KEYS))
    assert lines[("services", "llm", "command")] == 4 and lines[("services", "llm", "ports")] == 8


@pytest.mark.parametrize(("data", "args", "doubled"), [
    ({"image": "vllm/vllm-openai:v0.11.0", "command": ["--model", "m"]}, ["--model", "m"], None),
    ({"image": "vllm/vllm-openai:v0.11.0", "command": "vllm serve m --port 80"}, ["m", "--port", "80"], "vllm serve"),
    ({"image": "vllm/vllm-openai:latest", "entrypoint": ["vllm", "serve"], "command": ["m", "-tp", "2"]},
     ["m", "-tp", "2"], None),
    ({"image": "x/runtime:1", "entrypoint": "/opt/venv/bin/python3",
      "command": ["-m", "vllm.entrypoints.openai.api_server", "--port=5000"]}, ["--port=5000"], None),
    ({"image": "opea/vllm-arc:latest", "entrypoint": 'bash -c "export A=1 && python3 -m '
      'vllm.entrypoints.openai.api_server --model m --port 80 && echo done"'}, ["--model", "m", "--port", "80"],
     None),
    ({"image": "vllm-server", "build": ".", "command": "vllm serve --model m"}, ["--model", "m"], None),
    ({"image": "rocm/vllm:latest", "command": "python -m vllm.entrypoints.openai.api_server --model m"},
     ["--model", "m"], None),
])
def test_engine_call_strips_the_server_prefix_only_when_the_entrypoint_was_replaced(data, args, doubled):
    call = engine_call(data)
    assert call is not None and call.args == args and call.doubled == doubled


@pytest.mark.parametrize("data", [
    {"image": "x/h2ogpt-runtime:0.1", "command": ["/workspace/generate.py", "--inference_server=vllm:vllm:5000"]},
    {"build": {"context": "."}, "command": ["/app/mockvllm", "--healthcheck"]},
    {"image": "ghcr.io/open-webui/open-webui:main", "environment": {"OPENAI_API_BASE_URL": "http://vllm:8000/v1"}},
])
def test_services_that_only_mention_vllm_are_not_engines(data):
    assert engine_call(data) is None


def test_vllm_images():
    assert all(map(is_vllm_image, ["vllm/vllm-openai:v0.11.0", "docker.io/vllm/vllm-openai", "rocm/vllm:latest",
                                   "opea/vllm-gaudi:1.2", "vllm-cpu-env:latest", "localhost:5000/vllm:dev"]))
    assert not any(map(is_vllm_image, ["mockvllm", "nginx:alpine", "ghcr.io/x/vllm-router-ui-x/app", ""]))


ENGINE = """\
    services:
      llm:
        image: vllm/vllm-openai:v0.32.0
        command: {command}
        environment: {environment}
        ports: {ports}
        deploy:
          resources:
            reservations:
              devices: [{{driver: nvidia, device_ids: ["0"], capabilities: [gpu]}}]
    """


def engine(tmp_path: Path, command: str = '["--model", "Qwen/Qwen3-8B"]', environment: str = "{}",
           ports: str = '["8000:8000"]', env: str = "") -> list[Finding]:
    return lint_compose(compose(tmp_path, ENGINE.format(command=command, environment=environment, ports=ports),
                                env))


@pytest.mark.parametrize("command", [f'["--model", "Qwen/Qwen3-8B", "--api_key={KEY}"]',
                                     f'["--model", "Qwen/Qwen3-8B", "--api-key", "{KEY}"]',
                                     f'"--model Qwen/Qwen3-8B --api-key={KEY}"'])
def test_a_literal_key_in_the_command_is_a_warning_in_every_spelling(tmp_path, command):
    findings = engine(tmp_path, command=command)
    vc008 = [f for f in findings if f.rule == "VC008"]
    assert vc008 and all(f.severity is Severity.WARNING for f in vc008)
    assert "VC007" not in rules(findings)


@pytest.mark.parametrize(("environment", "env", "says"), [
    ("{VLLM_API_KEY: '${VLLM_API_KEY:-changeme}'}", "", "placeholder ('changeme')"),
    ("{VLLM_API_KEY: '${KEY:-dummy}'}", "", "placeholder ('dummy')"),
    ("{VLLM_API_KEY: '${KEY}'}", "KEY=EMPTY\n", "placeholder ('EMPTY')"),
    ("{VLLM_API_KEY: '${KEY:-}'}", "", "is empty"),
    ("{VLLM_API_KEY: '${KEY}'}", "KEY=a1b2c3d4\n", "8 characters"),
])
def test_api_key_defaults_are_evaluated_and_placeholders_found_at_any_length(tmp_path, environment, env, says):
    vc007 = next(f for f in engine(tmp_path, environment=environment, env=env) if f.rule == "VC007")
    assert says in vc007.message and vc007.severity is Severity.WARNING


def test_a_good_key_from_the_env_file_passes(tmp_path):
    findings = engine(tmp_path, environment="{VLLM_API_KEY: '${KEY:?set KEY}'}",
                      env=f"KEY={KEY}\n")
    assert not rules(findings) & {"VC007", "VC008", "VC018"}


def test_an_engine_behind_a_gateway_needs_no_published_port(tmp_path):
    assert "VC009" not in rules(engine(tmp_path, ports="[]"))
    wrong = next(f for f in engine(tmp_path, ports='["8000:80"]') if f.rule == "VC009")
    assert wrong.severity is Severity.WARNING and "listens on 8000" in wrong.message


def test_omitted_prefix_caching_is_reported_as_effectively_on(tmp_path):
    note = next(f for f in engine(tmp_path) if f.rule == "VP006" and "prefix" in f.message)
    assert note.severity is Severity.INFO
    assert note.message.startswith("prefix caching is effectively ON (vLLM V1 default >=0.10); omitting the flag "
                                   "does not disable it")
    assert not any(f.rule == "VP006" and "prefix" in f.message
                   for f in engine(tmp_path, command='["--model", "m", "--no-enable-prefix-caching"]'))


def test_unknown_flags_are_warnings_when_the_image_runs_another_release(tmp_path):
    """The table is one release's parser; `latest` or another tag may know the flag."""
    text = ENGINE.format(command='["--model", "m", "--swap-space", "4"]', environment="{}", ports="[]")
    pinned = lint_compose(compose(tmp_path, text))
    latest = lint_compose(compose(tmp_path, text.replace(":v0.32.0", ":latest")))
    assert "VF001" in rules(pinned, Severity.ERROR)
    assert "VF001" in rules(latest, Severity.WARNING) and "VF001" not in rules(latest, Severity.ERROR)


def test_engines_sharing_a_gpu_only_together_under_a_profile_is_a_warning(tmp_path):
    text = (BAD / "VG008_engines_share_a_gpu.yml").read_text()
    assert "VG008" in rules(lint_compose(compose(tmp_path, text)), Severity.ERROR)
    opt_in = text.replace("  embed:\n", "  embed:\n    profiles: [embeddings]\n")
    shared = next(f for f in lint_compose(compose(tmp_path, opt_in)) if f.rule == "VG008")
    assert shared.severity is Severity.WARNING and "profile(s) embeddings" in shared.message
    gpu1 = ('    deploy: {resources: {reservations: {devices: [{driver: nvidia, device_ids: ["1"], '
            'capabilities: [gpu]}]}}}\n')
    apart = text.replace("  embed:\n    <<: *engine\n", "  embed:\n    <<: *engine\n" + gpu1)
    assert "VG008" not in rules(lint_compose(compose(tmp_path, apart)))


def test_context_beyond_the_checkpoint_is_fine_with_rope_scaling(tmp_path):
    long = '["--model", "Qwen/Qwen3-8B", "--max-model-len", "131072"]'
    assert "VG007" in rules(engine(tmp_path, command=long), Severity.ERROR)
    yarn = long[:-1] + ', "--hf-overrides", "{\\"rope_scaling\\": {\\"rope_type\\": \\"yarn\\", \\"factor\\": 4.0}}"]'
    assert "VG007" not in rules(engine(tmp_path, command=yarn))


def test_fp8_qwen3_vl_32b_on_two_4090_is_refused_with_its_figures():
    findings = lint_compose(BAD / "seeds_medium_vl_mission19.yml", BAD / "_mission19.env", gpus=TWO_4090)
    refusal = next(f for f in findings if f.rule in ("VG001", "VG002"))
    assert refusal.severity is Severity.ERROR
    assert "Qwen/Qwen3-VL-32B-Instruct-FP8 (fp8, 33.4B params) on 2x 24.00 GiB" in refusal.message
    assert "weights 16.6" in refusal.message and "GiB/GPU" in refusal.message


def test_awq_qwen3_vl_32b_on_two_4090_is_accepted(tmp_path):
    keys = tmp_path / "keys.env"
    keys.write_text(f"VLLM_API_KEY_MEDIUM_VL={KEY}\n")
    findings = lint_compose(PROFILES / "compose" / "medium_vl.yml", keys, gpus=TWO_4090)
    assert rules(findings, Severity.ERROR) == set()
    assert "fits: cpatonn/Qwen3-VL-32B-Thinking-AWQ-4bit (awq" in next(f for f in findings if f.rule == "VG003").message


def test_cli_checks_a_plain_compose_file_against_the_gpus_given(capsys):
    from pytest_vllm import lint_cli
    argv = [str(BAD / "seeds_medium_vl_mission19.yml"), "--env-file", str(BAD / "_mission19.env"),
            "--gpus", "2", "--gpu-memory", "24GiB"]
    assert lint_cli.main(argv) == lint_cli.EXIT_FINDINGS
    out = capsys.readouterr().out
    assert "error VG002" in out and "(fp8, 33.4B params) on 2x 24.00 GiB (from options)" in out


def test_cli_merges_several_compose_files_like_compose(tmp_path, capsys):
    """`-f base.yml -f override.yml`: the override's command replaces the base's, as in compose."""
    from pytest_vllm import lint_cli
    base = compose(tmp_path, MERGE_KEYS)
    override = tmp_path / "override.yml"
    override.write_text('services:\n  llm:\n'
                        '    command: ["--model", "Qwen/Qwen3-8B", "--mm-encoder-tp-mode", "data"]\n')
    assert lint_cli.main(["-f", str(base)]) == lint_cli.EXIT_FINDINGS
    assert "error VF003" in capsys.readouterr().out
    assert lint_cli.main(["-f", str(base), "-f", str(override)]) == lint_cli.EXIT_CLEAN
    assert "VF003" not in capsys.readouterr().out


def test_model_facts_come_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    """An id the table does not know is judged by its config.json when the checkpoint is cached here."""
    snapshot = tmp_path / "hub" / "models--acme--chat-7b" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, '
                                          '"num_key_value_heads": 8, "vocab_size": 32000, '
                                          '"max_position_embeddings": 8192, "intermediate_size": 14336}')
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    long = '["--model", "acme/chat-7b", "--max-model-len", "32768"]'
    vg007 = next(f for f in engine(tmp_path, command=long) if f.rule == "VG007")
    assert "8192 tokens acme/chat-7b reads" in vg007.message
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert "VG007" not in rules(engine(tmp_path, command=long))  # unknown: not guessed at


@pytest.mark.parametrize("gpus", ["gpus: all", "runtime: nvidia", "devices: [nvidia.com/gpu=all]",
                                  "deploy: {resources: {reservations: {devices: [{driver: nvidia, count: all, "
                                  "capabilities: [gpu]}]}}}"])
def test_every_way_of_giving_a_service_gpus_counts(tmp_path, gpus):
    text = f"services:\n  llm:\n    image: vllm/vllm-openai:v0.32.0\n    {gpus}\n    command: [--model, m]\n"
    assert "VC004" not in rules(lint_compose(compose(tmp_path, text)))
    assert "VC004" in rules(lint_compose(compose(tmp_path, text.replace(f"    {gpus}\n", ""))))
