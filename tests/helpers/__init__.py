"""Shared test helpers: real data (scikit-learn digits), real videos, real servers on 127.0.0.1."""
