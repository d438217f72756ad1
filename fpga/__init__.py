"""yosys/nextpnr flows (YoWASP), board tops and the UART host driver."""
