"""The ``sdhw`` command line: above every folder it dispatches to (golden, rtl_gen, sim, fpga)."""
