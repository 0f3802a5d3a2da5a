"""MJCF of the patient-side cart, generated from `CartConfig` and the peg-board layout.

Generated rather than a static file so the MuJoCo joints are exactly the chain `ArmKinematics`
computes (same RCM, trocar frame, joint order and limits): one source of truth, checked by tests.

Collision bits: 1 = rings and pegs, 2 = jaw fingers, 4 = work surface and each ring's flat base disk.
Fingers touch rings, pegs and the surface but not each other; ring tubes touch pegs, fingers and other
rings but not the surface, which only meets the ring's (invisible) base disk: a flat cylinder on a plane
needs a handful of contacts where ten capsules lying on it need twenty, and contacts are most of the
cost of a 1 kHz step. Shafts and wrist links do not collide at all (the real instruments pass through trocars, and a
colliding shaft would only add stiff, meaningless contacts). Arm links have gravity compensation,
like a counterbalanced real arm, so the position servos only fight dynamics, not weight.
"""

from __future__ import annotations

import numpy as np

from . import scene
from .config import ArmConfig, CartConfig
from .kinematics import matrix_to_quat, trocar_rotation

FINGER_HALF_THICKNESS = 0.0006
FINGER_HALF_WIDTH = 0.0015
STEREO_BASELINE = 0.005  # m between the two endoscope cameras
RING_COLOURS = ("0.9 0.2 0.2 1", "0.2 0.7 0.2 1", "0.2 0.4 0.9 1", "0.9 0.7 0.1 1", "0.7 0.2 0.8 1",
                "0.1 0.8 0.8 1")


def _fmt(values: np.ndarray | tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _joint(name: str, kind: str, axis: str, lower: float, upper: float) -> str:
    return (f'<joint name="{name}" type="{kind}" axis="{axis}" range="{lower:.6g} {upper:.6g}" '
            f'limited="true" armature="0.002" damping="0.05"/>')


def _fingers(arm: ArmConfig) -> str:
    half = arm.tool_length / 2
    bodies = []
    for index, sign in ((1, 1.0), (2, -1.0)):
        # finger angle = sign * jaw / 2, so each finger's range mirrors the jaw range
        lo, hi = sorted((sign * arm.jaw.lower / 2, sign * arm.jaw.upper / 2))
        bodies.append(f"""
            <body name="{arm.name}_finger{index}">
              <joint name="{arm.name}_jaw{index}" type="hinge" axis="0 1 0" range="{lo - 0.05:.4g} {hi + 0.05:.4g}"
                     armature="0.00001" damping="0"/>
              <geom name="{arm.name}_finger{index}" type="box" pos="{sign * FINGER_HALF_THICKNESS:.6g} 0 {half:.6g}"
                    size="{FINGER_HALF_THICKNESS} {FINGER_HALF_WIDTH} {half:.6g}" mass="0.002"
                    contype="2" conaffinity="0" condim="4" friction="2.0 0.02 0.001"
                    solref="0.002 1" solimp="0.95 0.99 0.0005" rgba="0.75 0.75 0.78 1"/>
            </body>""")
    return "".join(bodies)


def _arm_body(arm: ArmConfig) -> str:
    rcm = np.array(arm.rcm_position)
    quat = matrix_to_quat(trocar_rotation(rcm, np.array(arm.trocar_target)))
    lo, hi = arm.lower, arm.upper
    n = arm.name
    if arm.kind == "psm":
        tip = f"""
          <body name="{n}_wrist_pitch_link">
            {_joint(f"{n}_wrist_pitch", "hinge", "1 0 0", lo[4], hi[4])}
            <geom type="sphere" size="0.0025" mass="0.003" contype="0" conaffinity="0" rgba="0.3 0.3 0.3 1"/>
            <body name="{n}_wrist_yaw_link">
              {_joint(f"{n}_wrist_yaw", "hinge", "0 1 0", lo[5], hi[5])}
              <inertial pos="0 0 0" mass="0.002" diaginertia="1e-8 1e-8 1e-8"/>
              <site name="{n}_tool_tip" pos="0 0 {arm.tool_length:.6g}" size="0.0008" rgba="1 1 0 1"/>
              {_fingers(arm)}
            </body>
          </body>"""
    else:
        # cameras look along the shaft (+z) with image-up along the trocar's up (+y), so the
        # image's right is the body's -x: the left eye sits at +x
        half = STEREO_BASELINE / 2
        tip = f"""
          <site name="{n}_tool_tip" pos="0 0 0" size="0.001"/>
          <camera name="{n}_left" pos="{half:.6g} 0 0" quat="0 0 1 0" fovy="50"/>
          <camera name="{n}_right" pos="{-half:.6g} 0 0" quat="0 0 1 0" fovy="50"/>"""
    return f"""
    <body name="{n}_rcm" pos="{_fmt(rcm)}" quat="{_fmt(quat)}" gravcomp="1">
      <site name="{n}_rcm" size="0.002" rgba="1 0 0 1"/>
      <body name="{n}_yaw_link" gravcomp="1">
        {_joint(f"{n}_yaw", "hinge", "0 1 0", lo[0], hi[0])}
        <inertial pos="0 0 0" mass="0.2" diaginertia="1e-4 1e-4 1e-4"/>
        <body name="{n}_pitch_link" gravcomp="1">
          {_joint(f"{n}_pitch", "hinge", "1 0 0", lo[1], hi[1])}
          <inertial pos="0 0 0" mass="0.2" diaginertia="1e-4 1e-4 1e-4"/>
          <body name="{n}_shaft" gravcomp="1">
            {_joint(f"{n}_insertion", "slide", "0 0 1", lo[2], hi[2])}
            <geom type="capsule" fromto="0 0 -0.30 0 0 -0.004" size="0.003" mass="0.05"
                  contype="0" conaffinity="0" rgba="0.2 0.2 0.22 1"/>
            <body name="{n}_roll_link" gravcomp="1">
              {_joint(f"{n}_roll", "hinge", "0 0 1", lo[3], hi[3])}
              <inertial pos="0 0 0" mass="0.01" diaginertia="1e-7 1e-7 1e-7"/>
              {tip}
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _actuators(arm: ArmConfig) -> str:
    # kv damping is integrated implicitly (implicitfast), which is what keeps these stiff servos stable
    gains = {"yaw": (400, 10), "pitch": (400, 10), "insertion": (4000, 60), "roll": (2, 0.05),
             "wrist_pitch": (2, 0.05), "wrist_yaw": (2, 0.05)}
    lines = [f'<position name="{arm.name}_{j}" joint="{arm.name}_{j}" kp="{gains[j][0]}" kv="{gains[j][1]}"/>'
             for j in arm.joint_names]
    if arm.kind == "psm":
        lines += [f'<position name="{arm.name}_jaw{i}" joint="{arm.name}_jaw{i}" kp="0.1" kv="0.002"/>'
                  for i in (1, 2)]
    return "\n    ".join(lines)


def _ring(index: int, centre: np.ndarray) -> str:
    r, segments = scene.RING_MAJOR_RADIUS, scene.RING_SEGMENTS
    angles = np.linspace(0.0, 2 * np.pi, segments + 1)
    geoms = []
    for k in range(segments):
        a, b = angles[k], angles[k + 1]
        fromto = (r * np.cos(a), r * np.sin(a), 0.0, r * np.cos(b), r * np.sin(b), 0.0)
        geoms.append(f'<geom name="ring{index}_seg{k}" type="capsule" fromto="{_fmt(fromto)}" '
                     f'size="{scene.RING_TUBE_RADIUS}" mass="{scene.RING_MASS / segments:.6g}" '
                     f'contype="1" conaffinity="3" condim="4" friction="1.2 0.02 0.001" '
                     f'rgba="{RING_COLOURS[index % len(RING_COLOURS)]}"/>')
    outer = scene.RING_MAJOR_RADIUS + scene.RING_TUBE_RADIUS
    geoms.append(f'<geom name="ring{index}_base" type="cylinder" size="{outer:.6g} {scene.RING_TUBE_RADIUS}" '
                 f'mass="0.0001" contype="4" conaffinity="4" condim="3" group="3" rgba="0 0 0 0"/>')
    return f"""
    <body name="ring{index}" pos="{_fmt(centre)}">
      <freejoint name="ring{index}"/>
      {"".join(geoms)}
    </body>"""


def _pegs(board: scene.PegBoard) -> str:
    return "".join(
        f'\n    <geom name="peg{i}" type="cylinder" pos="{x:.6g} {y:.6g} {scene.PEG_HEIGHT / 2:.6g}" '
        f'size="{scene.PEG_RADIUS} {scene.PEG_HEIGHT / 2:.6g}" contype="1" conaffinity="3" rgba="0.85 0.85 0.8 1"/>'
        for i, (x, y) in enumerate(board.pegs))


def _grasp_welds(config: CartConfig, board: scene.PegBoard) -> str:
    """One inactive weld per (instrument arm, ring): the documented grasp assist switches them on."""
    return "".join(
        f'\n    <weld name="{arm.name}_holds_ring{i}" body1="{arm.name}_wrist_yaw_link" body2="ring{i}" '
        f'active="false" solref="0.004 1"/>'
        for arm in config.arms if arm.kind == "psm" for i in range(board.ring_count))


def build_mjcf(config: CartConfig, board: scene.PegBoard) -> str:
    """The complete MJCF document for `config` and `board`."""
    bx, by, _ = scene.BOARD_HALF_SIZE
    arms = "".join(_arm_body(arm) for arm in config.arms)
    rings = "".join(_ring(i, board.ring_start_position(i)) for i in range(board.ring_count))
    actuators = "\n    ".join(_actuators(arm) for arm in config.arms)
    return f"""<mujoco model="telesurg_cart">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{config.physics_timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="1280" offheight="720"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.6 0.6 0.6"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.25 0.25" rgb2="0.5 0.2 0.22" width="64" height="64"/>
    <material name="tissue" texture="grid" texrepeat="36 24"/>
  </asset>
  <worldbody>
    <light pos="0 -0.1 0.4" dir="0 0.25 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="board" type="plane" size="{3 * bx:.6g} {3 * by:.6g} 0.01" material="tissue"
          contype="4" conaffinity="6" condim="3" friction="0.8 0.01 0.001"/>{_pegs(board)}{arms}{rings}
  </worldbody>
  <equality>{_grasp_welds(config, board)}
  </equality>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""
