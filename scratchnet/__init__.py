"""scratchnet: a neural-network engine written by hand in NumPy (and Numba), every
backward pass included, checked tensor by tensor against TensorFlow (``tfnet``)."""

from .gradcheck import check_function, check_gradients
from .inference import load_image, predict, preprocess
from .layers import (LSTM, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Reshape, ShapeError,
                     Sigmoid, Softmax, Tanh)
from .model import Sequential
from .ops import l2_loss, l2_penalty, softmax_cross_entropy

__all__ = ["Layer", "Dense", "Conv2D", "BatchNorm", "MaxPool2D", "ReLU", "Sigmoid", "Tanh", "Softmax", "Dropout",
           "Reshape", "Flatten", "LSTM", "ShapeError", "Sequential", "softmax_cross_entropy", "l2_loss",
           "l2_penalty", "check_gradients", "check_function", "predict", "preprocess", "load_image"]
