"""AT methods: an inner attack plus a pure loss of logits, registered by name.

One training loop (`workloads.trial`) serves them all: it runs the method's
attack, computes the logits the method asks for, and calls its loss.
"""
from workloads.methods.registry import METHODS, Logits, Method, Terms, get_method, read_fields, register
import workloads.methods.catalog  # noqa: F401  (registers the methods)

__all__ = ["METHODS", "Logits", "Method", "Terms", "get_method", "read_fields", "register"]
