"""`python -m clusterbench perf` compares like with like: a bf16 step's share of the GEMM rate is
of the bf16 torch.mm rate measured in the same run, an fp32 step's of the fp32 rate."""

from __future__ import annotations

import json

import pytest

from clusterbench.perf.__main__ import main as perf_main

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [(loss, impl) for loss in ("temi", "scanv2") for impl in ("fused", "loop")]


def quick(tmp_path, capsys, *flags: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    capsys.readouterr()
    assert perf_main(["--quick", "--memory", "off", "--out", str(out), *flags]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.slow
def test_every_fraction_is_of_the_rate_of_its_own_dtype(tmp_path, capsys) -> None:
    report, printed = quick(tmp_path, capsys, "--bf16")
    rates = report["gemm_flops_per_second_by_dtype"]
    assert set(rates) == {"float32", "bfloat16"} and min(rates.values()) > 0
    assert report["step_dtype"] == "bfloat16"
    assert report["gemm_flops_per_second"] == rates["float32"]  # the scalar stays fp32
    table = [line.split() for line in printed.splitlines()]
    for loss, impl in ROWS:
        row = report["results"][loss][impl]
        assert row["gemm_dtype"] == "bfloat16"
        assert row["gemm_fraction"] == pytest.approx(row["flops_per_second"] / rates["bfloat16"])
        (line,) = [t for t in table if t[:2] == [loss, impl]]
        assert line[6] == "bf16" and float(line[5].rstrip("%")) == pytest.approx(
            100 * row["gemm_fraction"], abs=0.06
        )
    assert "fp32" in printed and "bf16" in printed  # both rates printed, each named

    # fp32 steps: unchanged in meaning, a fraction of the fp32 rate (no bf16 rate measured)
    report, printed = quick(tmp_path, capsys)
    assert report["gemm_flops_per_second_by_dtype"] == {"float32": report["gemm_flops_per_second"]}
    assert report["step_dtype"] == "float32"
    for loss, impl in ROWS:
        row = report["results"][loss][impl]
        assert row["gemm_dtype"] == "float32"
        fraction = row["flops_per_second"] / report["gemm_flops_per_second"]
        assert row["gemm_fraction"] == pytest.approx(fraction)
    assert " bf16" not in printed.split("loss", 1)[1]
