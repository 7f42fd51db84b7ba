"""Model FLOPs utilisation: the harness's own FLOP count over the GPU's dense bf16 peak.

    mfu = flops_per_token * train_tokens / training_seconds / peak

flops_per_token is measured by the evaluator (torch.utils.flop_counter on one forward of a
[1, seq_len] batch, times 3 for forward + backward), train_tokens is what ctx.train_batches served,
training_seconds is the supervisor's clock. Nothing here comes from train.py's own claims.

Peaks are NVIDIA's dense (no structured sparsity) BF16 tensor-core figures with FP32 accumulate,
from each product's datasheet; a datasheet's "with sparsity" number is twice these.
"""

from __future__ import annotations

import re

# (pattern on torch.cuda.get_device_name(), dense bf16 FLOP/s, where the number comes from).
# First match wins, so the more specific names come first.
PEAKS: tuple[tuple[str, float, str], ...] = (
    (r"H100.*(PCIe|PCIE)", 756e12, "NVIDIA H100 PCIe datasheet: BF16 1,513 TFLOPS with sparsity, 756 dense"),
    (r"H100.*NVL", 835e12, "NVIDIA H100 NVL datasheet: BF16 1,671 TFLOPS with sparsity, 835 dense"),
    (r"H100", 989.5e12, "NVIDIA H100 SXM datasheet: BF16 1,979 TFLOPS with sparsity, 989.5 dense"),
    (r"H200.*NVL", 835e12, "NVIDIA H200 NVL datasheet: BF16 1,671 TFLOPS with sparsity, 835 dense"),
    (r"H200", 989.5e12, "NVIDIA H200 SXM datasheet: BF16 1,979 TFLOPS with sparsity, 989.5 dense"),
    (r"GH200", 989.5e12, "NVIDIA GH200 datasheet: BF16 1,979 TFLOPS with sparsity, 989.5 dense"),
    (r"A100", 312e12, "NVIDIA A100 datasheet: BF16 624 TFLOPS with sparsity, 312 dense"),
    (r"L40S", 362.05e12, "NVIDIA L40S datasheet: BF16 733 TFLOPS with sparsity, 362.05 dense"),
    (r"A10G", 125e12, "NVIDIA A10 datasheet (A10G, AWS's variant, has no public NVIDIA datasheet; "
                      "the A10 figure is used): BF16 250 TFLOPS with sparsity, 125 dense"),
    (r"A10\b", 125e12, "NVIDIA A10 datasheet: BF16 250 TFLOPS with sparsity, 125 dense"),
    (r"L4\b", 121e12, "NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity, 121 dense"),
)  # fmt: skip


def peak_flops(device_name: str | None) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, source) for a GPU name; (None, reason) for a CPU or an unknown GPU."""
    if not device_name or device_name.lower() == "cpu":
        return None, "no MFU on CPU: there is no meaningful bf16 tensor-core peak to compare with"
    for pattern, flops, source in PEAKS:
        if re.search(pattern, device_name):
            return flops, source
    return None, f"no known dense bf16 peak for {device_name!r} (add it to harness/mfu.py with its datasheet)"


def mfu_percent(flops_per_token: float | None, tokens: int | None, seconds: float | None, peak: float | None):
    """100 * achieved / peak, or None when any input is missing or zero."""
    if not flops_per_token or not tokens or not seconds or not peak or seconds <= 0:
        return None
    return 100.0 * flops_per_token * tokens / seconds / peak
