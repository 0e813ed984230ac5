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


KV_KERNEL = (
    "_ZN8yarn_ext4cuda22rotate_store_kv_kernelIN3c108BFloat16ELi8ELb0EEEvNS_13KvStoreLayoutE"
)
KV_DEMANGLED = (
    "void yarn_ext::cuda::rotate_store_kv_kernel<c10::BFloat16, 8, false>(yarn_ext::KvStoreLayout)"
)


def kv_listing(common_extra: list[str] = ()) -> str:
    """The fused kernel's loop kinds, each a given size: squares (no store), rotate (6 loads and
    stores), rotate to fp8, copy (1 load), copy to fp8; and a rare loop that calls the float64
    cos/sin and spills around the call."""
    lines = [f".text.{KV_KERNEL}:", f"{KV_KERNEL}:"]
    address = 0

    def emit(text: str) -> None:
        nonlocal address
        lines.append(f"        /*{address:05x}*/                   {text} ;")
        address += 16

    def loop(label: int, body: list[str], size: int) -> None:
        lines.append(f".L_x_{label}:")
        for text in body:
            emit(text)
        for _ in range(size - len(body) - 1):
            emit("FMUL R1, R2, R3")
        emit(f"@!P1 BRA `(.L_x_{label})")

    loads = ["LDG.E.128 R4, desc[UR8][R2.64]"] * 6
    store = ["STG.E.128 desc[UR8][R2.64], R12"]
    fp8 = ["F2FP.SATFINITE.E4M3.F32.PACK_AB_MERGE_C R5, R6, R7, RZ", "FFMA R1, R2, R3, R4"]
    emit("S2R R0, SR_TID.X")
    loop(1, ["LDG.E.128 R4, desc[UR8][R2.64]", "FADD R1, R1, R2"], 50)  # squares
    loop(2, [*loads, *store, *common_extra], 200)  # rotate
    loop(3, [*loads, *store, *fp8], 400)  # rotate, fp8
    loop(4, ["LDG.E.128 R4, desc[UR8][R2.64]", *store], 30)  # copy
    loop(5, ["LDG.E.128 R4, desc[UR8][R2.64]", "STG.E.64 desc[UR8][R2.64], R12", *fp8], 100)
    loop(6, [*loads, *store, "STL [R1], R4", "CALL.REL.NOINC `($cos_sin)", "LDL R4, [R1]"], 500)
    emit("EXIT")
    return "\n".join(lines) + "\n"


def analyse_kv(text: str) -> sass.Row:
    function = sass.parse_listing(text, "sm_90")[KV_KERNEL]
    function.resources = {"REG": 80, "STACK": 64, "LOCAL": 0}
    return sass.analyse(function, KV_DEMANGLED)


def test_the_fused_kernels_loops_and_cost_per_64_bytes() -> None:
    row = analyse_kv(kv_listing())
    kv = row.kv
    assert kv is not None and row.variant == "bf16 8/item NeoX"
    assert (kv.squares, kv.rotate, kv.rotate_fp8, kv.copy, kv.copy_fp8) == (50, 200, 400, 30, 100)
    assert kv.rare_loops == 1 and kv.common_local == 0
    # a head of 128 bf16: 16 x 8 squared values (4 lanes x 4 iterations) and 8 items; 16
    # vectors of v. 32 q and 8 kv heads: (40 x (16 x 50 + 8 x 200) + 8 x 16 x 30) over 48 heads
    # of 512 bytes
    assert kv.per_64b == pytest.approx((40 * 2400 + 8 * 480) / (48 * 8))
    assert kv.per_64b_fp8 == pytest.approx(
        (32 * 2400 + 8 * (16 * 50 + 8 * 400 + 16 * 100)) / ((32 * 512 + 16 * 384) / 64)
    )
    assert row.problems == []  # its stack serves the rare loop only


def test_the_fused_kernel_fails_on_common_path_spills_and_fused_operations() -> None:
    spilled = analyse_kv(kv_listing(["LDL R4, [R1]"]))
    assert any("LDL/STL in the common-path loops" in p for p in spilled.problems)
    fused = analyse_kv(kv_listing(["FFMA R1, R2, R3, R4"]))
    assert any("fused multiply-adds" in p for p in fused.problems)
