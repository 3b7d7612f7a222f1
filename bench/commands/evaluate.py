"""`presa-bench evaluate`: evaluate a stored cell's policy again (more episodes, other seeds) and
optionally film one episode in the real simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        cell: str = typer.Argument(..., help="A stored cell id from `presa-bench results ls` (or a unique part of one)."),
        results: Path = typer.Option(Path("results"), "--results", help="Result store directory."),
        checkpoint: str = typer.Option("final", "--checkpoint", help="final (the last checkpoint) or best (the online-selected one)."),
        episodes: int = typer.Option(20, "--episodes", help="Episodes per seed (the field: 20)."),
        seeds: str = typer.Option("", "--seeds", help="Evaluation seeds, comma-separated (default: the cell's own seed)."),
        video: Optional[Path] = typer.Option(
            None, "--video", help="Also film one episode (the first seed's first) in the simulator: out.gif, or out.mp4 with imageio-ffmpeg."
        ),
        video_every: int = typer.Option(1, "--video-every", help="Film every N-th step (a Bullet frame takes about 0.2 s to render)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="The labels file the cell was trained on, if it used one."),
    ) -> None:
        """Rebuild a stored cell's policy from its checkpoint and evaluate it in the real simulator; prints the
        scores (the store is not changed)."""
        import pandas as pd
        import torch

        from bench.browse import check_video_path, find_cell, render_episode, stored_policy, write_video
        from bench.commands.run import result_table
        from bench.console import console
        from bench.errors import BadInput
        from bench.evaluation import EVAL_NUM_ENVS, SEED_STRIDE, evaluate_policy

        if not 1 <= episodes <= SEED_STRIDE:
            raise BadInput(f"--episodes must be between 1 and {SEED_STRIDE}")
        if video_every < 1:
            raise BadInput("--video-every must be >= 1")
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise BadInput(f"--seeds needs integers, comma-separated (got '{seeds}')") from None
        if video is not None:
            check_video_path(video)
        torch.set_num_threads(1)
        row = find_cell(results, cell)
        resolved, policy = stored_policy(results, row.cell_id, checkpoint, labels)
        out = console()
        for seed in seed_list or [resolved.key.seed]:
            result = evaluate_policy(policy, resolved.task, resolved.threshold, episodes=episodes, seed=seed, num_envs=EVAL_NUM_ENVS)
            frame = pd.DataFrame([{"checkpoint": checkpoint, **r} for r in result.rows()])
            out.print(result_table(frame, f"{row.cell_id}: {checkpoint} policy, evaluation seed {seed}"))
        if video is not None:
            frames, ret, cost = render_episode(policy, resolved.task, (seed_list or [resolved.key.seed])[0], video_every)
            write_video(video, frames, fps=max(1.0, 30.0 / video_every))
            out.print(f"wrote {video} ({len(frames)} frames; episode return {ret:.1f}, cost {cost:.1f})")
