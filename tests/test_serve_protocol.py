"""The serving wire format against openpi-client's own codec, the request checks and the robot configs (no model)."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy

from vla_jax.serve.batcher import pad_sizes
from vla_jax.serve.observation import ObservationSpec, RequestError
from vla_jax.serve.protocol import ProtocolError, pack, unpack
from vla_jax.serve.robots import ROBOTS, RobotConfig, RobotConfigError, get_robot


def test_codec_round_trips_with_openpi_client_both_ways():
    obs = {"observation/image": np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "state": np.linspace(0, 1, 8),
           "big_endian": np.arange(3, dtype=">i4"), "flag": np.bool_(True), "scale": np.float32(0.5),
           "nested": {"x": np.zeros((0, 2), np.float16)}, "prompt": "pick", "n": 3, "none": None}
    for decoded in (unpack(msgpack_numpy.packb(obs)), msgpack_numpy.unpackb(pack(obs))):
        assert decoded.keys() == obs.keys() and decoded["prompt"] == "pick" and decoded["n"] == 3
        for key in ("observation/image", "state", "big_endian"):
            assert decoded[key].dtype == obs[key].dtype and np.array_equal(decoded[key], obs[key])
        assert decoded["nested"]["x"].shape == (0, 2) and decoded["scale"] == np.float32(0.5)
        assert decoded["flag"] == np.bool_(True) and decoded["none"] is None


@pytest.mark.parametrize("frame, message", [
    (b"\xc1", "not a msgpack message"),
    (msgpack.packb({"a": 1}) + b"x", "not a msgpack message"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}), "not bool, integer"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|V8", b"shape": [1]}), "not bool, integer"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]}), "does not match"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}), "shape"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "no such", b"shape": [0]}), "unknown array dtype"),
    (msgpack.packb({b"__npgeneric__": True, b"data": "text", b"dtype": "<f4"}), "not a number"),
    (msgpack.packb({1: 2}), "not a msgpack message"),  # integer map keys
])
def test_malformed_frames_are_one_line_protocol_errors(frame, message):
    with pytest.raises(ProtocolError) as e:
        unpack(frame)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_object_arrays_are_never_sent_and_nothing_is_pickled():
    with pytest.raises(TypeError):
        pack({"x": np.array([object()])})
    with pytest.raises(TypeError):
        pack({"x": {1, 2}})
    import vla_jax.serve.protocol as protocol

    assert "pickle" not in open(protocol.__file__).read().replace("unpickled", "")


def spec(robot: str = "droid") -> ObservationSpec:
    return ObservationSpec(get_robot(robot), num_cameras=3, horizon=4, max_action_dim=8)


def droid(**changes) -> dict:
    obs = {"observation/exterior_image_1_left": np.zeros((180, 320, 3), np.uint8),
           "observation/wrist_image_left": np.zeros((180, 320, 3), np.uint8),
           "observation/joint_position": np.zeros(7), "observation/gripper_position": np.zeros(1), "prompt": "go"}
    obs.update(changes)
    return {k: v for k, v in obs.items() if v is not None}


def test_request_checks_accept_flat_and_nested_keys():
    o = spec().parse(droid(noise_seed=5))
    assert [None if i is None else i.shape for i in o.images] == [(180, 320, 3), (180, 320, 3), None]
    assert o.state.shape == (8,) and o.state.dtype == np.float32 and o.noise_seed == 5 and o.prompt == "go"
    nested = {"observation": {"exterior_image_1_left": np.zeros((8, 8, 3), np.uint8),
                              "wrist_image_left": np.zeros((8, 8, 3), np.uint8),
                              "joint_position": [0.0] * 7, "gripper_position": 1.0}, "prompt": "go"}
    assert spec().parse(nested).state[-1] == 1.0
    aloha = spec("aloha").parse({"images": {k: np.zeros((3, 10, 12), np.uint8) for k in
                                            ("cam_high", "cam_left_wrist", "cam_right_wrist")},
                                 "state": np.zeros(14, np.float32), "prompt": "fold"})
    assert aloha.images[0].shape == (10, 12, 3)  # openpi's ALOHA sends [3, H, W]


@pytest.mark.parametrize("changes, message", [
    (dict(extra=np.zeros(1)), "unknown key 'extra'"),
    (dict(prompt=None), "missing key 'prompt'"),
    (dict(**{"observation/wrist_image_left": None}), "missing key 'observation/wrist_image_left'"),
    (dict(**{"observation/exterior_image_1_left": np.zeros((180, 320, 3), np.float32)}), "has dtype float32"),
    (dict(**{"observation/exterior_image_1_left": np.zeros((180, 320, 4), np.uint8)}), "has 4 channels"),
    (dict(**{"observation/exterior_image_1_left": np.zeros((180, 320), np.uint8)}), "expected uint8 [H, W, 3]"),
    (dict(**{"observation/exterior_image_1_left": np.zeros((0, 320, 3), np.uint8)}), "sides must be"),
    (dict(**{"observation/exterior_image_1_left": "jpeg bytes"}), "is a str"),
    (dict(**{"observation/joint_position": np.zeros(6)}), "has shape [6]; expected [7]"),
    (dict(**{"observation/joint_position": np.array(["a"] * 7)}), "expected numbers"),
    (dict(**{"observation/joint_position": np.full(7, np.nan)}), "non-finite"),
    (dict(prompt=7), "must be a string"),
    (dict(noise=np.zeros((4, 7), np.float32)), "expected float32 [4, 8]"),
    (dict(noise_seed=-1), "integer in [0, 2**63)"),
])
def test_bad_requests_are_one_line_errors_naming_the_key(changes, message):
    with pytest.raises(RequestError) as e:
        spec().parse(droid(**changes))
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RequestError, match="not an observation dict"):
        spec().parse([1, 2])


def test_metadata_describes_every_key():
    described = spec().describe()
    assert described["observation/exterior_image_1_left"] == {"dtype": "uint8", "shape": [None, None, 3],
                                                              "required": True}
    assert described["observation/joint_position"]["shape"] == [7] and described["prompt"]["dtype"] == "str"
    assert described["noise"] == {"dtype": "float32", "shape": [4, 8], "required": False}
    assert spec("aloha").describe()["images/cam_high"]["shape"] == [3, None, None]
    two = ObservationSpec(get_robot("bimanual"), num_cameras=2, horizon=4, max_action_dim=8)
    assert "observation/image_2" not in two.describe()  # the model has two camera slots


def test_robot_registry_and_json_configs(tmp_path):
    assert {"single_arm", "bimanual", "droid", "droid_cartesian", "aloha", "libero"} <= set(ROBOTS)
    path = tmp_path / "ur5.json"
    path.write_text(json.dumps({"name": "ur5", "dataset": "ur5_data", "cameras": ["base_rgb", None, None],
                                "state": [["joints", 6], ["gripper", 1]]}))
    robot = get_robot(str(path))
    assert robot.state_dim == 7 and robot.cameras == ("base_rgb", None, None)
    for bad, message in [("nope", "unknown robot 'nope'"), (str(tmp_path / "x.json"), "does not exist")]:
        with pytest.raises(RobotConfigError, match=message):
            get_robot(bad)
    path.write_text(json.dumps({"name": "ur5", "dataset": "d", "cameras": ["a"], "state": [["s", 1]], "fps": 5}))
    with pytest.raises(RobotConfigError, match="field 'fps' is unknown"):
        get_robot(str(path))
    with pytest.raises(RobotConfigError, match="image_layout"):
        RobotConfig("r", "d", ("a",), (("s", 1),), image_layout="nchw")


def test_pad_sizes():
    assert pad_sizes(1) == (1,) and pad_sizes(8) == (1, 2, 4, 8) and pad_sizes(6) == (1, 2, 4, 6)
    assert pad_sizes(16) == (1, 2, 4, 8, 16)
