"""The tiny model of the embedded default: a Qwen3-architecture checkpoint built offline, no hub.

A byte-level BPE trained on local text, a ChatML chat template with Qwen3's tool and thinking
conventions, and a few random-weight layers. Deterministic (fixed corpus, seed) and cached: the
folder name carries a hash of the recipe, so a changed recipe builds a new one.
Its answers are random text: protocol, latency and cache checks can pass on it, semantic ones cannot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

RECIPE = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "seed": 1234,
    "version": 1,
}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Not special: they must survive decoding so the reasoning and tool parsers see them.
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
CORPUS_DIRS = [Path("/usr/share/common-licenses")]

CHAT_TEMPLATE = r"""{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions. Function signatures are within <tools></tools>:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object within <tool_call></tool_call>:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}{% continue %}{% endif %}
{%- if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}
{%- for call in message.tool_calls or [] %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{% if message.content is string %}{{ message.content }}{% else %}{% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}"""


def default_cache_dir() -> Path:
    base = os.environ.get("PYTEST_VLLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pytest-vllm")
    return Path(base)


def recipe_hash() -> str:
    blob = json.dumps([RECIPE, SPECIAL, MARKERS, CHAT_TEMPLATE], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"tiny-qwen3-{recipe_hash()}"


def _corpus() -> list[str]:
    files = sorted(p for d in CORPUS_DIRS if d.is_dir() for p in d.rglob("*") if p.is_file())
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    if not texts:
        raise RuntimeError(f"no training text found in {', '.join(map(str, CORPUS_DIRS))}")
    return texts


def _build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=RECIPE["vocab_size"] - len(SPECIAL) - len(MARKERS),
                                  special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None)
    tok.add_tokens(MARKERS)
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = RECIPE["max_position_embeddings"]
    tok.save_pretrained(out)

    torch.manual_seed(RECIPE["seed"])
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=RECIPE["hidden_size"], intermediate_size=RECIPE["intermediate_size"],
        num_hidden_layers=RECIPE["num_hidden_layers"], num_attention_heads=RECIPE["num_attention_heads"],
        num_key_value_heads=RECIPE["num_key_value_heads"], head_dim=RECIPE["head_dim"],
        max_position_embeddings=RECIPE["max_position_embeddings"], tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), bos_token_id=None, torch_dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(out)
    (out / "pytest_vllm_recipe.json").write_text(json.dumps(RECIPE, indent=2))


def ensure_tiny_model(cache_dir: Path | None = None) -> Path:
    """Return the tiny model's folder, building it (about 20 s) the first time."""
    target = tiny_model_path(cache_dir)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build aside and rename: an interrupted build never leaves a half model behind.
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        _build(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
