"""The ``sdhw`` command line and the generators: config -> Verilog + manifest, model -> program image."""
