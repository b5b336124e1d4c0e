"""The CUDA emulator as a checker and a counter (tools/cuda_emu): probe kernels
(tools/cuda_emu/tests/probes.cu) plant one fault each, and the emulator must report it;
the clean ones must pass. Needs g++ only (no GPU, no ccn build)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tools", "cuda_emu")
sys.path.insert(0, EMU)
import check_counters  # noqa: E402
import transform  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

UNWRITTEN = "which no thread of this block wrote"


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    out = tmp_path_factory.mktemp("probes")
    src = out / "probes.cpp"
    src.write_text(transform.transform(open(os.path.join(EMU, "tests", "probes.cu")).read()))
    inc = "-I" + os.path.join(EMU, "include")
    common = ["g++", "-O1", "-g", "-std=c++17", inc, "-c"]
    subprocess.run(common + ["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0",
                             str(src), "-o", str(out / "probes.o")], check=True)
    subprocess.run(common + [os.path.join(EMU, "emu.cpp"), "-o", str(out / "emu.o")], check=True)
    subprocess.run(["g++", str(out / "probes.o"), str(out / "emu.o"), "-o", str(out / "probes"), "-ldl"], check=True)
    return out


def run(probes, name, seed=None):
    """(first stdout line, the rest, stderr, the launch's counters)."""
    report = probes / f"{name}.{seed}.json"
    if report.exists():
        report.unlink()
    env = dict(os.environ, CCN_EMU_REPORT=str(report))
    env.pop("CCN_EMU_SEED", None)
    if seed is not None:
        env["CCN_EMU_SEED"] = str(seed)
    p = subprocess.run([str(probes / "probes"), name], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    counters = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(counters) == 1
    return lines[0], lines[1:], p.stderr, counters[0]


def test_clean_kernel_passes(probes):
    status, _, err, c = run(probes, "clean")
    assert status == "ok", err
    assert c["shared"]["conflicts"] == 0 and c["global"]["sectors"] == c["global"]["ideal_sectors"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_missing_barrier_is_reported(probes, seed):
    status, _, _, _ = run(probes, "missing_barrier", seed)
    assert UNWRITTEN in status and "__shared__ s" in status and f"seed {seed}" in status


def test_read_of_unwritten_shared_memory_is_reported(probes):
    status, _, _, _ = run(probes, "unwritten_shared")
    assert UNWRITTEN in status
    thread = int(status.split("thread (")[1].split(",")[0])
    assert thread % 2 == 1  # only the odd threads read what nobody wrote


def test_divergent_barrier_is_reported(probes):
    status, _, _, _ = run(probes, "divergent_barrier")
    assert "different numbers of __syncthreads" in status


def test_race_between_blocks_is_reported(probes):
    status, _, _, _ = run(probes, "block_race")
    assert "race between blocks" in status and "writes" in status


def test_atomics_are_not_races(probes):
    status, rest, err, _ = run(probes, "atomic_sum")
    assert status == "ok", err
    assert float(rest[0].split()[0]) == 8 * 64


def test_strided_access_is_counted(probes):
    _, _, _, strided = run(probes, "strided")
    _, _, _, coalesced = run(probes, "coalesced")
    # 32 threads each write 4 bytes 128 bytes apart: 32 sectors where 4 would hold them.
    assert strided["global"]["ideal_sectors"] * 8 == strided["global"]["sectors"]
    assert coalesced["global"]["ideal_sectors"] == coalesced["global"]["sectors"] > 0


def test_bank_conflict_is_counted_and_fails_the_check(probes, capsys):
    _, _, _, conflict = run(probes, "bank_conflict")
    _, _, _, padded = run(probes, "padded")
    # tile[x][r] with a 32-float pitch: the 32 lanes of a warp hit one bank.
    assert conflict["shared"]["conflicts"] == 32 and conflict["shared"]["worst_ways"] == 32
    assert padded["shared"]["conflicts"] == 0 and padded["shared"]["wavefronts"] == padded["shared"]["requests"]
    assert check_counters.main([str(probes / "bank_conflict.None.json")]) == 1
    assert "bank conflict" in capsys.readouterr().out
    assert check_counters.main([str(probes / "padded.None.json")]) == 0


def test_vector_accesses_count_once_without_conflict(probes):
    status, rest, err, c = run(probes, "vector_rows")
    assert status == "ok", err
    # Block 0's float4s: (1 + s4[0].w, 2 + s[2t], 3 + s[2t + 1], (t + 1) % 64), s4[k] = (1, 2, 3, k).
    s = np.array([[1, 2, 3, k] for k in range(64)], np.float64).ravel()
    want = np.array([[1.0, 2 + s[2 * t], 3 + s[2 * t + 1], (t + 1) % 64] for t in range(64)]).ravel()
    np.testing.assert_array_equal(np.array(rest[0].split(), np.float64), want)
    # Per thread: one float4 store, three loads (float4, float4 broadcast, float2), one global
    # float4 store, each a single access.
    threads = c["sampled_threads"]
    assert c["shared"]["stores"] == threads and c["shared"]["loads"] == 3 * threads
    assert c["global"]["stores"] == threads and c["global"]["bytes"] == 16 * threads
    assert c["global"]["sectors"] == c["global"]["ideal_sectors"] == threads * 16 // 32
    # Per warp request: float4s in 4 quarter-warp phases (broadcast included), the float2 in 2.
    warps = threads // 32
    assert c["shared"]["requests"] == 4 * warps
    assert c["shared"]["wavefronts"] == c["shared"]["ideal_wavefronts"] == (4 + 4 + 4 + 2) * warps
    assert c["shared"]["conflicts"] == 0


def test_vector_bank_conflict_is_counted(probes, capsys):
    status, _, err, c = run(probes, "vector_conflict")
    assert status == "ok", err
    warps = c["sampled_threads"] // 32
    # 2 stores and 1 load per thread, each 2 wavefronts per quarter warp for 1 ideal.
    assert c["shared"]["loads"] == warps * 32 and c["shared"]["stores"] == 2 * warps * 32
    assert c["shared"]["conflicts"] == 3 * warps and c["shared"]["worst_ways"] == 2
    assert c["shared"]["wavefronts"] == 2 * c["shared"]["ideal_wavefronts"] == 2 * 4 * 3 * warps
    assert check_counters.main([str(probes / "vector_conflict.None.json")]) == 1
    assert "bank conflict (2-way)" in capsys.readouterr().out


def test_misaligned_vector_access_is_reported(probes):
    status, _, _, _ = run(probes, "vector_misaligned")
    assert "16 bytes at an address not 16-byte aligned" in status and "vector_misaligned" in status


def test_warp_intrinsics_have_lockstep_semantics(probes):
    status, rest, err, _ = run(probes, "warp_sum")
    assert status == "ok", err
    values = np.array([float(int(i * 7919 % 13) - 6) for i in range(8 * 64)]).reshape(16, 32)
    sums = [float(line.split()[0]) for line in rest[:16]]
    ballots = [int(line.split()[1]) for line in rest[:16]]
    np.testing.assert_array_equal(sums, values.sum(axis=1))
    assert ballots == [sum(1 << lane for lane in range(32) if row[lane] > 0) for row in values]
    assert rest[16] == "lanes ok"


def test_divergent_warp_intrinsic_is_reported(probes):
    status, _, _, _ = run(probes, "divergent_shuffle")
    assert "__shfl_down_sync" in status and "has finished" in status


def test_seed_is_printed_and_repeats_the_run(probes):
    first = run(probes, "missing_barrier", 77)
    second = run(probes, "missing_barrier", 77)
    assert "seed 77" in first[2]
    assert first[0] == second[0]


def test_transform_rewrites_shared_arrays_and_launches():
    src = "__shared__ float tile[16][64 + 1];\n__shared__ __align__(32) float w[8];\nk<A, 2><<<g, b, 0, s>>>(x, y);"
    out = transform.transform(src)
    assert 'auto& tile = emu::shared<float[16][64+1]>(&emu_tag_tile, "tile");' in out
    assert 'auto& w = emu::shared<float[8], 32>(&emu_tag_w, "w");' in out
    assert 'emu::kernel_name("k", {(long long)(A), (long long)(2)})' in out
    assert "__shared__" not in out
