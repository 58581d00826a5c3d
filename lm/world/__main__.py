"""`python -m lm.world [--cache-dir DIR] [--tiny] [--force]`: build (or load) the toy world and
print a summary and a few SFT samples with their gold scores."""

import argparse
import dataclasses
import json
from pathlib import Path

from lm.world import WorldConfig, build_world

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m lm.world", description="Build (or load) the toy RLHF world and print it."
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PPO_BRIDGE_CACHE")
    parser.add_argument("--tiny", action="store_true", help="the tiny test world")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    built = build_world(args.cache_dir, WorldConfig.tiny() if args.tiny else None, force=args.force)
    summary = {k: v for k, v in dataclasses.asdict(built).items() if k not in ("samples", "config")}
    print(json.dumps(summary, indent=2, default=str))
    for sample in built.samples:
        print(f"{sample['gold']:.2f}  {sample['prompt']}|{sample['response']}")
