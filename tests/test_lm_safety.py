"""Loading never runs code from a folder, and sampling ignores a model's generation_config.json."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, GPT2LMHeadModel

from lm.models import PolicyWithValueHead, load_tokenizer
from lm.sampling import left_pad, response_mask, sample_responses

ROOT = Path(__file__).resolve().parents[1]
EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import GPT2Config, GPT2LMHeadModel
class EvilConfig(GPT2Config):
    model_type = "evil_gpt"
class EvilModel(GPT2LMHeadModel):
    config_class = EvilConfig
"""


def evil_folder(tiny: dict[str, Path], root: Path, marker: Path) -> Path:
    """A model folder whose config maps its classes to its own python file, which would write
    `marker` on import."""
    folder = root / "evil"
    shutil.copytree(tiny["policy"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evil_gpt",
        architectures=["EvilModel"],
        auto_map={
            "AutoConfig": "modeling_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
            "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    return folder


def cli(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m module argv` answering "y" to any prompt on stdin."""
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("flag", ["--policy", "--reward-model"])
def test_a_folder_with_its_own_code_is_refused_and_never_run(
    tiny: dict[str, Path], tmp_path: Path, flag: str
) -> None:
    marker = tmp_path / "code-ran"
    evil = evil_folder(tiny, tmp_path, marker)
    sources = {"--policy": tiny["policy"], "--reward-model": tiny["rm"], flag: evil}
    argv = [f for k, v in sources.items() for f in (k, str(v))]
    argv += ["--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path / "run")]
    done = cli("lm.train", argv, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "own python code" in lines[0] and flag in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module,flag", [("lm.train", "--prompts"), ("lm.dpo", "--pairs")])
def test_a_dataset_script_is_refused_and_never_run(
    tiny: dict[str, Path], tmp_path: Path, module: str, flag: str, capfd
) -> None:
    marker = tmp_path / "script-ran"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "data.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for source in (folder / "data.py", folder):
        argv = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
        argv += [flag, str(source), "--out", str(tmp_path / "run")]
        main = importlib.import_module("lm.train" if module == "lm.train" else "lm.dpo").main
        assert main(argv) == 2
        lines = capfd.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "loading script" in lines[0], lines
        assert not marker.exists()


def manual_samples(
    model: GPT2LMHeadModel, query: torch.Tensor, eos: int, pad: int, n: int, temperature: float
) -> torch.Tensor:
    """n tokens drawn one at a time from softmax(logits / T), as generate's sampler draws them
    (one torch.multinomial per step); finished rows continue with pad."""
    ids, done, out = query, torch.zeros(query.shape[0], dtype=torch.bool), []
    for _ in range(n):
        logits = model(input_ids=ids).logits[:, -1].float()
        token = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
        token = torch.where(done, torch.full_like(token, pad), token)
        done |= token == eos
        out.append(token)
        ids = torch.cat([ids, token[:, None]], 1)
        if done.all():
            break
    return torch.stack(out, 1)


def test_sampling_ignores_the_models_generation_config(tiny: dict[str, Path]) -> None:
    """A model that ships every distribution-shaping option still samples softmax(logits / T)."""
    model = GPT2LMHeadModel.from_pretrained(tiny["policy"]).eval()
    tokenizer = load_tokenizer(str(tiny["policy"]))
    model.generation_config = GenerationConfig(
        repetition_penalty=3.0,
        no_repeat_ngram_size=1,
        top_k=3,
        top_p=0.5,
        min_p=0.2,
        temperature=0.3,
        suppress_tokens=list(range(50)),
        min_new_tokens=4,
    )
    query, query_mask = left_pad([tokenizer("the phone is")["input_ids"]] * 8, 0)
    policy = PolicyWithValueHead(model)  # before seeding: its head's init draws numbers
    torch.manual_seed(1)
    sampled = sample_responses(
        policy,
        query,
        query_mask,
        tokenizer,
        temperature=0.9,
        top_k=0,
        top_p=1.0,
        max_new_tokens=8,
    )
    torch.manual_seed(1)
    with torch.no_grad():
        expected = manual_samples(
            model, query, tokenizer.eos_token_id, tokenizer.pad_token_id, 8, 0.9
        )
    mask, _ = response_mask(sampled, tokenizer.eos_token_id)
    assert torch.equal(sampled.masked_fill(~mask, -1), expected.masked_fill(~mask, -1))
    assert model.generation_config.repetition_penalty == 3.0  # the model's own is left in place
