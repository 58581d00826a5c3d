"""Run by tests/test_lm_fsdp.py under torchrun: shard the policy with torch's FSDP2 on CPU (gloo),
as accelerate does on GPUs (one unit per block, then the root), and check what the trainer relies
on: sampling through the root's registered `generate`, forwards equal to the unsharded model's
(LoRA adapters off too), a fused AdamW step on the shards, and the gathered state dict saved by
`save_model`. Writes a JSON report from rank 0 to argv[1]."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from tiny import gpt2_config, make_tokenizer
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from transformers import GPT2LMHeadModel

from lm.checkpoint import save_model
from lm.lora import adapters_off, add_lora
from lm.models import PolicyWithValueHead
from lm.sampling import left_pad, policy_forward, sample_responses

dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
report = {}
for lora in (False, True):
    torch.manual_seed(0)
    tok = make_tokenizer()
    lm = GPT2LMHeadModel(gpt2_config(tok))
    model = PolicyWithValueHead(add_lora(lm, 4) if lora else lm).eval()
    plain = copy.deepcopy(model)
    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "generate")
    query, query_mask = left_pad([[5, 6, 7], [8]], tok.pad_token_id)
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4)
    responses = sample_responses(model, query, query_mask, tok, **kw)
    qr = torch.cat([query, responses], 1)
    am = torch.cat([query_mask, torch.ones_like(responses)], 1)
    n = responses.shape[1]
    logprobs, _, values = policy_forward(model, qr, am, n, 1.0)
    with torch.no_grad():
        expected = policy_forward(plain, qr, am, n, 1.0)[0]
        with adapters_off(model.lm):
            ref = policy_forward(model, qr, am, n, 1.0)[0]
    (values.sum() - logprobs.sum()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.optim.AdamW(trainable, lr=1e-2, fused=True).step()
    after = policy_forward(model, qr, am, n, 1.0)[0]
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    name = "lora" if lora else "full"
    if dist.get_rank() == 0:
        save_model(model, tok, f"{sys.argv[2]}/{name}", state_dict=weights)
        report[name] = {
            "sharded": type(next(model.parameters())).__name__,
            "forward_max_diff": (logprobs - expected).abs().max().item(),
            "ref_max_diff": (ref - expected).abs().max().item(),
            "step_changed": (after - logprobs).abs().max().item(),
            "c_attn_sum": [v for k, v in weights.items() if "h.0.attn.c_attn" in k][0].sum().item(),
        }
if dist.get_rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(report, f)
dist.destroy_process_group()
