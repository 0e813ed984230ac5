"""The static report's reading of machine code (benchmarks/sass.py), on a small hand-written
listing in nvdisasm's format: loops found from back edges, the rotate loop told from a copy loop,
instructions per item from its stores, callees kept apart, local memory and fused multiply-adds
flagged. (CI runs the report itself on the built library: .ci/run.)"""

from __future__ import annotations

import pytest

from benchmarks import sass

KERNEL = (
    "_ZN8yarn_ext4cuda20rotate_tokens_kernelIN3c108BFloat16ELi8ELb0ELb1EEEvNS_15TokenRotate"
    "ArgsIT_EE"
)
DEMANGLED = (
    "void yarn_ext::cuda::rotate_tokens_kernel<c10::BFloat16, 8, false, true>"
    "(yarn_ext::TokenRotateArgs<c10::BFloat16>)"
)


def listing(rotation: list[str], extra: list[str] = ()) -> str:
    """A kernel: setup, a rotate loop (two 16-byte stores: one item), a copy loop, and a callee."""
    lines = [f".text.{KERNEL}:", f"{KERNEL}:"]
    address = 0

    def emit(text: str) -> None:
        nonlocal address
        lines.append(f"        /*{address:04x}*/                   {text} ;")
        address += 16

    emit("S2R R0, SR_TID.X")
    emit("ISETP.GE.AND P0, PT, R0, 0x8, PT")
    emit("@P0 BRA `(.L_x_9)")
    for text in extra:
        emit(text)
    lines.append(".L_x_1:")
    emit("LDG.E.128 R4, desc[UR8][R2.64]")
    emit("LDG.E.128 R8, desc[UR8][R2.64+0x80]")
    for text in rotation:
        emit(text)
    emit("STG.E.128 desc[UR8][R2.64], R12")
    emit("STG.E.128 desc[UR8][R2.64+0x80], R16")
    emit("IADD3 R2, P1, R2, 0x100, RZ")
    emit("@!P1 BRA `(.L_x_1)")
    lines.append(".L_x_9:")
    lines.append(".L_x_2:")
    emit("LDG.E.128 R4, desc[UR8][R2.64]")
    emit("STG.E.128 desc[UR8][R6.64], R4")
    emit("@!P1 BRA `(.L_x_2)")
    emit("EXIT")
    lines.append(f"$__internal_{KERNEL}$callee:")
    emit("DFMA R4, R4, R6, R8")
    emit("RET.REL.NODEC R6 `(callee)")
    return "\n".join(lines) + "\n"


def analyse(text: str, resources: dict[str, int] | None = None) -> sass.Row:
    functions = sass.parse_listing(text, "sm_90")
    function = functions[KERNEL]
    function.resources = resources or {"REG": 64, "STACK": 0, "LOCAL": 0}
    return sass.analyse(function, DEMANGLED)


ROTATION = ["FMUL R20, R4, R30", "FMUL R21, R8, R31", "FADD R12, R20, -R21"]


def test_the_rotate_loop_is_counted_per_item() -> None:
    row = analyse(listing(ROTATION))
    assert (row.kernel, row.variant) == ("rotate_tokens_kernel", "bf16 8/item NeoX in place")
    # the rotate loop: 2 loads, 3 float operations, 2 stores, the add and the branch
    assert row.per_item == 9
    # outside the loops (the copy loop is a loop too): 3 before and the EXIT; the callee (with
    # its DFMA) apart
    assert row.setup == 4 and row.fused == 0
    assert row.rotation_ops == "FMUL 2 FADD 1"
    assert row.problems == []
    assert row.at_heads(4) == 10


def test_fused_multiply_adds_and_local_memory_are_flagged() -> None:
    fused = analyse(listing([*ROTATION, "FFMA R13, R4, R30, R21"]))
    assert fused.fused == 1 and any("fused" in p for p in fused.problems)
    spilled = analyse(listing(ROTATION, ["STL [R1], R4", "LDL R4, [R1]"]))
    assert spilled.local_instructions == 2 and any("local memory" in p for p in spilled.problems)
    stack = analyse(listing(ROTATION), {"REG": 64, "STACK": 8, "LOCAL": 0})
    assert any("stack 8" in p for p in stack.problems)


def test_narrow_accesses_in_a_vector_loop_fail() -> None:
    # a 16-byte item stored as four 4-byte words: the compiler lost the vector store
    text = listing(ROTATION).replace(
        "STG.E.128 desc[UR8][R2.64], R12", "STG.E desc[UR8][R2.64], R12"
    )
    row = analyse(text)
    assert any("narrower than 16 bytes" in p for p in row.problems)


def test_a_loop_over_budget_fails() -> None:
    slow = analyse(listing(ROTATION * 50))
    assert slow.per_item > sass.MAX_PER_ITEM
    assert any("instructions per item" in p for p in slow.problems)


@pytest.mark.parametrize("gpu", list(sass.GPUS))
def test_the_budgets_are_the_issue_rate_over_the_bandwidth(gpu: str) -> None:
    # H200 about 446, H100 SXM about 639 thread-instructions per 64 bytes
    assert round(sass.budget(gpu)) == {"H200": 446, "H100 SXM": 639}[gpu]
