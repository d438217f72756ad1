"""Amaranth hardware of the SD accelerator (coefficient decoder, rebuild unit, MAC array, requantiser, sequencer).

The hardware blocks arrive with the accelerator issue; the numbers they must match live in :mod:`golden`.
"""
