"""Drive the accelerator's host port from an Amaranth testbench: load an image, run, read back."""
from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from rtl_gen.image import ProgramImage
from sdhw import hostbus as hb
from sdhw.accelerator import Accelerator


class Host:
    def __init__(self, dut: Accelerator, ctx):
        self.dut, self.ctx = dut, ctx

    async def write(self, addr: int, data: int) -> None:
        bus = self.dut.bus
        self.ctx.set(bus.addr, addr)
        self.ctx.set(bus.w_data, data & 0xFFFFFFFF)
        self.ctx.set(bus.w_en, 1)
        await self.ctx.tick()
        self.ctx.set(bus.w_en, 0)

    async def read(self, addr: int) -> int:
        bus = self.dut.bus
        self.ctx.set(bus.addr, addr)
        self.ctx.set(bus.r_en, 1)
        await self.ctx.tick()
        self.ctx.set(bus.r_en, 0)
        for _ in range(hb.READ_LATENCY - 1):
            assert not self.ctx.get(bus.r_valid), "r_valid early"
            await self.ctx.tick()
        assert self.ctx.get(bus.r_valid), f"r_valid low {hb.READ_LATENCY} cycles after r_en"
        return self.ctx.get(bus.r_data)

    async def csr(self, offset: int) -> int:
        return await self.read((hb.REGION_CSR << 16) | offset)

    async def counter(self, offset: int) -> int:
        return await self.csr(offset) | (await self.csr(offset + 1) << 32)

    async def load(self, image: ProgramImage) -> None:
        for addr, word in image.writes():
            await self.write(addr, word)

    async def run(self, image: ProgramImage, x_q: np.ndarray, *, timeout: int = 200_000) -> dict:
        """Write one run's input (the image's batch of inputs, one after the other), start, wait, return
        outputs (the batch's), status and counters."""
        for k, v in enumerate(np.asarray(x_q).reshape(-1)):
            await self.write((image.input_region << 16) | k, int(v))
        await self.write((hb.REGION_CSR << 16) | hb.CSR_CONTROL, hb.CONTROL_START)
        for _ in range(timeout):
            status = await self.csr(hb.CSR_STATUS)
            if not status & hb.STATUS_BUSY:
                break
        else:
            raise AssertionError(f"accelerator still busy after {timeout} polls")
        n_out = image.run_outputs
        out = []
        if status & hb.STATUS_DONE:
            for k in range(n_out):
                v = await self.read((image.output_region << 16) | k)
                out.append(v - (1 << 32) if v >= 1 << 31 else v)
        return {
            "status": status, "error_code": (status >> 8) & 0xFF, "layer": status >> 16,
            "output": np.asarray(out, dtype=np.int64),
            "cycles": await self.counter(hb.CSR_CYCLES), "macs": await self.counter(hb.CSR_MACS),
            "skipped": await self.counter(hb.CSR_SKIPPED), "stalls": await self.counter(hb.CSR_STALLS),
        }


def simulate(dut: Accelerator, image: ProgramImage, inputs: list[np.ndarray], *, load: bool = True,
             timeout: int = 200_000) -> list[dict]:
    """Load ``image`` once, run every input (each within ``timeout`` status polls), return the per-run results."""
    results = []

    async def bench(ctx):
        host = Host(dut, ctx)
        if load:
            await host.load(image)
        for x in inputs:
            results.append(await host.run(image, x, timeout=timeout))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results
