"""Every scratchnet op against TensorFlow in one line each (``tfnet.parity.assert_op``):
output and every input gradient, float64 and float32; and the helper itself fails, with
the table, on a broken backward."""

import numpy as np
import pytest

from scratchnet import ops
from tfnet.parity import assert_op

tf = pytest.importorskip("tensorflow")
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


@DTYPES
def test_pointwise(dtype):
    assert_op(ops.relu_forward, ops.relu_backward, tf.nn.relu, [(4, 9)], dtype=dtype, away_from=0.0)
    assert_op(ops.sigmoid_forward, ops.sigmoid_backward, tf.sigmoid, [(3, 7)], dtype=dtype)
    assert_op(ops.tanh_forward, ops.tanh_backward, tf.tanh, [(2, 4, 4, 3)], dtype=dtype)
    assert_op(ops.softmax_forward, ops.softmax_backward, tf.nn.softmax, [(5, 10)], dtype=dtype)


@DTYPES
def test_dense(dtype):
    assert_op(ops.dense_forward, ops.dense_backward, lambda x, w, b: x @ w + b, [(5, 7), (7, 4), (4,)], dtype=dtype)


CONVS = [((2, 7, 7, 3), (3, 3, 3, 4), 1, "SAME"), ((1, 12, 12, 1), (6, 6, 1, 2), 1, "SAME"),  # pad 2/3
         ((2, 14, 14, 1), (5, 5, 1, 3), 2, "SAME"), ((2, 9, 7, 2), (3, 2, 2, 2), 2, "VALID")]  # pad 1/2; VALID


@DTYPES
@pytest.mark.parametrize("x,w,stride,padding", CONVS, ids=[f"{c[1][0]}x{c[1][1]} s{c[2]} {c[3]}" for c in CONVS])
def test_conv2d(x, w, stride, padding, dtype):
    assert_op(lambda x, w, b: ops.conv2d_forward(x, w, b, stride, padding), ops.conv2d_backward,
              lambda x, w, b: tf.nn.conv2d(x, w, stride, padding) + b, [x, w, w[-1:]], dtype=dtype)


@DTYPES
@pytest.mark.parametrize("k,s,padding", [(2, 2, "SAME"), (3, 1, "VALID"), (3, 2, "SAME")])
def test_max_pool(k, s, padding, dtype):
    assert_op(lambda x: ops.max_pool_forward(x, (k, k), (s, s), padding), ops.max_pool_backward,
              lambda x: tf.nn.max_pool2d(x, k, s, padding), [(2, 7, 7, 2)], dtype=dtype)


@DTYPES
def test_dropout_with_a_fixed_mask(dtype):
    mask = np.random.default_rng(0).random((3, 20)) >= 0.25
    assert_op(lambda x: ops.dropout_forward(x, mask, 0.75), ops.dropout_backward,
              lambda x: tf.where(mask, x * tf.constant(1 / 0.75, x.dtype), 0), [(3, 20)], dtype=dtype)


@DTYPES
@pytest.mark.parametrize("fb", [1.0, 0.0])
def test_lstm(fb, dtype):
    from tfnet.layers import lstm_sequence

    assert_op(lambda x, k, b: ops.lstm_forward(x, k, b, fb), ops.lstm_backward,
              lambda x, k, b: lstm_sequence(x, k, b, fb), [(2, 5, 3), (3 + 4, 16), (16,)], dtype=dtype)


def test_a_broken_backward_fails_with_the_table():
    broken = lambda dy, y: ops.tanh_backward(dy, y) * (1 + 1e-7)  # noqa: E731
    with pytest.raises(AssertionError, match=r"(?s)dx0 .*FAIL.*FIRST DIVERGENCE: dx0"):
        assert_op(ops.tanh_forward, broken, tf.tanh, [(3, 4)])
    with pytest.raises(AssertionError, match="returned 1 gradients for 2 inputs"):
        assert_op(lambda a, b: (a * b, (a, b)), lambda dy, c: dy * c[1], tf.multiply, [(3,), (3,)])


def test_kinks_and_absolute_tolerances():
    from tfnet.op_parity import op_inputs

    (x,) = op_inputs([(1000,)], away_from=[0.0, 1.0], margin=0.1)
    assert np.abs(x).min() >= 0.1 and np.abs(x - 1).min() >= 0.1 - 1e-15
    # judged on the max abs error instead: ReLU is exact in both engines
    case = assert_op(ops.relu_forward, ops.relu_backward, tf.nn.relu, [(4, 4)], atol=0.0, grad_atol=0.0)
    assert [r.tol for r in case.rows] == [0.0, 0.0] and case.ok


def test_the_helper_is_in_tfnet_parity_without_importing_tensorflow():
    import subprocess
    import sys

    code = "import sys, tfnet.parity; tfnet.parity.assert_op; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
