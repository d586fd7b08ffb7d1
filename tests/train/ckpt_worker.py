"""Subprocess SFT run for the kill/resume tests: `python ckpt_worker.py OUT_DIR TRAJ STEPS [SLEEP_S]`.

Runs `jaxrepair.train.sft.run_sft` (the real entry point, resume on) on the tiny preset with a
checkpoint every 2 steps. SLEEP_S > 0 slows every batch down so a test can kill the process
between checkpoints. Prints the summary as one JSON line at the end.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    out_dir, traj, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sleep_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0

    from jaxrepair.config import load_config
    from jaxrepair.train import sft
    from jaxrepair.train.trainer import single_device_mesh
    from tests.train.trajectories import make_tokenizer

    if sleep_s > 0:
        orig = sft.PackedLoader.next_batch

        def slow(self):
            time.sleep(sleep_s)
            return orig(self)

        sft.PackedLoader.next_batch = slow

    cfg = load_config(None, worker_overrides(out_dir, traj, steps))
    summary = sft.run_sft(
        cfg, tokenizer=make_tokenizer(), mesh=single_device_mesh(), progress=False
    )
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)


def worker_overrides(out_dir: str, traj: str, steps: int) -> list[str]:
    return [
        f"data.train_paths={traj}",
        "data.seq_len=512",
        "data.batch_size=2",
        "optim.lr=3e-3",
        "optim.warmup_steps=2",
        "optim.weight_decay=0.01",
        f"train.steps={steps}",
        f"train.out_dir={out_dir}",
        "train.checkpoint_every=2",
        "train.checkpoint_keep=3",
        "train.log_every=1",
    ]


if __name__ == "__main__":
    main()
