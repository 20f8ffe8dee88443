"""edgeship: take a trained Keras vision model to cameras at the edge."""

__version__ = "0.1.0"
