"""The static report: what yarn_ext's CUDA kernels compile to, and whether the rotation's fast
path can keep up with the memory of an H100/H200 (docs/static-report.md explains the method).

    python -m benchmarks.sass                 # the installed library (built for sm_90, sm_100)
    python -m benchmarks.sass --compile       # compile the CUDA sources for the two first
    python -m benchmarks.sass --check         # exit 1 on a failed target (CI)

For every kernel and architecture it prints registers, stack, local memory and the local-memory
instructions (spills: LDL/STL) of the kernel and what it calls; for the rotation kernels the
instructions of one iteration of each rotate loop per 16-byte work item and the float
operations of the rotation in it; for the token-major fast path the per-thread setup outside
its loops and the resulting instructions per item, as a share of the H100 and H200 issue
budgets.

Tools: cuobjdump and nvdisasm, from the toolkit or from the package registry
(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("sm_90", "sm_100")

# Issue budget of a 16-byte work item: it moves 64 bytes of DRAM traffic (16 bytes of each of
# its two runs read and written; cos/sin reads hit L1/L2, reused across heads). Thread
# instructions the SMs can issue while DRAM moves 64 bytes: SMs x 4 schedulers x clock x 32
# threads x 64 / bandwidth.
ITEM_BYTES = 64
GPUS = {
    "H200": {"bandwidth": 4.8e12, "sms": 132, "clock": 1.98e9},
    "H100 SXM": {"bandwidth": 3.35e12, "sms": 132, "clock": 1.98e9},
}
MAX_PER_ITEM = 150  # the fast path's target: about a third of the H200 budget
# Heads a fast-path thread walks in the headline case: 32 q + 8 k heads, head_dim 128, bf16, at
# 16384 tokens on an H200 (rotate_args.cpp's heads_per_slice: 16384 x 8 items = 131072 threads
# per slice against the 132 x 1024 resident ones wanted, so 2 slices of 20 heads) and at 131072
# tokens (one slice of 40).
HEADS_PER_THREAD = (20, 40)


def budget(gpu: str) -> float:
    g = GPUS[gpu]
    issue_rate = g["sms"] * 4 * g["clock"] * 32
    return issue_rate * ITEM_BYTES / g["bandwidth"]


# --- tools ----------------------------------------------------------------------------------


def find_tool(name: str) -> str:
    """The tool on PATH, in the pip packages (site-packages/nvidia/cu*/bin) or the toolkit."""
    found = shutil.which(name)
    if found:
        return found
    import site

    roots = [*site.getsitepackages(), site.getusersitepackages()]
    for root in roots:
        for candidate in sorted(Path(root).glob(f"nvidia/cu*/bin/{name}")):
            return str(candidate)
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / name).exists():
            return str(Path(home) / "bin" / name)
    raise SystemExit(
        f"benchmarks.sass: {name} not found (pip install nvidia-cuda-cuobjdump "
        "nvidia-cuda-nvdisasm)"
    )


def run(*command: str, cwd: Path | None = None) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=cwd).stdout


def demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = run("c++filt", *names).splitlines()
    return dict(zip(names, out, strict=True))


# --- the binary -----------------------------------------------------------------------------


def installed_library() -> Path:
    import yarn_ext

    return Path(yarn_ext.__file__).parent / "lib" / "libyarn_ext_cuda.so"


def compile_objects(archs: tuple[str, ...], build: Path) -> list[Path]:
    """The CUDA objects of libyarn_ext_cuda, built by CMakeLists.txt for `archs` only: the flags
    of csrc/library.json, which the wheel's build (setup.py) passes too."""
    import torch

    arch_list = ";".join(f"{a[3:-1]}.{a[-1]}" for a in archs)  # sm_90 -> 9.0
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=arch_list)
    cmake = shutil.which("cmake") or "cmake"
    subprocess.run(
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-G",
            "Ninja",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            "-DYARN_EXT_CUDA=ON",
            "-DYARN_EXT_BUILD_TESTS=OFF",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    targets = [
        f"CMakeFiles/yarn_ext_cuda.dir/csrc/cuda/{name}.cu.o"
        for name in ("cache_kernel", "kv_store_kernel", "rotate_kernel")
    ]
    subprocess.run(["ninja", "-C", str(build), *targets], check=True, env=env)
    return [build / t for t in targets]


@dataclass
class Instruction:
    address: int
    opcode: str  # with modifiers: LDG.E.128
    text: str
    target: str | None = None  # branch target label


@dataclass
class Function:
    """A kernel's code, and the code of the functions it calls (in its section)."""

    arch: str
    name: str
    body: list[Instruction] = field(default_factory=list)
    callees: list[Instruction] = field(default_factory=list)
    callee_sizes: dict[str, int] = field(default_factory=dict)  # instructions per callee label
    labels: dict[str, int] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)


INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*);")
LABEL = re.compile(r"^(\.L_x_\d+):")
BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def disassemble(cubin: Path, arch: str, nvdisasm: str) -> dict[str, Function]:
    return parse_listing(run(nvdisasm, "-c", str(cubin)), arch)


def parse_listing(text: str, arch: str) -> dict[str, Function]:
    """The functions of an nvdisasm -c listing: each kernel's instructions, and apart from them
    those of the functions it calls (`$...:` labels after the kernel in its section)."""
    functions: dict[str, Function] = {}
    current: Function | None = None
    in_callee = False
    callee = ""
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(".text."):
            name = stripped[len(".text.") :].rstrip(":")
            current = functions.setdefault(name, Function(arch, name))
            in_callee = False
            continue
        if current is None:
            continue
        if stripped.startswith("$") and stripped.endswith(":"):
            in_callee = True  # a called function, placed after the kernel in its section
            callee = stripped[1:-1]
            continue
        label = LABEL.match(stripped)
        if label:
            pending.append(label.group(1))
            continue
        match = INSTRUCTION.search(line)
        if not match:
            continue
        target = BRANCH_TARGET.search(match.group(3))
        instruction = Instruction(
            int(match.group(1), 16),
            match.group(2),
            stripped,
            target.group(1) if target else None,
        )
        for name in pending:
            current.labels[name] = instruction.address
        pending = []
        (current.callees if in_callee else current.body).append(instruction)
        if in_callee:
            current.callee_sizes[callee] = current.callee_sizes.get(callee, 0) + 1
    return functions


def resource_usage(binary: Path, cuobjdump: str) -> dict[tuple[str, str], dict[str, int]]:
    """(arch, kernel) -> REG, STACK, LOCAL, SHARED from cuobjdump --dump-resource-usage."""
    usage: dict[tuple[str, str], dict[str, int]] = {}
    arch = ""
    name = ""
    for line in run(cuobjdump, "--dump-resource-usage", str(binary)).splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("Function "):
            name = line[len("Function ") :].rstrip(":")
        elif line.startswith("REG:") and name:
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            usage[(arch, name)] = {k: int(v) for k, v in fields.items()}
            name = ""
    return usage


def cubins(binary: Path, cuobjdump: str, into: Path) -> list[tuple[str, Path]]:
    run(cuobjdump, "-xelf", "all", str(binary.resolve()), cwd=into)
    found = []
    for path in sorted(into.glob("*.cubin")):
        arch = re.search(r"\.(sm_\d+a?)\.cubin$", path.name)
        if arch:
            found.append((arch.group(1), path))
    return found


# --- analysis -------------------------------------------------------------------------------


@dataclass
class Loop:
    start: int
    end: int
    instructions: list[Instruction]

    def count(self, prefix: str) -> int:
        return sum(1 for i in self.instructions if i.opcode.split(".")[0] == prefix)

    def stores(self) -> list[Instruction]:
        return [i for i in self.instructions if i.opcode.startswith("STG")]

    def is_rotation(self) -> bool:
        return any(i.opcode.split(".")[0] in ("FMUL", "DMUL") for i in self.instructions)


def loops(function: Function) -> list[Loop]:
    """Every loop: a back edge (a branch to a label at or before it) and what lies between."""
    body = function.body
    spans = set()
    for instruction in body:
        if instruction.opcode.startswith("BRA") and instruction.target:
            start = function.labels.get(instruction.target)
            if start is not None and start <= instruction.address:
                spans.add((start, instruction.address))
    return [Loop(s, e, [i for i in body if s <= i.address <= e]) for s, e in sorted(spans)]


def rotation_loops(all_loops: list[Loop]) -> list[Loop]:
    """The loops that rotate (float multiplies in them) and hold no smaller such loop: the
    token path's head loops; the generic path's grid-stride loop (its row-offset loop inside
    it, counted once)."""
    rotating = [loop for loop in all_loops if loop.is_rotation()]
    return [
        loop
        for loop in rotating
        if not any(
            other is not loop and loop.start <= other.start and other.end <= loop.end
            for other in rotating
        )
    ]


# (rotate_kernel: the single rotation kernel of earlier versions, for before/after reports)
KERNEL = re.compile(
    r"(rotate_tokens_kernel|rotate_generic_kernel|rotate_store_kv_kernel|rotate_kernel|"
    r"build_cos_sin_cache_kernel)"
)
TEMPLATE = re.compile(r"<(.*)>\(")
DTYPES = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "double": "fp64"}


@dataclass
class KvRow:
    """rotate_store_kv_kernel (csrc/kv_store_work.h): four lanes (threads) per head of a token,
    its loops each once per 16-byte vector (or element) of a lane's part of the head. The worst
    loop of each kind among the common-path loops (those that call nothing: the rare path - a
    position past the cache, an image token's MRoPE positions - calls the float64 cos/sin and is
    not counted)."""

    squares: int  # a lane's part of the norm's sum of squares, per KV_SQUARES values
    rotate: int  # normalize + rotate + store, per item (kVec pairs), worst norm, cache of q's dtype
    rotate_fp8: int  # the same, storing to a float8 cache
    copy: int  # v into the cache, per vector
    copy_fp8: int  # v quantized, per vector
    common_local: int  # LDL/STL in the common-path loops
    rare_loops: int  # loops that call the float64 cos/sin
    # instructions per 64 bytes of DRAM traffic, Qwen3-8B's shapes (32 q, 8 kv heads of 128)
    per_64b: float = 0.0  # cache of q's dtype
    per_64b_fp8: float = 0.0  # float8 cache


# Qwen3-8B: the headline shapes of the fused serving step (benchmarks/kv_store.py)
KV_HEADS = (32, 8)
KV_HEAD_DIM = 128
# values per iteration of a lane's sum of squares (kLaneSums, csrc/kv_store_work.h): a head's
# d values take d / KV_SQUARES iterations over its four lanes
KV_SQUARES = 8


def fp8_conversion(loop: Loop) -> bool:
    return any("E4M3" in i.opcode for i in loop.instructions)


def analyse_kv(function: Function, row: Row) -> None:
    """The fused kernel's loops, its local memory on the common path, and its cost per 64 bytes
    for the headline shapes."""
    every = loops(function)
    common = [lp for lp in every if not any(i.opcode.startswith("CALL") for i in lp.instructions)]
    rare = len(every) - len(common)
    local = sum(lp.count("LDL") + lp.count("STL") for lp in common)

    def worst(select: Callable[[Loop], bool]) -> int:
        sizes = [len(lp.instructions) for lp in common if select(lp)]
        return max(sizes, default=0)

    def loads(lp: Loop) -> int:
        return sum(1 for i in lp.instructions if i.opcode.startswith("LDG"))

    def rotating(lp: Loop) -> bool:
        return bool(lp.stores()) and loads(lp) >= 6

    def copying(lp: Loop) -> bool:
        return bool(lp.stores()) and loads(lp) == 1 and not lp.count("FADD")

    kv = KvRow(
        squares=worst(lambda lp: not lp.stores() and lp.count("FMUL") > 0),
        rotate=worst(lambda lp: rotating(lp) and not fp8_conversion(lp)),
        rotate_fp8=worst(lambda lp: rotating(lp) and fp8_conversion(lp)),
        copy=worst(lambda lp: copying(lp) and not fp8_conversion(lp)),
        copy_fp8=worst(lambda lp: copying(lp) and fp8_conversion(lp)),
        common_local=local,
        rare_loops=rare,
    )
    row.kv = kv
    if local:
        row.problems.append(f"{local} LDL/STL in the common-path loops")
    fused = [lp for lp in common if not fp8_conversion(lp) and lp.count("FFMA")]
    if fused:
        row.problems.append("fused multiply-adds in a loop that rounds each operation alone")
    if not (kv.squares and kv.rotate and kv.rotate_fp8 and kv.copy and kv.copy_fp8):
        row.problems.append(f"a loop kind not found: {kv}")
        return
    if not row.vector:
        return
    dtype = row.variant.split(" ")[0]
    size = {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]
    width = 16 // size
    d = KV_HEAD_DIM
    q_heads, kv_heads = KV_HEADS
    head = d // KV_SQUARES * kv.squares + d // 2 // width * kv.rotate
    head_fp8 = d // KV_SQUARES * kv.squares + d // 2 // width * kv.rotate_fp8
    v, v_fp8 = d // width * kv.copy, d // width * kv.copy_fp8
    row_bytes, fp8_row_bytes = 2 * d * size, d * size + d
    kv.per_64b = ((q_heads + kv_heads) * head + kv_heads * v) / (
        (q_heads + 2 * kv_heads) * row_bytes / 64
    )
    kv.per_64b_fp8 = (q_heads * head + kv_heads * (head_fp8 + v_fp8)) / (
        (q_heads * row_bytes + 2 * kv_heads * fp8_row_bytes) / 64
    )
    whole = budget("H200") * 64 / ITEM_BYTES
    for name, value in (("", kv.per_64b), (" (fp8 cache)", kv.per_64b_fp8)):
        if value > whole:
            row.problems.append(f"{value:.0f} instructions per 64 B{name} > the H200 budget")


@dataclass
class Row:
    arch: str
    kernel: str
    variant: str
    regs: int
    stack: int
    local: int
    local_instructions: int  # LDL/STL in the kernel and its callees
    per_item: float | None = None  # rotate loop, instructions per 16-byte item
    setup: int | None = None  # fast path: instructions outside its loops, at most
    # the out-of-line MRoPE gather (core/cos_sin_run.h, mrope_pairs_cos_sin) an image token's
    # thread runs once in its setup, both its sides; None where the build has none
    mrope: int | None = None
    rotation_ops: str = ""
    fused: int = 0  # FFMA/DFMA in the kernel (callees apart): the rotation rounds each op alone
    vector: bool = False  # 16-byte work items: every global access of a rotate loop is 128-bit
    kv: KvRow | None = None  # rotate_store_kv_kernel: its loops and the headline's cost
    problems: list[str] = field(default_factory=list)

    def at_heads(self, heads: int) -> float | None:
        if self.per_item is None or self.setup is None:
            return None
        return self.per_item + self.setup / heads

    def mrope_at_heads(self, heads: int) -> float | None:
        """Per item for an MRoPE token whose positions differ: its setup runs the gather too."""
        plain = self.at_heads(heads)
        if plain is None or self.mrope is None:
            return None
        return plain + self.mrope / heads


def variant_of(demangled: str) -> str:
    args = TEMPLATE.search(demangled)
    if not args:
        return ""
    parts = [p.strip() for p in args.group(1).split(",")]
    dtype = DTYPES.get(parts[0], parts[0])
    text = [dtype, f"{parts[1]}/item"] if len(parts) > 1 else [dtype]
    if len(parts) > 2:
        text.append("GPT-J" if parts[2] == "true" else "NeoX")
    if len(parts) > 3:
        text.append("in place" if parts[3] == "true" else "out of place")
    return " ".join(text)


def analyse(function: Function, demangled: str) -> Row:
    kernel = KERNEL.search(demangled)
    res = function.resources
    everything = function.body + function.callees
    local_instructions = sum(1 for i in everything if i.opcode.split(".")[0] in ("LDL", "STL"))
    row = Row(
        function.arch,
        kernel.group(1) if kernel else demangled,
        variant_of(demangled),
        res.get("REG", -1),
        res.get("STACK", -1),
        res.get("LOCAL", -1),
        local_instructions,
    )
    if row.kernel == "rotate_store_kv_kernel":
        # its rare path (calls of the float64 cos/sin) keeps registers in a stack frame; the
        # common path must have none
        row.vector = not row.variant.split(" ")[1].startswith("1/")
        analyse_kv(function, row)
        return row
    if row.stack or row.local or local_instructions:
        row.problems.append(
            f"local memory: stack {row.stack}, local {row.local}, LDL/STL {local_instructions}"
        )
    if row.kernel == "build_cos_sin_cache_kernel":
        return row
    every_loop = loops(function)
    rotations = rotation_loops(every_loop)
    if not rotations:
        row.problems.append("no rotate loop found")
        return row
    # items per iteration: an item stores its two runs (16-byte vectors, or single elements)
    per_item = []
    row.vector = not row.variant.split(" ")[1].startswith("1/")
    for loop in rotations:
        items = max(1, len(loop.stores()) // 2)
        per_item.append(len(loop.instructions) / items)
        # its two runs are two 16-byte loads and two 16-byte stores (the generic loop also
        # reads a position, narrower)
        narrow = [i.opcode for i in loop.stores() if ".128" not in i.opcode]
        wide_loads = sum(1 for i in loop.instructions if i.opcode.startswith("LDG.E.128"))
        if row.vector and (narrow or wide_loads < 2 * items):
            row.problems.append(
                f"accesses narrower than 16 bytes in a rotate loop: stores {narrow[:4]}, "
                f"{wide_loads} 16-byte loads for {items} items"
            )
    # The kernel's own code has no fused multiply-add at all: the rotation rounds each product
    # and sum alone, and the float64 cos/sin math (which fuses on purpose) is out of line.
    row.fused = sum(1 for i in function.body if i.opcode.split(".")[0] in ("FFMA", "DFMA"))
    row.per_item = max(per_item)
    worst = rotations[per_item.index(row.per_item)]
    row.rotation_ops = " ".join(
        f"{op} {worst.count(op)}"
        for op in ("FMUL", "FADD", "FFMA", "DMUL", "DADD", "DFMA")
        if worst.count(op)
    )
    if row.fused:
        row.problems.append(f"{row.fused} fused multiply-adds in the kernel")
    # the gather alone: its rare path (a position outside the cache, float64 inputs) goes pair by
    # pair through mrope_cos_sin_by_pair and the float64 math, out of line and not counted, as
    # the plain path's computed_cos_sin is not
    gathers = [
        size for name, size in function.callee_sizes.items() if "mrope_pairs_cos_sin" in name
    ]
    row.mrope = sum(gathers) if gathers else None
    if row.kernel == "rotate_tokens_kernel":
        inside = {i.address for loop in every_loop for i in loop.instructions}
        row.setup = sum(1 for i in function.body if i.address not in inside)
        worst_case = row.at_heads(min(HEADS_PER_THREAD))
        if worst_case is not None and worst_case > MAX_PER_ITEM:
            row.problems.append(f"{worst_case:.0f} instructions per item > {MAX_PER_ITEM}")
        mrope_case = row.mrope_at_heads(min(HEADS_PER_THREAD))
        if mrope_case is not None and mrope_case > MAX_PER_ITEM:
            row.problems.append(f"MRoPE: {mrope_case:.0f} instructions per item > {MAX_PER_ITEM}")
    return row


# --- report ---------------------------------------------------------------------------------


def report(rows: list[Row]) -> list[str]:
    b200, b100 = budget("H200"), budget("H100 SXM")
    lines = [
        f"Issue budget per 16-byte item ({ITEM_BYTES} B of DRAM traffic): H200 {b200:.0f}, "
        f"H100 SXM {b100:.0f} thread-instructions; fast-path target {MAX_PER_ITEM}.",
        "loop/item: the rotate loop's instructions per item; for rotate_generic_kernel every "
        "path of its grid-stride loop (index decoding, both position widths, the row-offset loop "
        "once; calls not followed), an upper bound, not held to the budget. setup: the token "
        "path's instructions outside its loops, at most; per item @H heads = loop/item + "
        "setup / H. mrope: the out-of-line MRoPE gather an image token's thread runs in its "
        f"setup (text tokens skip it); MRoPE @{HEADS_PER_THREAD[0]} = per item @"
        f"{HEADS_PER_THREAD[0]} heads + mrope / {HEADS_PER_THREAD[0]}.",
        "",
        "| arch | kernel | variant | regs | stack | local | LDL/STL | loop/item | setup "
        f"| per item @{HEADS_PER_THREAD[0]} heads | @{HEADS_PER_THREAD[1]} | % H200 | % H100 "
        f"| mrope | MRoPE @{HEADS_PER_THREAD[0]} | rotation ops (worst loop) | ok |",
        "|" + "---|" * 17,
    ]
    for r in rows:
        if r.kv is not None:
            continue
        at_few, at_many = (r.at_heads(h) for h in HEADS_PER_THREAD)

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        def share(value: float | None, whole: float) -> str:
            return "-" if value is None else f"{100 * value / whole:.0f}%"

        # (the budget shares are for the fast path; the generic loop's count covers every path)
        headline = at_few
        cells = [
            r.arch,
            r.kernel,
            r.variant,
            str(r.regs),
            str(r.stack),
            str(r.local),
            str(r.local_instructions),
            num(r.per_item),
            num(r.setup),
            num(at_few),
            num(at_many),
            share(headline, b200),
            share(headline, b100),
            num(r.mrope),
            num(r.mrope_at_heads(HEADS_PER_THREAD[0])),
            r.rotation_ops or "-",
            "ok" if not r.problems else "; ".join(r.problems),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    kv_rows = [r for r in rows if r.kv is not None]
    if kv_rows:
        lines += [
            "",
            "rotate_store_kv_kernel (four lanes per head of a token): instructions per "
            "iteration of its common-path loops (the worst of each kind; rare-path loops, which "
            "call the float64 cos/sin, apart): squares per 8 values (a lane's iteration), rotate "
            "per item (kVec pairs: normalize, rotate, store; worst norm), copy per vector of v; "
            "then, for Qwen3-8B's "
            f"shapes ({KV_HEADS[0]} q, {KV_HEADS[1]} kv heads of {KV_HEAD_DIM}), the loops' "
            "instructions per 64 B of DRAM traffic of a token (each head's setup, a few dozen "
            "instructions, not counted), as a share of the budgets.",
            "",
            "| arch | variant | regs | stack (rare path) | common-path LDL/STL | rare loops "
            "| squares | rotate | rotate fp8 | copy | copy fp8 | per 64 B | % H200 | % H100 "
            "| per 64 B, fp8 cache | % H200 | % H100 | ok |",
            "|" + "---|" * 18,
        ]
        for r in kv_rows:
            kv = r.kv
            assert kv is not None
            whole200, whole100 = b200 * 64 / ITEM_BYTES, b100 * 64 / ITEM_BYTES

            def pct(value: float, whole: float, vector: bool = r.vector) -> str:
                return f"{100 * value / whole:.0f}%" if vector else "-"

            def num(value: float, vector: bool = r.vector) -> str:
                return f"{value:.0f}" if vector else "-"

            cells = [
                r.arch,
                r.variant,
                str(r.regs),
                str(r.stack),
                str(kv.common_local),
                str(kv.rare_loops),
                str(kv.squares),
                str(kv.rotate),
                str(kv.rotate_fp8),
                str(kv.copy),
                str(kv.copy_fp8),
                num(kv.per_64b),
                pct(kv.per_64b, whole200),
                pct(kv.per_64b, whole100),
                num(kv.per_64b_fp8),
                pct(kv.per_64b_fp8, whole200),
                pct(kv.per_64b_fp8, whole100),
                "ok" if not r.problems else "; ".join(r.problems),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--library", type=Path, help="a built libyarn_ext_cuda.so (default: installed)"
    )
    source.add_argument(
        "--compile", action="store_true", help="compile the CUDA sources for --arch instead"
    )
    parser.add_argument("--arch", nargs="*", default=list(ARCHS), help="default: sm_90 sm_100")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    cuobjdump, nvdisasm = find_tool("cuobjdump"), find_tool("nvdisasm")
    archs = tuple(args.arch)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.compile:
            binaries = compile_objects(archs, work / "build")
        else:
            binaries = [args.library or installed_library()]
        functions: dict[tuple[str, str], Function] = {}
        for binary in binaries:
            usage = resource_usage(binary, cuobjdump)
            unpacked = work / binary.name.replace(".", "_")
            unpacked.mkdir()
            for arch, cubin in cubins(binary, cuobjdump, unpacked):
                if arch not in archs:
                    continue
                for name, function in disassemble(cubin, arch, nvdisasm).items():
                    function.resources = usage.get((arch, name), {})
                    functions[(arch, name)] = function
    names = demangle(sorted({name for _, name in functions}))
    rows = [
        analyse(functions[key], names[key[1]])
        for key in sorted(functions, key=lambda k: (k[0], names[k[1]]))
    ]
    rows.sort(key=lambda r: (r.arch, r.kernel, r.variant))
    print("\n".join(report(rows)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))

    missing = []
    for arch in archs:
        kernels = [r for r in rows if r.arch == arch]
        # bf16, fp16, fp32 and fp64; NeoX and GPT-J; in place and out of place (token path) or
        # 16-byte and scalar (generic path)
        for kernel in ("rotate_tokens_kernel", "rotate_generic_kernel"):
            found = sum(1 for r in kernels if r.kernel == kernel)
            if found != 16:
                missing.append(f"{arch}: {found} {kernel} instantiations found, 16 expected")
        # bf16, fp16 and fp32; NeoX and GPT-J; 16-byte vectors and single elements
        found = sum(1 for r in kernels if r.kernel == "rotate_store_kv_kernel")
        if found != 12:
            missing.append(
                f"{arch}: {found} rotate_store_kv_kernel instantiations found, 12 expected"
            )
        if not any(r.kernel == "build_cos_sin_cache_kernel" for r in kernels):
            missing.append(f"{arch}: no build_cos_sin_cache_kernel")
    failed = [r for r in rows if r.problems]
    print()
    for text in missing:
        print(f"MISSING {text}")
    for r in failed:
        print(f"FAILED {r.arch} {r.kernel} {r.variant}: {'; '.join(r.problems)}")
    if not failed and not missing:
        print(
            f"static report: {len(rows)} kernels, no local memory (the fused kernel's: none on "
            f"its common path); fast path within {MAX_PER_ITEM} instructions per item; the "
            "rotation rounds each operation alone"
        )
    if args.check and (failed or missing):
        sys.exit(1)


if __name__ == "__main__":
    main()
