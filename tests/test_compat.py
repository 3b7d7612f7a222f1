"""The runtime patches let the pinned stack import and run on Python 3.11."""

from __future__ import annotations

import os
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


_COUNT_PYTHON_CHILDREN = """
import subprocess, sys
started = []
original = subprocess.Popen.__init__
def spy(self, args, *rest, **kwargs):
    started.append(args)
    original(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = spy
{imports}
import glfw
print("children", sum(1 for a in started if isinstance(a, (list, tuple)) and a and a[0] == sys.executable))
print("library", glfw.library.glfw._name)
"""


def _python_children(imports: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYGLFW_LIBRARY"}
    result = subprocess.run(
        [sys.executable, "-c", _COUNT_PYTHON_CHILDREN.format(imports=imports)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("children", "library")))
    return int(lines["children"]), lines["library"]


def test_simulator_imports_start_no_python_subprocess():
    """pyGLFW (imported by safety-gymnasium) probes libraries in Python subprocesses, which a killed
    sweep worker leaves writing into a closed pipe (a BrokenPipeError traceback in the sweep's
    stderr). After bench's patch it loads the same bundled library without starting anything."""
    plain_children, plain_library = _python_children("")
    assert plain_children >= 1, "pyGLFW no longer probes in a subprocess: patch 7 of bench/compat.py can go"
    children, library = _python_children("import bench, dsrl, safety_gymnasium")
    assert children == 0
    assert library == plain_library
