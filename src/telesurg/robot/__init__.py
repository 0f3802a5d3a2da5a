"""Patient side: arms, simulation, safety supervisor and servo loop."""

import os as _os

# MuJoCo picks its OpenGL backend from MUJOCO_GL when it is first imported. Without a display the
# default (GLFW) cannot make a context and the endoscope cannot render, so fall back to OSMesa
# (Debian's libosmesa6, installed by the Makefile): software rendering that works on any server.
# A user's own MUJOCO_GL (e.g. "egl" on a GPU machine) always wins.
if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY") and not _os.environ.get("WAYLAND_DISPLAY"):
    _os.environ["MUJOCO_GL"] = "osmesa"
    _os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
