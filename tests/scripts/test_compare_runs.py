"""scripts/compare_runs.py on hand-made result documents with known answers: medians over repeats,
scaling from tokens/s and from median step times, the built-in/HF ratio and curve distances."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def doc(tps, p50, losses, preset="350m", state="ok"):
    return {"status": {"state": state}, "config": {"preset": preset},
            "summary": {"tokens_per_s_per_gpu": tps, "step_time_p50_s": p50, "step_time_p95_s": p50 * 1.1,
                        "peak_allocated_bytes": 2**30, "final_loss": losses[-1]},
            "steps": [{"loss": x} for x in losses]}


def write(folder, name, d):
    (folder / name).write_text(json.dumps(d))


def test_table(tmp_path, capsys):
    curve = [10.0, 5.0, 2.0]
    write(tmp_path, "w-builtin-n1-r1.json", doc(100.0, 0.10, curve))
    write(tmp_path, "w-builtin-n1-r2.json", doc(110.0, 0.10, curve))
    write(tmp_path, "w-builtin-n1-r3.json", doc(90.0, 0.10, curve))
    write(tmp_path, "w-builtin-n2-r1.json", doc(95.0, 0.11, [10.0, 5.0, 2.02]))
    write(tmp_path, "w-hf-n1.json", doc(50.0, 0.2, [10.0, 5.05, 2.0]))
    write(tmp_path, "w-aa-n1.json", doc(80.0, 0.12, [10.0, 5.0, 2.004]))
    write(tmp_path, "w-hf-n2.json", doc(1.0, 1.0, curve, state="failed") | {"status": {"state": "failed", "reason": "rank 1 hung"}})
    load().main(str(tmp_path))
    rows = {tuple(line.split()[:3]): line for line in capsys.readouterr().out.splitlines()[1:]}
    one = rows[("w", "builtin", "1")].split()
    assert one[3] == "3" and one[4] == "100" and one[5] == "90-110"  # median of the repeats and their range
    assert "2.000x" in rows[("w", "builtin", "1")]                   # 100 / 50
    assert "9.90e-03" in rows[("w", "builtin", "1")]                 # |5.0 - 5.05| / 5.05, relative to HF
    assert "2.00e-03" in rows[("w", "builtin", "1")]                 # A/A: |2.004 - 2| / 2
    two = rows[("w", "builtin", "2")]
    assert "95.0%" in two                                            # 95 / 100
    assert "90.9%" in two                                            # 0.10 / 0.11
    assert "failed: rank 1 hung" in rows[("w", "hf", "2")]
