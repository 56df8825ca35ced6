"""Verification methods, one module each; ``kiln.verify.VERIFIERS`` registers them."""
