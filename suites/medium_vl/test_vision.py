"""Vision: pictures drawn here (colours, shapes, digits) are read back; the image limit is enforced.

Cases live in suites/cases/vision.yml; images are made with Pillow and sent as PNG data URLs, so
nothing is downloaded. The limit is the profile's `capabilities.max_images`: that many images must
be accepted, one more refused with a 400. A text-only deployment (`capabilities.vision` unset) must
refuse an image with a clear 400 rather than answer as if it had seen it. Calls go through the official
OpenAI client, as applications send images.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from pytest_vllm.http import ApiError, error_message

DATA = yaml.safe_load((Path(__file__).parents[1] / "cases" / "vision.yml").read_text(encoding="utf-8"))
CASES = DATA["cases"]
SEVERAL = DATA["several"]


def draw(spec: dict, size: int = DATA["size"]) -> str:
    """A PNG data URL of one filled shape or one digit, in a colour, on white."""
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    m, colour = size // 8, spec["colour"]
    if "digit" in spec:
        font = ImageFont.load_default(size=int(size * 0.7))
        pen.text((size // 2, size // 2), str(spec["digit"]), fill=colour, font=font, anchor="mm")
    elif spec["shape"] == "square":
        pen.rectangle([m, m, size - m, size - m], fill=colour)
    elif spec["shape"] == "circle":
        pen.ellipse([m, m, size - m, size - m], fill=colour)
    elif spec["shape"] == "triangle":
        pen.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=colour)
    else:
        raise ValueError(f"vision.yml: unknown shape {spec['shape']!r} (square, circle, triangle)")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _message(question: str, urls: list[str]) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]


def _refusal(exc: ApiError, count: int, profile) -> str:
    message = error_message(exc.body)
    if "not a multimodal model" in message:
        return (f"the server refused the image: '{message}'. The deployed model is text-only; deploy a "
                f"vision-language model (e.g. Qwen3-VL) or set capabilities.vision: false in {profile.path}")
    limit = profile.capabilities.get("max_images")
    if "at most" in message.lower() and limit and count <= limit:
        return (f"the server refused {count} image(s) although the profile allows {limit} "
                f"(capabilities.max_images): '{message}'. Start vLLM with --limit-mm-per-prompt "
                f"'{{\"image\": {limit}}}'")
    return f"the request with {count} image(s) answered {exc.status}: {message}"


def _ask(openai, profile, question: str, urls: list[str]) -> str:
    try:
        completion = openai.create(_message(question, urls), max_tokens=DATA["max_tokens"], temperature=0,
                                   extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    except ApiError as exc:
        pytest.fail(_refusal(exc, len(urls), profile), pytrace=False)
    return completion.choices[0].message.content or ""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _max_images(profile) -> int:
    limit = profile.capabilities.get("max_images")
    if not limit:
        pytest.skip(f"profile '{profile.name}' does not set capabilities.max_images: no limit to check")
    return int(limit)


@pytest.mark.vllm_capability("vision", "semantic")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_answer_matches_the_image(vllm_openai, vllm_profile, case):
    answer = _ask(vllm_openai, vllm_profile, case["question"], [draw(case["draw"])])
    words = set(_words(answer))
    named = [o for o in DATA["options"][case["asks"]] if str(o).lower() in words]
    assert named == [str(case["expect"])], (
        f"the answer does not match the image of '{case['id']}': expected '{case['expect']}' and no other "
        f"{case['asks']}, the answer names {named or 'none'}: {answer[:200]!r}. If it says there is no image, the "
        "server drops images before the model (check that the model is a vision-language model and that the "
        "request's image parts reach it)")


@pytest.mark.vllm_capability("vision")
def test_images_up_to_the_limit_are_accepted_and_read_in_order(vllm_openai, vllm_profile):
    limit = _max_images(vllm_profile)
    colours = SEVERAL["colours"][:limit]
    answer = _ask(vllm_openai, vllm_profile, SEVERAL["question"],
                  [draw({"shape": "square", "colour": c}) for c in colours])
    if not vllm_profile.capabilities.get("semantic"):
        return
    said = [w for w in _words(answer) if w in SEVERAL["colours"]]
    assert said == colours, (
        f"the answer does not match the {limit} images: it lists colours {said}, expected {colours} in order; the "
        f"server may drop or reorder images. Reply: {answer[:200]!r}")


@pytest.mark.vllm_capability("vision")
def test_one_image_over_the_limit_is_refused(vllm_openai, vllm_profile):
    limit = _max_images(vllm_profile)
    urls = [draw({"shape": "square", "colour": c}) for c in (SEVERAL["colours"] * 2)[:limit + 1]]
    try:
        vllm_openai.create(_message(SEVERAL["question"], urls), max_tokens=16, temperature=0)
    except ApiError as exc:
        reason = error_message(exc.body)
        assert exc.status == 400 and "image" in reason.lower(), (
            f"{limit + 1} images answered {exc.status}, expected a 400 about the image limit: {reason}")
        return
    pytest.fail(f"the server accepted {limit + 1} images in one prompt, over the profile's limit of {limit} "
                f"(capabilities.max_images): the image limit is not enforced. Start vLLM with --limit-mm-per-prompt "
                f"'{{\"image\": {limit}}}' so an overloaded prompt is refused instead of exhausting memory",
                pytrace=False)


def test_a_text_only_deployment_refuses_images_clearly(vllm_openai, vllm_profile):
    if vllm_profile.capabilities.get("vision"):
        pytest.skip(f"profile '{vllm_profile.name}' claims vision (capabilities.vision): not a text-only deployment")
    try:
        completion = vllm_openai.create(_message(CASES[0]["question"], [draw(CASES[0]["draw"])]), max_tokens=16)
    except ApiError as exc:
        assert exc.status == 400 and error_message(exc.body).strip(), (
            f"an image sent to a text-only deployment should get a 400 with a reason, got {exc.status}: {exc.body}")
        return
    pytest.fail(f"the text-only deployment accepted an image and answered anyway "
                f"({completion.choices[0].message.content!r}): its answer cannot come from the image. If the "
                "model does see images, set capabilities.vision: true and max_images in the profile", pytrace=False)
