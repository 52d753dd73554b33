"""The weight-sharing supernet: exact subnets, single-path gradients, sharing, prefix-shared scoring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blocks.model import HybridNet
from blocks.path_sampling import PathSampler
from blocks.spec import ModelSpec
from blocks.supernet import SuperNet
from blocks.supernet_eval import calibrate_norm, load_norm_stats, score_paths, walk
from hybridlab.errors import ConfigError

# Two token stages; stage 3 has a window smaller than its map (padding + two windows), stage 4 one window.
BASE = dict(dim=8, in_dim=8, num_heads=[1, 1, 2, 2], window_size=[4, 4, 3, 4], stem_stride=2, num_classes=5)
PATTERN = "C | C | M M A | M A"
POSITIONS = [(2, 0), (2, 2), (3, 0), (3, 1)]


def _supernet(choices=("M", "A", "M[d_state=4]"), share=True, init="default") -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(ModelSpec.create(PATTERN, init=init, **BASE), POSITIONS, list(choices), share=share)


@pytest.mark.parametrize("init", ["default", "official"])
def test_subnet_equals_fresh_model_with_same_weights(init):
    net = _supernet(init=init).eval()
    x = torch.randn(3, 3, 20, 20)
    for path in [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 0, 1)]:
        sub = net.subnet(path).eval()
        fresh = HybridNet(spec=ModelSpec.create(net.pattern_of(path), init=init, **BASE))
        assert set(sub.state_dict()) == set(fresh.state_dict())
        fresh.load_state_dict(sub.state_dict())
        fresh.eval()
        with torch.no_grad():
            out = net(x, path)
            assert torch.equal(out, sub(x))
            assert torch.equal(out, fresh(x))
        assert net.path_params(path) == sum(p.numel() for p in sub.parameters())


def test_pattern_round_trip_and_one_line_errors():
    net = _supernet()
    assert net.pattern_of((0, 1, 1, 0)) == "C | C | M*2 A | A M"
    assert net.path_of("C | C | M M A | M A") == (0, 1, 0, 1)
    assert net.subnet("C | C | A M A | A A").pattern == "C | C | A M A | A*2"
    for bad, words in [("C | C | M A A | M A", "fixes"), ("C | C | M M | M A", "depths"),
                       ("C | C | C M A | M A", "not one of the choices"), ("C | C | M M A | M Q", "Q")]:
        with pytest.raises(ConfigError) as info:
            net.path_of(bad)
        assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="one choice"):
        net.check_path((0, 3, 0, 0))
    with pytest.raises(ConfigError, match="distinct"):
        SuperNet(ModelSpec.create(PATTERN, **BASE), POSITIONS, ["M", "M"])


def test_only_the_sampled_path_gets_gradients():
    net = _supernet(share=False).train()
    path = (0, 1, 2, 0)
    net(torch.randn(2, 3, 20, 20), path).sum().backward()
    for pos, candidates in enumerate(net.options):
        for choice, module in enumerate(candidates):
            grads = [p.grad for p in module.parameters()]
            if choice == path[pos]:
                assert any(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), (pos, choice)


def test_shared_parts_are_one_tensor_and_train_with_every_choice():
    net = _supernet(share=True)
    m, a = net.options[0][0], net.options[0][1]
    assert m.mlp is a.mlp and m.norm1 is a.norm1 and m.norm2 is a.norm2
    assert m.mixer is not a.mixer
    unshared = _supernet(share=False)
    assert unshared.options[0][0].mlp is not unshared.options[0][1].mlp
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in unshared.parameters())
    net(torch.randn(2, 3, 20, 20), (1, 1, 1, 1)).sum().backward()
    assert m.mlp.fc1.weight.grad is not None  # trained through the attention choice
    assert all(p.grad is None for p in m.mixer.parameters())


def test_scoring_with_shared_prefixes_equals_one_subnet_at_a_time():
    net = _supernet(choices=("M", "A"))
    torch.manual_seed(1)
    batches = [(torch.randn(6, 3, 20, 20), torch.randint(0, 5, (6,))) for _ in range(2)]
    calib = [torch.randn(8, 3, 20, 20) for _ in range(2)]
    paths = list(net.paths())
    assert len(paths) == 16 == net.num_paths
    stats = calibrate_norm(net, calib, paths)
    scores = score_paths(net, batches, paths, stats)
    for path in [paths[0], paths[5], paths[-1]]:
        sub = net.subnet(path)
        sub.eval()  # the final norm's input over the calibration images, computed directly
        with torch.no_grad():
            feats = torch.cat([sub.levels[-1](sub.levels[-2](sub.levels[1](sub.levels[0](sub.patch_embed(x)))))
                               for x in calib])
        mean = feats.double().mean((0, 2, 3))
        var = feats.double().var((0, 2, 3), unbiased=True)
        assert torch.allclose(stats[path].mean.double(), mean, atol=1e-5)
        assert torch.allclose(stats[path].var.double(), var, rtol=1e-4, atol=1e-6)
        load_norm_stats(sub, stats[path])
        with torch.no_grad():
            logits = [sub(x) for x, _ in batches]
        correct = sum(int((lg.argmax(1) == y).sum()) for lg, (_, y) in zip(logits, batches, strict=True))
        loss = sum(float(nn.functional.cross_entropy(lg, y, reduction="sum"))
                   for lg, (_, y) in zip(logits, batches, strict=True)) / 12
        assert scores[path].n == 12
        assert scores[path].top1 == pytest.approx(100 * correct / 12)
        assert scores[path].loss == pytest.approx(loss, rel=1e-5)


def test_samplers_are_seeded_fair_and_resumable():
    uniform = PathSampler("uniform", 5, 3, seed=7)
    again = PathSampler("uniform", 5, 3, seed=7)
    assert [uniform.next() for _ in range(4)] == [again.next() for _ in range(4)]
    fair = PathSampler("fair", 4, 3, seed=1)
    paths = [fair.next()[0] for _ in range(6)]
    for pos in range(4):
        for block in (paths[:3], paths[3:]):
            assert sorted(p[pos] for p in block) == [0, 1, 2]
    resumed = PathSampler("fair", 4, 3, seed=1)
    first = PathSampler("fair", 4, 3, seed=1)
    first.next()
    resumed.load_state_dict(first.state_dict())
    assert resumed.next() == first.next()
    sandwich = PathSampler("sandwich", 2, 3, choice_sizes=[[5, 9, 1], [3, 3, 7]], n_random=2)
    step = sandwich.next()
    assert step[0] == (1, 2) and step[1] == (2, 0) and len(step) == 4
    with pytest.raises(ConfigError, match="unknown sampling"):
        PathSampler("greedy", 2, 2)


def test_stacked_branches_score_like_one_call_per_branch():
    net = _supernet(choices=("M", "A", "M[d_state=4]"))
    torch.manual_seed(2)
    batches = [(torch.randn(5, 3, 20, 20), torch.randint(0, 5, (5,)))]
    paths = list(net.paths())
    outs: dict = {}
    for stack in (0, 10_000):
        got = {}
        walk(net.eval(), batches[0][0], paths, lambda p, o, got=got: got.__setitem__(p, o.clone()), stack_images=stack)
        outs[stack] = got
    assert set(outs[0]) == set(paths) == set(outs[10_000])
    for path in paths:
        assert torch.allclose(outs[0][path], outs[10_000][path], atol=1e-5, rtol=1e-5), path
    with torch.no_grad():  # the map before the final norm, one extracted subnet at a time
        for path in paths[:: len(paths) // 5]:
            sub = net.subnet(path).eval()
            feats = sub.levels[-1](sub.levels[-2](sub.levels[1](sub.levels[0](sub.patch_embed(batches[0][0])))))
            assert torch.allclose(outs[10_000][path], feats, atol=1e-5, rtol=1e-5)
