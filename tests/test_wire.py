import numpy as np
import pytest

from cotune.quantization.wire import decode, encode, wire_bytes


@pytest.fixture
def state():
    rng = np.random.default_rng(0)
    return {"A": rng.normal(0, 0.02, (8, 576)).astype(np.float32), "B": rng.normal(0, 1e-3, (1536, 8)).astype(np.float32)}


@pytest.mark.parametrize("fmt, ratio, tol", [("fp32", 1.0, 0.0), ("fp16", 0.5, 1e-3), ("int8", 0.26, 5e-3)])
def test_round_trip_error_and_size(state, fmt, ratio, tol):
    encoded = encode(state, fmt)
    decoded = decode(encoded)
    assert set(decoded) == set(state)
    for key in state:
        assert decoded[key].dtype == np.float32 and decoded[key].shape == state[key].shape
        assert np.abs(decoded[key] - state[key]).max() <= tol * np.abs(state[key]).max()
    assert wire_bytes(encoded) <= ratio * wire_bytes(encode(state, "fp32"))


def test_int8_without_scales_is_refused(state):
    encoded = encode(state, "int8")
    encoded.pop("A.q8scale")
    with pytest.raises(ValueError, match="without its scales"):
        decode(encoded)


def test_zero_tensor_survives_int8():
    zero = {"z": np.zeros((4, 16), np.float32)}
    assert np.array_equal(decode(encode(zero, "int8"))["z"], zero["z"])
