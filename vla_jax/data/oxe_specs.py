"""Standardization specs of the Open X-Embodiment (OXE) datasets of Octo's and OpenVLA's named mixtures.

One :class:`~vla_jax.data.specs.RobotSpec` per dataset, named like the dataset's directory on the OXE
bucket (``gs://gresearch/robotics/<name>/<version>``; ``bridge_dataset`` is the rail-berkeley BridgeData
V2 release Octo and OpenVLA train on). Each spec reproduces the dataset's standardization function in
Octo (``octo/data/oxe/oxe_standardization_transforms.py``) and OpenVLA
(``prismatic/vla/datasets/rlds/oxe/transforms.py``) with column expressions (vla_jax/data/columns.py):

- actions become 7-D: end-effector delta xyz (3), rotation (3, Euler), gripper (1, 1 = open, 0 = closed
  after conversion); the gripper dim is kept raw (``action_gripper_dims=(6,)``), the rest bounds_q99;
- state is the keys Octo's ``state_obs_keys`` name, without its zero padding (datasets with no state
  have ``state_keys=()``); normalized with mean / std;
- camera slot 0 = Octo's "primary", slot 1 = its "wrist"; Octo's "secondary" third-person views are
  not read (slot 2 is the right wrist of bimanual robots);
- the instruction is read for every dataset, as OpenVLA does (Octo blanks it for some; see ``notes``).

What is approximated is in each spec's ``notes`` and in docs/data.md (named OXE mixtures).

:data:`STEP_FEATURES` records, per dataset, the step features the spec reads as the release stores them
(feature key -> ``"image HxW"``, ``"text"``, ``"<dtype> <shape>"`` (no shape: a scalar), ``"zlib float32 N"``
for a TFDS Tensor stored with zlib encoding, ``"codes N"`` for text stored as N int32 code points padded
with 0). Shapes are the TFDS catalog's.
:func:`vla_jax.data.builders.write_tiny_oxe_dataset` writes tiny datasets in exactly these layouts.
"""

from __future__ import annotations

from vla_jax.data.specs import RobotSpec, register_spec

STEP_FEATURES: dict[str, dict[str, str]] = {}

_RT1_ACTION = ("action/world_vector", "action/rotation_delta")  # RT-1 style action dicts: xyz, rpy
_RT1_FEATURES = {"action/world_vector": "float32 3", "action/rotation_delta": "float32 3"}


def _register(name: str, *, cameras: tuple, state: tuple, action: tuple, state_dim: int, hz: float,
              features: dict[str, str], notes: str, instruction: str = "language_instruction") -> RobotSpec:
    """Registers the spec of OXE dataset ``name`` (7-D end-effector actions, gripper last) and its step
    features. ``cameras``: (primary, wrist) step keys, None where the dataset has no such view."""
    STEP_FEATURES[name] = features
    return register_spec(RobotSpec(
        name=name, image_keys=(*cameras, None), state_keys=state, action_keys=action, instruction_key=instruction,
        action_dim=7, state_dim=state_dim, control_hz=hz, action_gripper_dims=(6,),
        action_translation_dims=((0, 1, 2),), notes=notes))


# --- Octo's oxe_magic_soup ----------------------------------------------------------------------------

_register(
    "fractal20220817_data", cameras=("observation/image", None),
    state=("observation/base_pose_tool_reached", "observation/gripper_closed"), state_dim=8,
    action=(*_RT1_ACTION, "rel2abs_gripper(action/gripper_closedness_action)"),
    instruction="observation/natural_language_instruction", hz=3.0,
    features={"observation/image": "image 256x320", "observation/base_pose_tool_reached": "float32 7",
              "observation/gripper_closed": "float32 1", **_RT1_FEATURES,
              "action/gripper_closedness_action": "float32 1", "observation/natural_language_instruction": "text"},
    notes="RT-1 (Google robot): relative gripper command (+1 close, -1 open) made absolute; state = EEF "
          "xyz + quaternion + gripper closed.")

_register(
    "kuka", cameras=("observation/image", None),
    state=("zlib_float32(observation/clip_function_input/base_pose_tool_reached)",
           "zlib_float32(observation/gripper_closed)"), state_dim=8,
    action=(*_RT1_ACTION, "rel2abs_gripper(action/gripper_closedness_action)"),
    instruction="observation/natural_language_instruction", hz=10.0,
    features={"observation/image": "image 512x640",
              "observation/clip_function_input/base_pose_tool_reached": "zlib float32 7",
              "observation/gripper_closed": "zlib float32 1", **_RT1_FEATURES,
              "action/gripper_closedness_action": "float32 1", "observation/natural_language_instruction": "text"},
    notes="QT-Opt Kuka: state stored zlib-compressed (decoded as Octo does); relative gripper made absolute. "
          "Octo blanks the instruction, OpenVLA keeps it (kept here).")

_register(
    "bridge_dataset", cameras=("observation/image_0", None),
    state=("observation/state",), state_dim=7,
    action=("action[0:6]", "binarize_gripper(action[6:7])"), hz=5.0,
    features={"observation/image_0": "image 256x256", "observation/state": "float32 7", "action": "float32 7",
              "language_instruction": "text"},
    notes="BridgeData V2 (rail-berkeley release; OpenVLA's bridge_orig): gripper binarized. Approximated: "
          "Octo and OpenVLA relabel the 6 movement dims from state differences and drop the last step "
          "(OpenVLA also the all-zero first step); here the recorded actions are used. image_1..3 unused.")

_register(
    "taco_play", cameras=("observation/rgb_static", "observation/rgb_gripper"),
    state=("observation/robot_obs[0:6]", "observation/robot_obs[7:8]"), state_dim=7,
    action=("action/rel_actions_world[0:6]", "clip01(action/rel_actions_world[6:7])"),
    instruction="observation/natural_language_instruction", hz=15.0,
    features={"observation/rgb_static": "image 150x200", "observation/rgb_gripper": "image 84x84",
              "observation/robot_obs": "float32 15", "action/rel_actions_world": "float32 7",
              "observation/natural_language_instruction": "text"},
    notes="Franka play: Octo's indices and conversion (gripper clipped to [0, 1], state robot_obs[:6] + "
          "robot_obs[7:8]); the TFDS description gives -1 = open, 1 = close and robot_obs[6] = gripper width.")

_register(
    "jaco_play", cameras=("observation/image", "observation/image_wrist"),
    state=("observation/end_effector_cartesian_pos",), state_dim=7,
    action=("action/world_vector", "zeros(3)", "rel2abs_gripper(action/gripper_closedness_action)"),
    instruction="observation/natural_language_instruction", hz=10.0,
    features={"observation/image": "image 224x224", "observation/image_wrist": "image 224x224",
              "observation/end_effector_cartesian_pos": "float32 7", "action/world_vector": "float32 3",
              "action/gripper_closedness_action": "float32 1", "observation/natural_language_instruction": "text"},
    notes="Jaco 2: translation-only actions, rotation zero; relative gripper made absolute.")

_register(
    "berkeley_cable_routing", cameras=("observation/image", "observation/wrist45_image"),
    state=("observation/robot_state",), state_dim=7,
    action=(*_RT1_ACTION, "zeros(1)"), instruction="observation/natural_language_instruction", hz=10.0,
    features={"observation/image": "image 128x128", "observation/wrist45_image": "image 128x128",
              "observation/robot_state": "float32 7", **_RT1_FEATURES,
              "observation/natural_language_instruction": "text"},
    notes="Franka cable routing: no gripper action (zero, as Octo); top_image unused. Octo blanks the "
          "instruction, OpenVLA keeps it.")

_register(
    "roboturk", cameras=("observation/front_rgb", None), state=(), state_dim=0,
    action=(*_RT1_ACTION, "invert_gripper(clip01(action/gripper_closedness_action))"),
    instruction="observation/natural_language_instruction", hz=10.0,
    features={"observation/front_rgb": "image 480x640", **_RT1_FEATURES,
              "action/gripper_closedness_action": "float32 1", "observation/natural_language_instruction": "text"},
    notes="Sawyer RoboTurk: no state; absolute gripper inverted. Octo blanks the instruction, OpenVLA keeps it.")

_register(
    "nyu_door_opening_surprising_effectiveness", cameras=(None, "observation/image"), state=(), state_dim=0,
    action=(*_RT1_ACTION, "rel2abs_gripper(action/gripper_closedness_action)"),
    instruction="observation/natural_language_instruction", hz=3.0,
    features={"observation/image": "image 720x960", **_RT1_FEATURES,
              "action/gripper_closedness_action": "float32 1", "observation/natural_language_instruction": "text"},
    notes="Hello Stretch door opening: the only camera is the wrist camera (slot 1), no state; relative "
          "gripper made absolute. In Octo's soup, not in OpenVLA's.")

_register(
    "viola", cameras=("observation/agentview_rgb", "observation/eye_in_hand_rgb"),
    state=("observation/joint_states", "observation/gripper_states"), state_dim=8,
    action=(*_RT1_ACTION, "invert_gripper(clip01(action/gripper_closedness_action))"),
    instruction="observation/natural_language_instruction", hz=20.0,
    features={"observation/agentview_rgb": "image 224x224", "observation/eye_in_hand_rgb": "image 224x224",
              "observation/joint_states": "float32 7", "observation/gripper_states": "float32 1",
              **_RT1_FEATURES, "action/gripper_closedness_action": "float32",
              "observation/natural_language_instruction": "text"},
    notes="Franka VIOLA: joint state; absolute gripper clipped and inverted. Octo blanks the instruction.")

_register(
    "berkeley_autolab_ur5", cameras=("observation/image", "observation/hand_image"),
    state=("observation/robot_state[6:14]",), state_dim=8,
    action=(*_RT1_ACTION, "rel2abs_gripper(action/gripper_closedness_action)"),
    instruction="observation/natural_language_instruction", hz=5.0,
    features={"observation/image": "image 480x640", "observation/hand_image": "image 480x640",
              "observation/robot_state": "float32 15", **_RT1_FEATURES,
              "action/gripper_closedness_action": "float32", "observation/natural_language_instruction": "text"},
    notes="UR5: state robot_state[6:14] (EEF xyz + quaternion + gripper); relative gripper made absolute.")

_register(
    "toto", cameras=("observation/image", None), state=("observation/state",), state_dim=7,
    action=(*_RT1_ACTION, "action/open_gripper"), instruction="observation/natural_language_instruction", hz=30.0,
    features={"observation/image": "image 480x640", "observation/state": "float32 7", **_RT1_FEATURES,
              "action/open_gripper": "bool", "observation/natural_language_instruction": "text"},
    notes="Franka TOTO: joint state; open_gripper (bool) as the gripper. Octo blanks the instruction.")

_register(
    "language_table", cameras=("observation/rgb", None), state=("observation/effector_translation",), state_dim=2,
    action=("action", "zeros(4)", "ones(1)"), instruction="text_from_codes(observation/instruction)", hz=10.0,
    features={"observation/rgb": "image 360x640", "observation/effector_translation": "float32 2",
              "action": "float32 2", "observation/instruction": "codes 512"},
    notes="xArm Language-Table: 2-D planar action padded with zero z and rotation, gripper open (1); "
          "the instruction is int code points padded with 0.")

_register(
    "stanford_hydra_dataset_converted_externally_to_rlds", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:3]", "observation/state[7:10]", "observation/state[-3:-2]"), state_dim=7,
    action=("action[0:6]", "invert_gripper(action[-1:])"), hz=10.0,
    features={"observation/image": "image 240x320", "observation/wrist_image": "image 240x320",
              "observation/state": "float32 27", "action": "float32 7", "language_instruction": "text"},
    notes="Franka HYDRA: state EEF xyz + Euler + gripper; close-gripper action inverted. Octo blanks the "
          "instruction.")

_register(
    "austin_buds_dataset_converted_externally_to_rlds", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:8]",), state_dim=8,
    action=("action[0:6]", "invert_gripper(clip01(action[-1:]))"), hz=20.0,
    features={"observation/image": "image 128x128", "observation/wrist_image": "image 128x128",
              "observation/state": "float32 24", "action": "float32 7", "language_instruction": "text"},
    notes="Franka BUDS: state joints + gripper; gripper clipped and inverted. Octo blanks the instruction.")

_register(
    "nyu_franka_play_dataset_converted_externally_to_rlds", cameras=("observation/image", None),
    state=("observation/state[-6:]",), state_dim=6,
    action=("action[-8:-2]", "clip01(action[-2:-1])"), hz=3.0,
    features={"observation/image": "image 128x128", "observation/state": "float32 13", "action": "float32 15",
              "language_instruction": "text"},
    notes="Franka play: EEF delta + gripper out of the 15-D action; image_additional_view and depth unused. "
          "Octo blanks the instruction.")

_register(
    "furniture_bench_dataset_converted_externally_to_rlds", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:7]", "observation/state[-1:]"), state_dim=8,
    action=("action[0:3]", "euler_from_quat(action[3:7])", "invert_gripper(clip01(action[-1:]))"), hz=10.0,
    features={"observation/image": "image 224x224", "observation/wrist_image": "image 224x224",
              "observation/state": "float32 35", "action": "float32 8", "language_instruction": "text"},
    notes="Franka FurnitureBench: quaternion action rotation -> Euler; gripper clipped and inverted. Its "
          "feature widths (state 35, action 8) are not on a TFDS catalog page; the spec needs >= 8 of each.")

_register(
    "ucsd_kitchen_dataset_converted_externally_to_rlds", cameras=("observation/image", None),
    state=("observation/state[0:7]",), state_dim=7, action=("action[0:-1]",), hz=2.0,
    features={"observation/image": "image 480x640", "observation/state": "float32 21", "action": "float32 8",
              "language_instruction": "text"},
    notes="xArm kitchen: joint angles; the 8-D action without its terminate flag (gripper as recorded).")

_register(
    "austin_sailor_dataset_converted_externally_to_rlds", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state",), state_dim=8,
    action=("action[0:6]", "invert_gripper(clip01(action[-1:]))"), hz=20.0,
    features={"observation/image": "image 128x128", "observation/wrist_image": "image 128x128",
              "observation/state": "float32 8", "action": "float32 7", "language_instruction": "text"},
    notes="Franka SAILOR: state EEF xyz + quaternion + gripper; gripper clipped and inverted. Octo blanks the "
          "instruction.")

_register(
    "austin_sirius_dataset_converted_externally_to_rlds", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state",), state_dim=8,
    action=("action[0:6]", "invert_gripper(clip01(action[-1:]))"), hz=20.0,
    features={"observation/image": "image 84x84", "observation/wrist_image": "image 84x84",
              "observation/state": "float32 8", "action": "float32 7", "language_instruction": "text"},
    notes="Franka Sirius: state joints + gripper; gripper clipped and inverted. Octo blanks the instruction.")

_register(
    "bc_z", cameras=("observation/image", None),
    state=("observation/present/xyz", "observation/present/axis_angle", "observation/present/sensed_close"),
    state_dim=7,
    action=("action/future/xyz_residual[0:3]", "action/future/axis_angle_residual[0:3]",
            "invert_gripper(action/future/target_close[0:1])"),
    instruction="observation/natural_language_instruction", hz=10.0,
    features={"observation/image": "image 171x213", "observation/present/xyz": "float32 3",
              "observation/present/axis_angle": "float32 3", "observation/present/sensed_close": "float32 1",
              "action/future/xyz_residual": "float32 30", "action/future/axis_angle_residual": "float32 30",
              "action/future/target_close": "int64 10", "observation/natural_language_instruction": "text"},
    notes="BC-Z (Google robot): first of the 10 future actions; rotation stays axis-angle (as Octo); "
          "gripper target inverted. OpenVLA: use version 0.1.0.")

_register(
    "dlr_edan_shared_control_converted_externally_to_rlds", cameras=("observation/image", None),
    state=("observation/state",), state_dim=7, action=("action[0:6]", "invert_gripper(action[-1:])"), hz=5.0,
    features={"observation/image": "image 360x640", "observation/state": "float32 7", "action": "float32 7",
              "language_instruction": "text"},
    notes="DLR EDAN: gripper inverted.")

_register(
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds",
    cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:7]", "observation/state[7:8]"), state_dim=8,
    action=("action[0:3]", "euler_from_quat(action[3:7])", "action[7:8]"), hz=20.0,
    features={"observation/image": "image 360x640", "observation/wrist_image": "image 240x320",
              "observation/state": "float32 20", "action": "float32 8", "language_instruction": "text"},
    notes="Franka pick/insert: absolute EEF pose action, quaternion -> Euler; state joints + gripper.")

_register(
    "utaustin_mutex", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:8]",), state_dim=8,
    action=("action[0:6]", "invert_gripper(clip01(action[-1:]))"), hz=20.0,
    features={"observation/image": "image 128x128", "observation/wrist_image": "image 128x128",
              "observation/state": "float32 24", "action": "float32 7", "language_instruction": "text"},
    notes="Franka MUTEX: state joints + gripper; gripper clipped and inverted. Octo blanks the instruction.")

_register(
    "berkeley_fanuc_manipulation", cameras=("observation/image", "observation/wrist_image"),
    state=("observation/state[0:6]", "observation/state[6:7]"), state_dim=7,
    action=("action", "invert_gripper(observation/state[6:7])"), hz=10.0,
    features={"observation/image": "image 224x224", "observation/wrist_image": "image 224x224",
              "observation/state": "float32 13", "action": "float32 6", "language_instruction": "text"},
    notes="Fanuc Mate: no gripper action recorded; the inverted gripper state stands in (as Octo).")

_register(
    "cmu_stretch", cameras=("observation/image", None),
    state=("observation/state[0:3]", "observation/state[-1:]"), state_dim=4, action=("action[0:-1]",), hz=10.0,
    features={"observation/image": "image 128x128", "observation/state": "float32 4", "action": "float32 8",
              "language_instruction": "text"},
    notes="Hello Stretch: state xyz + gripper; the 8-D action without its terminate flag.")

# --- added by OpenVLA's oxe_magic_soup_plus -------------------------------------------------------------

_register(
    "fmb", cameras=("observation/image_side_1", "observation/image_wrist_1"),
    state=("observation/eef_pose", "observation/state_gripper_pose"), state_dim=8, action=("action",), hz=10.0,
    features={"observation/image_side_1": "image 256x256", "observation/image_wrist_1": "image 256x256",
              "observation/eef_pose": "float32 7", "observation/state_gripper_pose": "float32",
              "action": "float32 7", "language_instruction": "text"},
    notes="Functional Manipulation Benchmark (OpenVLA's fmb_dataset): actions as recorded; image_side_2, "
          "image_wrist_2 and depth unused.")

_register(
    "dobbe", cameras=(None, "observation/wrist_image"), state=("observation/state",), state_dim=7,
    action=("action",), hz=3.75,
    features={"observation/wrist_image": "image 256x256", "observation/state": "float32 7", "action": "float32 7",
              "language_instruction": "text"},
    notes="Dobb-E (Hello Stretch tool): the only camera is on the gripper, so slot 1 (OpenVLA reads it as its "
          "primary image, the only one it uses); actions as recorded.")

_register(
    "droid", cameras=("observation/exterior_image_1_left", "observation/wrist_image_left"),
    state=("observation/cartesian_position", "observation/gripper_position"), state_dim=7,
    action=("action_dict/cartesian_velocity", "invert_gripper(action_dict/gripper_position)"), hz=15.0,
    features={"observation/exterior_image_1_left": "image 180x320", "observation/wrist_image_left": "image 180x320",
              "observation/cartesian_position": "float32 6", "observation/gripper_position": "float32 1",
              "action_dict/cartesian_velocity": "float32 6", "action_dict/gripper_position": "float32 1",
              "language_instruction": "text"},
    notes="DROID (Franka): base-frame velocity actions, gripper position inverted (OpenVLA's baseact). "
          "Approximated: OpenVLA swaps the two exterior cameras at random (exterior_image_2_left is unused "
          "here) and drops all-zero action chunks; language_instruction_2/_3 are alternative phrasings.")

# --- other OXE layouts (not in the named mixtures) --------------------------------------------------------

register_spec(RobotSpec(
    name="aloha",
    image_keys=("observation/cam_high", "observation/cam_left_wrist", "observation/cam_right_wrist"),
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=14, state_dim=14, control_hz=50.0,
    action_normalization="normal",
    action_gripper_dims=(6, 13), state_gripper_dims=(6, 13),
    notes="ALOHA bimanual (aloha_mobile / aloha_static style OXE releases): 14-D joint positions "
          "(6 joints + gripper per arm, left then right); cam_low is unused.",
))
