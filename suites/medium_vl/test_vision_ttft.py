"""Vision TTFT per image count: 1 up to the profile's `capabilities.max_images` images per prompt, timed to
the first token over `load.vision_rounds` rounds (default 3), into the TTFT history and its regression gate.

Every round sends new random-pixel images (never seen: neither the prefix cache nor the multimodal
processor cache can serve them), `size` px square as in suites/cases/vision.yml. With
`thresholds.vision_ttft_ms_max`, the median TTFT at the most images must stay under it.
"""

from __future__ import annotations

import base64
import io
import os
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pytest_vllm.http import error_message
from pytest_vllm.plugin import selected_profiles

SIZE = int(yaml.safe_load((Path(__file__).parents[1] / "cases" / "vision.yml").read_text(encoding="utf-8"))["size"])
QUESTION = "How many images do you see? Answer with one number."
MAX_TOKENS = 8

pytestmark = pytest.mark.vllm_capability("vision")


def pytest_generate_tests(metafunc):
    if "images" in metafunc.fixturenames:
        most = max([int(p.capabilities.max_images or 1) for p in selected_profiles(metafunc.config)
                    if p.capabilities.vision] or [0])
        metafunc.parametrize("images", range(1, most + 1), ids=[f"{n}img" for n in range(1, most + 1)])


def random_image() -> str:
    """A PNG data URL of random pixels: unique, so no cache can serve it."""
    image = Image.frombytes("RGB", (SIZE, SIZE), os.urandom(SIZE * SIZE * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _message(count: int) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": random_image()}} for _ in range(count)]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}]


def test_ttft_per_image_count(vllm_client, vllm_profile, vllm_ttft, images):
    limit = int(vllm_profile.capabilities.max_images or 1)
    if images > limit:
        pytest.skip(f"profile '{vllm_profile.name}' allows {limit} image(s) per prompt (capabilities.max_images)")
    ttft_s = []
    for _ in range(int(vllm_profile.load.vision_rounds or 3)):
        result = vllm_client.stream_chat(_message(images), max_tokens=MAX_TOKENS, temperature=0,
                                         chat_template_kwargs={"enable_thinking": False})
        assert result.status == 200, (
            f"a prompt with {images} image(s) answered {result.status}: {error_message(result.error_body)}")
        assert result.ttft_s is not None, f"the answer to {images} image(s) carried no token"
        ttft_s.append(result.ttft_s)
    median_ms = statistics.median(ttft_s) * 1000
    vllm_ttft.record_samples(f"vision/{images}_images/ttft", ttft_s,
                             {"images": images, "size_px": SIZE, "ttft_ms": [round(t * 1000, 2) for t in ttft_s],
                              "median_ms": round(median_ms, 2)})
    maximum = vllm_profile.thresholds.vision_ttft_ms_max
    if maximum is not None and images == limit:
        assert median_ms <= maximum, (
            f"median TTFT with {images} images is {median_ms:.0f} ms, above the {maximum} ms allowed "
            f"(thresholds.vision_ttft_ms_max in {vllm_profile.path}); rounds: "
            f"{', '.join(f'{t * 1000:.0f}' for t in ttft_s)} ms")
