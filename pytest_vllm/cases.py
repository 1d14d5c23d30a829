"""Suite cases as data: each case's language (`lang`, default en) decides whether a profile runs it.

    @pytest.mark.parametrize("case", by_language(CASES))

gives each case its id and a `vllm_language` mark; the plugin skips the cases whose language is not
in the profile's `capabilities.languages` (default: en and fr, the same checks in both).
"""

from __future__ import annotations

from typing import Any

import pytest

DEFAULT_LANGUAGE = "en"


def language(case: dict[str, Any]) -> str:
    return str(case.get("lang") or DEFAULT_LANGUAGE)


def by_language(cases: list[dict[str, Any]]) -> list[Any]:
    """pytest params of the cases, each marked with its language."""
    return [pytest.param(case, id=case["id"], marks=pytest.mark.vllm_language(language(case))) for case in cases]
