"""cocotb testbench library for the generated Verilog (checked bit for bit against :mod:`golden`)."""
