"""tfnet: scratchnet's networks in real TensorFlow, the oracle of the parity harness.

Every scratchnet layer has a twin built from ``tf.nn`` ops on ``tf.Variable``s (NHWC
activations, HWIO filters, [in, out] dense weights, the same strides and padding), and
its gradients come from ``tf.GradientTape``: nothing in tfnet is differentiated by hand.

Modules (each imports TensorFlow itself, so ``import tfnet`` and ``import tfnet.parity``
stay fast; the ``scratchnet`` CLI imports ``tfnet.parity`` to build its parser):

* ``tfnet.layers``  -- ``twin_layer(layer, dtype)``: the TF twin of one scratchnet layer;
  ``keras_lstm_weights`` / ``lstm_from_keras_weights``: the documented gate-order mapping.
* ``tfnet.model``   -- ``TFModel`` (the twin of a ``Sequential``, parameters keyed
  ``"layer/param"``), ``to_tf(model, twin)``, ``from_tf(twin, model)``.
* ``tfnet.train``   -- ``TFTrainer``: a recipe trained with TensorFlow's own optimizers,
  schedules, moving average and ``tf.nn.l2_loss``, with scratchnet's ``Trainer`` interface.
* ``tfnet.parity``  -- the parity harness (library API and ``scratchnet parity``).
* ``tfnet.keras``   -- ``from_keras(model) -> Sequential``, ``to_keras(sequential) -> keras.Model``.
* ``tfnet.keras_parity`` -- ``scratchnet parity --keras MODEL``: a Keras model against its import.
* ``tfnet.op_parity`` -- ``assert_op``: a NumPy op against a TF function in one line
  (re-exported as ``tfnet.parity.assert_op``).
"""

__all__ = ["layers", "model", "train", "parity", "keras", "keras_parity", "op_parity"]
