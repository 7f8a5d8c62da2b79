"""tapegrad_torch.ModelNew against the reference Model (PyTorch's ops).

Run: PYTHONPATH=python python3 -m unittest discover -s python/tests -v   (ctest runs it too).
Skips, saying why, when torch or the built extension is missing; CUDA cases skip without a GPU.
"""
import os
import sys
import unittest
import warnings

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

tgt = None
_import_error = "torch is not installed"
if torch is not None:
    try:
        import tapegrad_torch as tgt
    except ImportError as e:  # the extension is not built
        _import_error = f"tapegrad_torch is not built (scripts/build-python.sh): {e}"

needs_ext = unittest.skipIf(tgt is None, _import_error)

if torch is not None:  # the one reference Model (bench/reference_model.py)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
    from reference_model import Model


def rel(a, b):
    """||a - b|| / ||b|| (L2), as SPEC.md's precision section."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def devices():
    out = ["cpu"]
    if torch is not None and torch.cuda.is_available() and tgt is not None and tgt.built_with_cuda():
        out.append("cuda")
    return out


# (N, Cin, Cout, H, W, k, G): odd sizes, G = 1 and G = Cout, N = 1, the fused CUDA shapes.
SHAPES = [(2, 3, 8, 9, 11, 3, 4), (1, 4, 6, 7, 5, 2, 6), (3, 2, 4, 6, 6, 1, 1),
          (2, 8, 32, 12, 10, 3, 8), (2, 3, 16, 10, 9, 3, 8)]


def make_pair(shape, dtype, device, seed=0):
    n, cin, cout, h, w, k, g = shape
    torch.manual_seed(seed)
    ref = Model(cin, cout, k, g, (cout, 1, 1), (cout, 1, 1))
    torch.manual_seed(seed)
    new = tgt.ModelNew(cin, cout, k, g, (cout, 1, 1), (cout, 1, 1))
    # Non-trivial GroupNorm affine parameters, the same in both.
    with torch.no_grad():
        for m in (ref, new):
            gen = torch.Generator().manual_seed(seed + 1)
            m.group_norm.weight.copy_(torch.randn(cout, generator=gen) + 1)
            m.group_norm.bias.copy_(torch.randn(cout, generator=gen))
    return ref.to(device, dtype), new.to(device, dtype)


def strict_fp32():
    """SPEC: 1e-5 relative in strict float32, so TF32 off (cuDNN's and tapegrad's)."""
    class Guard:
        def __enter__(self):
            self.prev = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False

        def __exit__(self, *a):
            torch.backends.cudnn.allow_tf32 = self.prev
    return Guard()


@needs_ext
class ModelNewTest(unittest.TestCase):
    def setUp(self):
        warnings.simplefilter("ignore")  # the composition's once-per-shape notice

    def test_same_parameters_after_same_seed(self):
        torch.manual_seed(3)
        a = Model(3, 8, 3, 4, (8, 1, 1), (8, 1, 1))
        torch.manual_seed(3)
        b = tgt.ModelNew(3, 8, 3, 4, (8, 1, 1), (8, 1, 1))
        names = ["bias", "scale", "conv.weight", "conv.bias", "group_norm.weight", "group_norm.bias"]
        self.assertEqual([n for n, _ in a.named_parameters()], names)  # PyTorch's order
        self.assertEqual([n for n, _ in b.named_parameters()], names)
        for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            self.assertTrue(torch.equal(p, q))

    def run_model(self, m, x, r):
        x = x.clone().requires_grad_()
        m.zero_grad(set_to_none=True)
        y = m(x)
        (y * r).sum().backward()
        return [y.detach(), x.grad] + [p.grad for p in m.parameters()]

    def check_equal(self, shape, dtype, device):
        """ModelNew against Model in the same dtype and against Model in float64 (the truth): in
        float32 ModelNew is within 1e-5 of the truth and within 1e-5 plus Model's own float32
        error of Model (each float32 implementation rounds differently)."""
        ref, new = make_pair(shape, dtype, device)
        n, cin, cout, h, w, k, g = shape
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype).to(device)
        r = torch.randn(n, cout, h - k + 1, w - k + 1, generator=gen, dtype=dtype).to(device)
        got = self.run_model(new, x, r)
        want = self.run_model(ref, x, r)
        truth = self.run_model(ref.double(), x.double(), r.double())
        names = ["output", "x.grad"] + [name for name, _ in new.named_parameters()]
        what = f"{shape} {dtype} {device} path {new.path(x)}"
        for name, a, b, t in zip(names, got, want, truth):
            self.assertIsNotNone(a, f"{name}, {what}")
            if dtype == torch.float64:
                self.assertLess(rel(a, b), 1e-10, f"{name}, {what}")
            else:
                # 1e-5 of the truth, or twice Model's own float32 error where the problem is worse
                # conditioned than that (tiny GroupNorm groups: seen 1.4e-5 on the GPU). Against
                # Model the bound follows from that one by the triangle inequality: both round, in
                # different directions (seen: 4.0e-5 apart with Model 3.7e-5 off the truth).
                bound = max(1e-5, 2 * rel(b, t))
                self.assertLess(rel(a, t), bound, f"{name} against float64, {what}")
                self.assertLess(rel(a, b), bound + rel(b, t), f"{name} against Model, {what}")

    def test_equals_model_outputs_and_every_gradient(self):
        with strict_fp32():
            for device in devices():
                for dtype in (torch.float32, torch.float64):
                    for shape in SHAPES:
                        with self.subTest(device=device, dtype=dtype, shape=shape):
                            self.check_equal(shape, dtype, device)

    @unittest.skipUnless(torch is not None and torch.cuda.is_available(), "needs a CUDA device")
    def test_tf32_is_followed_and_within_its_precision(self):
        """With torch's TF32 switch on (cudnn.allow_tf32, its default) ModelNew convolves in TF32
        too (a 10-bit mantissa): within about 1e-3 of the float64 truth, output and every gradient.
        Strict float32 is ~1e-7 off in the output, so a wide shape (Cin 16: long dot products)
        shows that the switch reached tapegrad."""
        prev = torch.backends.cudnn.allow_tf32
        self.addCleanup(setattr, torch.backends.cudnn, "allow_tf32", prev)
        shape = (2, 16, 32, 14, 13, 3, 8)  # fused CUDA
        gen = torch.Generator().manual_seed(5)
        n, cin, cout, h, w, k, g = shape
        x = torch.randn(n, cin, h, w, generator=gen).cuda()
        r = torch.randn(n, cout, h - k + 1, w - k + 1, generator=gen).cuda()
        errors = {}
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            ref, new = make_pair(shape, torch.float32, "cuda")
            self.assertEqual(new.path(x), "fused CUDA")
            got = self.run_model(new, x, r)
            truth = self.run_model(ref.double(), x.double(), r.double())
            errors[tf32] = [rel(a, t) for a, t in zip(got, truth)]
        names = ["output", "x.grad"] + [name for name, _ in new.named_parameters()]
        for name, on in zip(names, errors[True]):
            self.assertLess(on, 3e-3, f"{name} with TF32")
        # The conv weight's gradient and the output carry the TF32 rounding of the convolution.
        self.assertGreater(errors[True][0], 10 * errors[False][0], "TF32 was not used")

    def test_paths(self):
        _, new = make_pair(SHAPES[0], torch.float64, "cpu")
        self.assertEqual(new.path(torch.randn(2, 3, 9, 11, dtype=torch.float64)), "fused CPU")
        if "cuda" in devices():
            _, new = make_pair(SHAPES[3], torch.float32, "cuda")
            self.assertEqual(new.path(torch.randn(2, 8, 12, 10, device="cuda")), "fused CUDA")
            _, new = make_pair(SHAPES[1], torch.float32, "cuda")  # Cout 6: cuDNN + fused epilogue
            self.assertEqual(new.path(torch.randn(1, 4, 7, 5, device="cuda")), "epilogue CUDA")
            _, new = make_pair(SHAPES[0], torch.float64, "cuda")  # float64 on CUDA: composition
            x = torch.randn(3, 3, 9, 13, device="cuda", dtype=torch.float64)
            self.assertEqual(new.path(x), "composition")
            with self.assertWarnsRegex(UserWarning, r"no fused kernel for x \(3, 3, 9, 13\).*"
                                                    "composition of unfused ops"):
                new(x)

    def test_gradcheck_float64(self):
        # gradcheck runs the backward twice and wants the same bits: cuDNN's deterministic
        # algorithms (which tapegrad_torch follows), as PyTorch's own gradcheck tests use.
        deterministic = torch.backends.cudnn.deterministic
        torch.backends.cudnn.deterministic = True
        self.addCleanup(setattr, torch.backends.cudnn, "deterministic", deterministic)
        for device in devices():
            for shape in [(2, 2, 4, 5, 6, 3, 2), (2, 8, 32, 5, 5, 3, 8)]:
                n, cin, cout, h, w, k, g = shape
                _, new = make_pair(shape, torch.float64, device)
                gen = torch.Generator().manual_seed(11)
                x = torch.randn(n, cin, h, w, generator=gen, dtype=torch.float64).to(device)
                params = [p.detach().clone().requires_grad_() for p in
                          (new.conv.weight, new.conv.bias, new.bias, new.scale,
                           new.group_norm.weight, new.group_norm.bias)]
                x.requires_grad_()
                f = lambda x, *p: tgt.conv_block(x, *p, g)  # noqa: E731
                with self.subTest(device=device, shape=shape):
                    self.assertTrue(torch.autograd.gradcheck(f, (x, *params), eps=1e-6,
                                                             atol=1e-5, rtol=1e-3))

    def test_sgd_three_steps_like_model(self):
        with strict_fp32():
            for device in devices():
                for dtype in (torch.float32, torch.float64):
                    shape = (4, 3, 8, 10, 9, 3, 4)
                    ref, new = make_pair(shape, dtype, device)
                    gen = torch.Generator().manual_seed(5)
                    x = torch.randn(4, 3, 10, 9, generator=gen, dtype=dtype).to(device)
                    t = torch.randn(4, 8, 8, 7, generator=gen, dtype=dtype).to(device)
                    for m in (ref, new):
                        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3)
                        for _ in range(3):
                            opt.zero_grad()
                            torch.nn.functional.mse_loss(m(x), t).backward()
                            opt.step()
                    tol = 1e-5 if dtype == torch.float32 else 1e-10
                    for (name, p), (_, q) in zip(ref.named_parameters(), new.named_parameters()):
                        with self.subTest(device=device, dtype=dtype, name=name):
                            self.assertLess(rel(q, p), tol)

    def test_no_grad_and_inputs_without_grad(self):
        ref, new = make_pair(SHAPES[0], torch.float64, "cpu")
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
        with torch.no_grad():
            y = new(x)
        self.assertFalse(y.requires_grad)
        self.assertLess(rel(y, ref(x).detach()), 1e-12)
        # x does not want a gradient: only the parameters get one.
        new(x).sum().backward()
        self.assertIsNone(x.grad)
        self.assertTrue(all(p.grad is not None for p in new.parameters()))
        # Frozen parameters get none.
        new.zero_grad(set_to_none=True)
        new.conv.weight.requires_grad_(False)
        new(x).pow(2).sum().backward()
        self.assertIsNone(new.conv.weight.grad)
        self.assertIsNotNone(new.scale.grad)

    def test_backward_twice_with_retain_graph_accumulates(self):
        _, new = make_pair(SHAPES[0], torch.float64, "cpu")
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
        loss = new(x).pow(2).sum()
        loss.backward(retain_graph=True)
        once = new.scale.grad.clone()
        loss.backward()
        self.assertLess(rel(new.scale.grad, 2 * once), 1e-12)

    def test_non_contiguous_input_is_made_contiguous(self):
        _, new = make_pair(SHAPES[0], torch.float64, "cpu")
        x = torch.randn(2, 3, 11, 9, dtype=torch.float64).transpose(2, 3)
        self.assertFalse(x.is_contiguous())
        self.assertLess(rel(new(x), new(x.contiguous())), 1e-14)

    def test_in_place_change_of_saved_input_is_an_error(self):
        _, new = make_pair(SHAPES[0], torch.float64, "cpu")
        x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
        xx = x * 1
        y = new(xx)
        with torch.no_grad():
            xx.add_(1)
        with self.assertRaisesRegex(RuntimeError, "modified by an inplace operation"):
            y.sum().backward()

    def test_bad_input_is_a_clear_exception(self):
        _, new = make_pair(SHAPES[0], torch.float32, "cpu")
        cases = [
            (torch.randn(2, 4, 9, 11), ValueError, r"expected x of shape \(N, 3, H, W\), got \(2, 4, 9, 11\)"),
            (torch.randn(3, 9, 11), ValueError, r"expected x of shape \(N, 3, H, W\), got \(3, 9, 11\)"),
            (torch.randn(2, 3, 2, 11), ValueError, r"H, W >= kernel size 3, got \(2, 3, 2, 11\)"),
            (torch.randn(0, 3, 9, 11), ValueError, r"non-empty x"),
            (torch.randn(2, 3, 9, 11, dtype=torch.float64), TypeError,
             r"expected conv.weight as torch.float64 on cpu like x, got torch.float32 on cpu"),
            (torch.randn(2, 3, 9, 11).half(), TypeError, r"float32 or float64, got torch.float16"),
            (torch.ones(2, 3, 9, 11, dtype=torch.int64), TypeError, r"float32 or float64, got torch.int64"),
        ]
        for x, exc, msg in cases:
            with self.subTest(msg=msg):
                with self.assertRaisesRegex(exc, msg):
                    new(x)
        with self.assertRaisesRegex(TypeError, "expected x as a torch.Tensor, got list"):
            new([1.0])
        with self.assertRaisesRegex(ValueError, r"expected bias_shape \(8, 1, 1\), got \(8,\)"):
            tgt.ModelNew(3, 8, 3, 4, (8,), (8, 1, 1))
        with self.assertRaisesRegex(ValueError, "num_groups dividing out_channels 8, got 3"):
            tgt.ModelNew(3, 8, 3, 3, (8, 1, 1), (8, 1, 1))

    @unittest.skipUnless(torch is not None and torch.cuda.is_available(), "needs a CUDA device")
    def test_cpu_tensor_for_cuda_model_and_back(self):
        _, new = make_pair(SHAPES[3], torch.float32, "cuda")
        with self.assertRaisesRegex(TypeError, r"expected conv.weight as torch.float32 on cpu like x, "
                                               r"got torch.float32 on cuda:0"):
            new(torch.randn(2, 8, 12, 10))
        _, cpu_model = make_pair(SHAPES[3], torch.float32, "cpu")
        with self.assertRaisesRegex(TypeError, "on cuda:0 like x, got torch.float32 on cpu"):
            cpu_model(torch.randn(2, 8, 12, 10, device="cuda"))

    @unittest.skipUnless(torch is not None and torch.cuda.is_available(), "needs a CUDA device")
    def test_cuda_runs_on_the_current_stream(self):
        with strict_fp32():
            ref, new = make_pair(SHAPES[3], torch.float32, "cuda")
            x = torch.randn(2, 8, 12, 10, device="cuda")
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                y = new(x)
                y.sum().backward()
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            self.assertLess(rel(y, ref(x)), 1e-5)

    @unittest.skipUnless(torch is not None and hasattr(torch, "compile") and
                         hasattr(torch.library, "custom_op"), "needs torch >= 2.4 (torch.compile "
                         "and torch.library.custom_op)")
    def test_torch_compile_around_the_block_has_no_graph_break(self):
        with strict_fp32():
            for device in devices():
                torch.manual_seed(0)
                pre = torch.nn.Conv2d(3, 3, 1)
                _, new = make_pair(SHAPES[0], torch.float32, device)
                net = torch.nn.Sequential(pre.to(device), new, torch.nn.Tanh())
                compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
                x = torch.randn(2, 3, 9, 11, device=device)
                y_eager = net(x)
                y_eager.sum().backward()
                g_eager = [p.grad.clone() for p in net.parameters()]
                net.zero_grad()
                y = compiled(x)
                y.sum().backward()
                with self.subTest(device=device):
                    self.assertLess(rel(y, y_eager), 1e-6)
                    for p, g in zip(net.parameters(), g_eager):
                        self.assertLess(rel(p.grad, g), 1e-6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
