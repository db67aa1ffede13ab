"""Benchmarks: scratchnet's fast kernels against the NumPy reference and TensorFlow.

Kernels at the recipes' shapes (test_ops), the training step per recipe and against batch
size (test_train_step), the evaluation forward pass at batch 1 and 1,000 (test_inference);
TensorFlow as tf.function, XLA and Keras ``Model.fit`` (keras_fit), oneDNN off and on.

Run everything and write this CPU's report:   python -m bench.report   (bench/results/<cpu>/)
Smoke test (every benchmark once, small grids): pytest bench --benchmark-disable -q
See docs/performance.md.
"""
