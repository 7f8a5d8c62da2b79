#!/usr/bin/env python3
"""The benchmark scripts without a GPU: the sweep's shapes and their --shapes syntax
(bench/shapes.py), the sweep's table (bench/compare.py --sweep) on results written here, the
arguments of bench/torch_baseline.py and bench/modelnew_bench.py, and, when torch is installed,
torch_baseline's sweep on the CPU.

    python3 tests/bench/bench_scripts_test.py -v        (ctest runs it as bench.scripts)
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
import compare  # noqa: E402
import shapes  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
needs_torch = unittest.skipIf(torch is None, "torch is not installed")


def usage_error(parse, args):
    """parse(args) must exit 2 (argparse's error): returns what it printed."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            parse(args)
        except SystemExit as e:
            if e.code == 2:
                return err.getvalue()
            raise AssertionError(f"{args}: exit {e.code}, expected 2:\n{err.getvalue()}")
    raise AssertionError(f"{args} was accepted")


def run(args):
    """A script of bench/ as a process: (exit code, stdout + stderr)."""
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT)
    return r.returncode, r.stdout + r.stderr


class Shapes(unittest.TestCase):
    def test_the_sweep_is_issue_12s_list_with_the_reference_first(self):
        self.assertEqual(len(shapes.SWEEP), 9)
        self.assertEqual(shapes.SWEEP[0], (128, 8, 32, 256, 3, 8))
        self.assertIn((8, 64, 128, 128, 3, 32), shapes.SWEEP)
        for s in shapes.SWEEP:
            self.assertEqual(shapes.parse_shape(shapes.label(s)), s)

    def test_extra_shapes_follow_the_defaults_without_repeats(self):
        got = shapes.resolve("2,3,8,12,3,4; 128,8,32,256,3,8;")
        self.assertEqual(got[:9], shapes.SWEEP)
        self.assertEqual(got[9:], [(2, 3, 8, 12, 3, 4)])
        self.assertEqual(shapes.resolve("2,3,8,12,3,4", defaults=False), [(2, 3, 8, 12, 3, 4)])

    def test_bad_shapes_name_the_entry_and_the_rule(self):
        cases = {"1,2,3": "expected 6 comma-separated integers",
                 "1,2,x,8,3,2": "expected integers",
                 "0,2,4,8,3,2": "N must be >= 1, got 0",
                 "1,2,4,8,9,2": "kernel k = 9 exceeds HW = 8",
                 "1,2,6,8,3,4": "G = 4 must divide Cout = 6"}
        for text, msg in cases.items():
            with self.assertRaises(ValueError) as e:
                shapes.parse_shapes("2,3,8,12,3,4;" + text)
            self.assertIn(msg, str(e.exception))
            self.assertIn(repr(text), str(e.exception))
        with self.assertRaises(ValueError) as e:
            shapes.resolve("", defaults=False)
        self.assertIn("--no-default-shapes needs --shapes", str(e.exception))

    def test_the_command_line_prints_one_shape_a_line_or_exits_2(self):
        code, out = run(["bench/shapes.py", "--shapes", "2,3,8,12,3,4", "--no-default-shapes"])
        self.assertEqual((code, out), (0, "2 3 8 12 3 4\n"))
        code, out = run(["bench/shapes.py", "--shapes", "2,3,8,12,3,5"])
        self.assertEqual(code, 2, out)
        self.assertIn("G = 5 must divide Cout = 8", out)


def tg_doc(shape, step, fwd, peak, path="fused CUDA"):
    n, cin, cout, hw, k, g = shape
    res = {"shape": {"batch": n, "in_channels": cin, "out_channels": cout, "size": hw,
                     "kernel": k, "groups": g},
           "path": path, "forward": {"median_ms": fwd}, "train_step": {"median_ms": step}}
    if peak is not None:
        res["train_step_peak_bytes"] = peak
    return {"device": "cuda", "results": {"custom": res}}


class SweepTable(unittest.TestCase):
    def table(self, docs):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            compare.sweep(docs)
        return [line for line in buf.getvalue().splitlines() if line.startswith("| ")]

    def test_ratios_are_over_the_better_compile_and_missing_values_are_dashes(self):
        a, b, c = (4, 8, 32, 16, 3, 8), (2, 3, 16, 8, 3, 8), (1, 2, 4, 6, 1, 2)
        gib = 1024 ** 3
        pt = {"gpu": "test GPU", "torch": "2.x", "modes": {"eager": None, "compile": "default",
                                                          "autotune": "max-autotune-no-cudagraphs"},
              "results": {
                  shapes.label(a): {"train_step/eager": {"median_ms": 16.0},
                                    "train_step/compile": {"median_ms": 10.0},
                                    "train_step/autotune": {"median_ms": 8.0},
                                    "forward/eager": {"median_ms": 5.0},
                                    "forward/compile": {"median_ms": 3.0},
                                    "forward/autotune": {"median_ms": 4.0},
                                    "train_step_peak_bytes/compile": 4 * gib,
                                    "train_step_peak_bytes/autotune": 3 * gib},
                  # autotune left out (--no-autotune)
                  shapes.label(b): {"train_step/eager": {"median_ms": 1.0},
                                    "train_step/compile": {"median_ms": 2.0},
                                    "forward/compile": {"median_ms": 0.5}},
                  # tapegrad failed on this one
                  shapes.label(c): {"train_step/eager": {"median_ms": 1.5}}}}
        tg_a, tg_b = tg_doc(a, 4.0, 1.5, 2 * gib), tg_doc(b, 0.5, 0.25, None, "composition")
        rows = self.table([tg_a, tg_b, pt])
        self.assertEqual(len(rows), 2 + 3)  # header, rule, one row per shape in the runs' order
        self.assertIn("tg / best compile", rows[0])
        cells = lambda r: [x.strip() for x in r.strip("|").split("|")]
        ra, rb, rc = (cells(r) for r in rows[2:])
        self.assertEqual(ra, ["4, 8 -> 32, 16, k3, G8", "fused CUDA",
                              "4.000", "16.000", "10.000", "8.000", "0.50",
                              "1.500", "5.000", "3.000", "4.000", "0.50",
                              "2.00", "3.00"])
        self.assertEqual(rb, ["2, 3 -> 16, 8, k3, G8", "composition",
                              "0.500", "1.000", "2.000", "-", "0.25",
                              "0.250", "-", "0.500", "-", "0.50",
                              "-", "-"])
        self.assertEqual(rc[:4], ["1, 2 -> 4, 6, k1, G2", "-", "-", "1.500"])
        self.assertEqual(rc[6], "-")

        # The files of partial sweeps (a torch document per shape, as bench.sh writes them) give
        # the same table, whatever their order.
        per_shape = [dict(pt, results={lab: res}) for lab, res in pt["results"].items()]
        self.assertEqual(self.table([per_shape[2], tg_b, per_shape[1], tg_a, per_shape[0]])[2:],
                         [rows[4], rows[3], rows[2]])
        self.assertEqual(self.table(per_shape + [tg_a, tg_b]), rows)

    def test_the_sweeps_shapes_come_first_in_its_order(self):
        ref, small = shapes.SWEEP[0], shapes.SWEEP[1]
        other = (2, 3, 8, 12, 3, 4)
        rows = self.table([tg_doc(other, 1, 1, None), tg_doc(small, 1, 1, None),
                           tg_doc(ref, 1, 1, None)])[2:]
        self.assertEqual([r.split("|")[1].strip() for r in rows],
                         [shapes.title(ref), shapes.title(small), shapes.title(other)])


@needs_torch
class TorchBaseline(unittest.TestCase):
    def test_bad_arguments_exit_2_naming_the_flag(self):
        import torch_baseline as tb
        for args, msg in ((["--shapes", "1,2"], "--shapes: shape '1,2'"),
                          (["--shapes", ";"], "expected at least one shape"),
                          (["--shapes", "2,3,8,12,3,4", "--modes", "eager,jit"],
                           "unknown mode 'jit'"),
                          (["--sizes", "huge"], "unknown size 'huge'"),
                          (["--device", "cpu"], "--device cpu: only with --shapes"),
                          (["--shapes", "2,3,8,12,3,4", "--reps", "0"], "--reps must be >= 1")):
            self.assertIn(msg, usage_error(tb.parse_args, args))

    def test_no_autotune_and_no_compile_drop_their_modes(self):
        import torch_baseline as tb
        a = tb.parse_args(["--shapes", "2,3,8,12,3,4", "--no-autotune"])
        self.assertEqual(a.mode_list, ["eager", "compile"])
        self.assertEqual(a.shape_list, [(2, 3, 8, 12, 3, 4)])
        self.assertEqual(tb.parse_args(["--shapes", "2,3,8,12,3,4", "--no-compile"]).mode_list,
                         ["eager"])

    def test_a_cpu_sweep_writes_forward_and_step_per_shape(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "torch.json")
            code, log = run(["bench/torch_baseline.py", "--shapes", "2,3,8,12,3,4;1,2,4,7,1,2",
                             "--modes", "eager", "--device", "cpu", "--reps", "2", "--warmup", "0",
                             "--json", out])
            self.assertEqual(code, 0, log)
            with open(out) as f:
                doc = json.load(f)
        self.assertEqual(list(doc["results"]), ["2,3,8,12,3,4", "1,2,4,7,1,2"])
        for res in doc["results"].values():
            self.assertEqual(sorted(res), ["forward/eager", "train_step/eager",
                                           "train_step_peak_bytes/eager"])
            self.assertGreater(res["train_step/eager"]["median_ms"], 0)
            self.assertIsNone(res["train_step_peak_bytes/eager"])  # no peak memory on the CPU


@needs_torch
class ModelNewBench(unittest.TestCase):
    def test_takes_the_same_shapes_and_refuses_bad_ones_before_importing_the_extension(self):
        import modelnew_bench as mb
        a = mb.parse_args(["--shapes", "2,3,8,12,3,4"])
        self.assertEqual(a.shape_list, shapes.SWEEP + [(2, 3, 8, 12, 3, 4)])
        self.assertIn("kernel k = 9 exceeds HW = 8",
                      usage_error(mb.parse_args, ["--shapes", "1,2,4,8,9,2"]))
        self.assertIn("--no-default-shapes needs --shapes",
                      usage_error(mb.parse_args, ["--no-default-shapes"]))


if __name__ == "__main__":
    unittest.main()
