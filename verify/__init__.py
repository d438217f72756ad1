"""Verification in the user's hands: formal proofs of the hardware blocks (SBY) and fuzzed loaders."""
