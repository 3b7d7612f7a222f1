"""The runtime patches let the pinned stack import and run on Python 3.11."""

from __future__ import annotations

import subprocess
import sys


def test_stack_imports_after_compat():
    code = (
        "import bench, gymnasium as gym, dsrl, osrl.algorithms, fsrl, safety_gymnasium, bullet_safety_gym;"
        "env = gym.make('OfflineHopperVelocityGymnasium-v1'); env.reset(seed=0);"
        "print('OK', env.observation_space.shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK (11,)" in result.stdout


def test_without_compat_the_stack_breaks():
    """Guards the reason for the patch: if this starts passing, the patch can go."""
    result = subprocess.run([sys.executable, "-c", "import dsrl.offline_safety_gymnasium"], capture_output=True, text=True)
    assert result.returncode != 0


def test_bullet_env_under_replaced_streams():
    """bullet-safety-gym redirects C streams; with Python's streams replaced (capture) it must still work."""
    import io

    import bench  # noqa: F401
    from bench.envs import make_env
    from bench.tasks import get_task

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        env = make_env(get_task("BallRun"))
        env.reset(seed=0)
        env.close()
    finally:
        sys.stdout, sys.stderr = saved
