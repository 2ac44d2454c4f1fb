"""tools/gpu_check.py's static PTX count (used on GPU machines to state the integer-throughput
ceiling of the OpenCL kernel): only the named kernel's instructions are counted, directives,
labels, comments and braces are not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parent.parent / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check)

PTX = """
.version 8.0
.target sm_90
.entry bm_search(
    .param .u64 bm_search_param_0
)
{
    add.s64 %rd1, %rd2, %rd3;
    add.s64 %rd1, %rd2, %rd3;
}
.entry bm_trials(
    .param .u64 bm_trials_param_0
)
{
    .reg .b32 %r<100>;
    .reg .b64 %rd<50>;
    // a comment
    ld.param.u64 %rd1, [bm_trials_param_0];
    shf.r.wrap.b32 %r1, %r2, %r3, 14;
    shf.r.wrap.b32 %r5, %r3, %r2, 14;
    lop3.b32 %r4, %r1, %r2, %r3, 150;
    { .reg .b32 %tmp; mov.b32 %tmp, 1; }
    add.s64 %rd2, %rd1, %rd3;
    @%p1 bra $L__BB1_2;
$L__BB1_2:
    ret;
}
"""


def test_counts_only_the_trial_kernel_by_opcode():
    c = gpu_check.ptx_instructions(PTX)
    assert c["by_opcode"] == {"shf": 2, "ld": 1, "lop3": 1, "add": 1, "bra": 1, "ret": 1}
    assert c["total"] == 7
    assert gpu_check.ptx_instructions(PTX, "bm_search")["total"] == 2
    assert gpu_check.ptx_instructions("not ptx at all") == {}


def test_int32_ceiling():
    # 132 SMs x 64 ops/clock x 1980 MHz / 6000 instructions per trial
    assert gpu_check.int32_ceiling(6000, 132, 1980) == pytest.approx(2.78784e9)
