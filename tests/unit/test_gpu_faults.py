"""How a run's supervisor tells a device failure (plugins/module_utils/slots.py, docs/runs.md): nvidia-smi's
answers before and after a failed attempt, and the task's own output."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
_spec = importlib.util.spec_from_file_location("mlcube_ssh_slots", ROOT / "plugins" / "module_utils" / "slots.py")
assert _spec is not None and _spec.loader is not None
slots: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slots)

BEFORE = "0, GPU-aaaa, 0\n1, GPU-bbbb, 5\n2, GPU-cccc, [N/A]\n3, GPU-dddd, 0\n"


def health(out: str, rc: int = 0, err: str = "", tmp_path: Path | None = None) -> tuple[Any, Any]:
    assert tmp_path is not None
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    return slots.gpu_health(lambda argv: (rc, out, err), str(smi))


def test_a_gpu_that_vanished_is_lost_or_gained_ecc_errors_is_faulty(tmp_path: Path) -> None:
    before, _ = health(BEFORE, tmp_path=tmp_path)
    assert before[1] == {"uuid": "GPU-bbbb", "ecc": 5, "fault": None}
    assert before[2]["ecc"] is None  # no ECC on that GPU: never a verdict from the counter

    # GPU 0 fell off the bus (nvidia-smi lists the others, and fails), GPU 1's count rose, GPU 3 needs a reset.
    after, error = health("1, GPU-bbbb, 6\n2, GPU-cccc, [N/A]\n3, GPU-dddd, [GPU requires reset]\n", rc=15,
                          err="Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error\n",
                          tmp_path=tmp_path)
    assert slots.faulty_gpus(before, after, error, [0, 1, 2, 3]) == {
        0: "gone from nvidia-smi (nvidia-smi failed (exit code 15): Unable to determine the device handle for "
           "GPU0000:3B:00.0: Unknown Error)",
        1: "uncorrected ECC errors rose from 5 to 6",
        3: "nvidia-smi shows [GPU requires reset]"}
    # Only the GPUs the run held are judged; matched by uuid, so a renumbered GPU is still itself.
    renumbered, _ = health("0, GPU-bbbb, 5\n1, GPU-dddd, 0\n", tmp_path=tmp_path)
    assert slots.faulty_gpus(before, renumbered, None, [1, 3]) == {}
    assert slots.faulty_gpus(before, renumbered, None, [0]) == {0: "gone from nvidia-smi"}


def test_without_nvidia_smi_only_the_tasks_output_can_tell(tmp_path: Path) -> None:
    assert slots.gpu_health(lambda argv: (0, BEFORE, ""), str(tmp_path / "absent")) == (None, None)
    assert slots.faulty_gpus(None, None, None, [0]) == {}
    assert slots.device_signature("RuntimeError: CUDA error: uncorrectable ECC error encountered") == \
        "uncorrectable ECC error"
    assert slots.device_signature("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.") == "NVRM: Xid"
    assert slots.device_signature("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB") is None
