"""The benchmarks keep working: each runs on a tiny configuration."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import step_throughput  # noqa: E402


def test_step_throughput_tiny(tmp_path):
    out = tmp_path / "s.json"
    result = step_throughput.main(step_throughput.parse_args(
        ["--arch", "conv_tiny", "--batch", "8", "--warmup", "1", "--steps", "2", "--rounds", "1",
         "--channels-last", "--device", "cpu", "--out", str(out)]))
    assert json.loads(out.read_text()) == result
    assert result["ratio_drmm_over_supervised"] > 0
    assert set(result["images_per_s"]) == {"supervised", "drmm", "supervised_channels_last",
                                           "drmm_channels_last"}
    assert set(result["drmm_step_breakdown_seconds"]) == {
        "bottom_up", "top_down", "objective", "backward", "optimizer"}
