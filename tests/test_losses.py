"""The metric losses of metric_losses.LOSSES against values worked out by hand on tiny batches.

Features are 2-D, so every cosine is the cosine of an angle we choose; the expected values are written
from the papers' formulas with the math module, independently of the code under test.
"""
import math
from argparse import Namespace

import pytest
import torch

import train
from reid import losses as metric_losses
from reid.losses import LOSSES, LossSettings, MetricLosses, chosen_losses


def options(*names, **settings):
    """An argparse-like namespace with ``names`` switched on and the flags' defaults."""
    defaults = vars(train.build_parser().parse_args([]))
    return Namespace(**{**defaults, **{name: True for name in names}, **settings})


def losses(*names, classes=2, dim=2, **settings):
    args = options(*names, **settings)
    return MetricLosses(chosen_losses(args), LossSettings.from_args(args), classes, dim)


def at(*angles, norm=1.0):
    """Feature vectors at the given angles (radians) from the x axis."""
    return torch.tensor([[norm * math.cos(a), norm * math.sin(a)] for a in angles], dtype=torch.float64).float()


def cross_entropy(logits, target):
    top = max(logits)
    return top + math.log(sum(math.exp(z - top) for z in logits)) - logits[target]


def with_axis_centres(metric, name):
    """Class 0's centre on the x axis, class 1's on the y axis."""
    with torch.no_grad():
        metric.terms[name].W.copy_(torch.eye(2))
    return metric


def test_arcface_by_hand():
    metric = with_axis_centres(losses("arcface"), "arcface")
    # angles to the own centre: 0.7 (class 0), pi/2 - 0.5 (class 1), and 2.8 > pi - 0.5 (class 0)
    loss = metric(at(0.7, 0.5, 2.8, norm=3.0), torch.tensor([0, 1, 0]))
    s, m = 64, 0.5
    expected = [cross_entropy([s * math.cos(0.7 + m), s * math.cos(math.pi / 2 - 0.7)], 0),
                cross_entropy([s * math.cos(0.5), s * math.cos(math.pi / 2 - 0.5 + m)], 1),
                # beyond pi - m, cos(theta + m) would rise again; the logit continues as cos(theta) - m sin(m)
                cross_entropy([s * (math.cos(2.8) - m * math.sin(m)), s * math.cos(2.8 - math.pi / 2)], 0)]
    assert min(expected) > 1, "values the margin decides, not ones that vanish"
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-4)


def test_cosface_by_hand():
    metric = with_axis_centres(losses("cosface"), "cosface")
    loss = metric(at(0.7, 0.5), torch.tensor([0, 1]))
    s, m = 64, 0.35
    expected = [cross_entropy([s * (math.cos(0.7) - m), s * math.cos(math.pi / 2 - 0.7)], 0),
                cross_entropy([s * math.cos(0.5), s * (math.cos(math.pi / 2 - 0.5) - m)], 1)]
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_sphereface_by_hand():
    metric = with_axis_centres(losses("sphere"), "sphere")
    sphere = metric.terms["sphere"]

    def expected(weight):
        # psi(theta) = (-1)^k cos(4 theta) - 2k for theta in [k pi/4, (k+1) pi/4]; all logits times ||x|| = 2
        psi = [math.cos(4 * 0.3), -math.cos(4 * 1.0) - 2]
        target = [2 * (weight * math.cos(a) + p) / (1 + weight) for a, p in zip((0.3, 1.0), psi)]
        return (cross_entropy([target[0], 2 * math.cos(math.pi / 2 - 0.3)], 0)
                + cross_entropy([target[1], 2 * math.cos(math.pi / 2 - 1.0)], 0)) / 2

    features, labels = at(0.3, 1.0, norm=2.0), torch.tensor([0, 0])
    assert metric(features, labels).item() == pytest.approx(expected(1000), rel=1e-4)    # first step: lambda 1000
    assert sphere.steps.item() == 1
    with torch.no_grad():
        sphere.steps.fill_(10_000)
        assert metric(features, labels).item() == pytest.approx(expected(5), rel=1e-4)   # annealed to lambda 5
    assert sphere.steps.item() == 10_000, "validation does not advance the schedule"


def cosine(a, b):
    return math.cos(a - b)


def circle_term(anchor, positives, negatives, m=0.25, gamma=32):
    def lse(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))
    sp = [cosine(anchor, p) for p in positives]
    sn = [cosine(anchor, n) for n in negatives]
    logits_p = [-gamma * max(0, 1 + m - s) * (s - (1 - m)) for s in sp]
    logits_n = [gamma * max(0, s + m) * (s - m) for s in sn]
    return math.log1p(math.exp(lse(logits_p) + lse(logits_n)))


ANGLES, LABELS = (0.0, 0.5, 1.0, 1.7), torch.tensor([0, 0, 1, 1])


def test_circle_by_hand():
    loss = losses("circle")(at(*ANGLES), LABELS)
    a, b, c, d = ANGLES
    expected = [circle_term(a, [b], [c, d]), circle_term(b, [a], [c, d]),
                circle_term(c, [d], [a, b]), circle_term(d, [c], [a, b])]
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-4)


def chord(a, b):
    """Euclidean distance between unit vectors at angles a and b."""
    return 2 * math.sin(abs(a - b) / 2)


def test_contrastive_by_hand():
    loss = losses("contrast")(at(*ANGLES, norm=5.0), LABELS)   # the norm must not matter
    a, b, c, d = ANGLES
    positives = [chord(a, b), chord(c, d)]
    negatives = [max(0, 1 - chord(x, y)) for x in (a, b) for y in (c, d)]
    assert loss.item() == pytest.approx(sum(positives) / 2 + sum(negatives) / 4, rel=1e-4)


def test_lifted_by_hand():
    loss = losses("lifted")(at(*ANGLES), LABELS)
    groups = ((ANGLES[0], ANGLES[1]), (ANGLES[2], ANGLES[3]))
    terms = []
    for own, other in (groups, groups[::-1]):
        for anchor in own:
            positive = [chord(anchor, p) for p in own if p != anchor]
            negative = [1 - chord(anchor, n) for n in other]
            terms.append(max(0, math.log(sum(map(math.exp, positive))) + math.log(sum(map(math.exp, negative)))))
    assert loss.item() == pytest.approx(sum(terms) / 4, rel=1e-4)


def test_instance_by_hand():
    features = at(0.0, 0.4, 1.5)
    labels = torch.tensor([3, 3, 8])
    gamma = 4   # with the default 32 these losses vanish below float32's resolution
    per_picture = losses("instance", ins_gamma=gamma)(features, labels)
    expected = sum(cross_entropy([gamma * cosine(a, b) for b in (0.0, 0.4, 1.5)], i)
                   for i, a in enumerate((0.0, 0.4, 1.5))) / 3
    assert per_picture.item() == pytest.approx(expected, rel=1e-4)
    # merged: identity 3 is the mean of its two unit vectors, which points at angle 0.2
    merged = losses("instance_id", ins_gamma=gamma)(features, labels)
    expected = (cross_entropy([gamma, gamma * cosine(0.2, 1.5)], 0) + cross_entropy([gamma * cosine(0.2, 1.5), gamma], 1)) / 2
    assert merged.item() == pytest.approx(expected, rel=1e-4)


def test_losses_add_up_with_their_weights():
    features, labels = at(*ANGLES), LABELS
    combined = losses("triplet", "circle", "center", center_weight=0.01)
    alone = [losses("triplet")(features, labels), losses("circle")(features, labels)]
    centres = combined.terms["center"].centers.detach()
    center = ((features - centres[labels]) ** 2).sum(1).mean()
    assert combined(features, labels).item() == pytest.approx((alone[0] + alone[1] + 0.01 * center).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["arcface", "cosface", "sphere", "center", "instance_id"])
def test_a_mean_over_the_batch_not_a_sum(name):
    # the same pictures twice: a mean stays put, a sum (or a second 1/batch) would not
    torch.manual_seed(0)
    metric = losses(name, classes=3, dim=4)
    features, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():   # SphereFace's annealing advances with every training step
        once = metric(features, labels)
        twice = metric(features.repeat(2, 1), labels.repeat(2))
    assert twice.item() == pytest.approx(once.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["arcface", "cosface", "sphere", "center"])
def test_class_centres_get_gradients_and_are_optimised(name):
    args = options(name, nclasses=3, linear_num=4, backbone="resnet18", lr=0.1)
    context = train.training_context(args, torch.nn.Linear(2, 2), torch.device("cpu"))
    centres = next(context.metric.terms[name].parameters())
    assert any(centres is p for group in context.optimizer.param_groups for p in group["params"])
    before = centres.detach().clone()
    torch.manual_seed(1)
    context.metric(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert centres.grad is not None and centres.grad.abs().sum() > 0
    context.optimizer.step()
    assert not torch.equal(before, centres.detach())


def test_triplet_agrees_with_the_library_batch_hard_miner():
    from pytorch_metric_learning import losses as library, miners, reducers

    torch.manual_seed(0)
    features, labels = torch.randn(12, 8), torch.arange(4).repeat_interleave(3)
    ours = metric_losses.batch_hard_triplet(features, labels, margin=0.3)
    theirs = library.TripletMarginLoss(margin=0.3, reducer=reducers.MeanReducer())(
        features, labels, miners.BatchHardMiner()(features, labels))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-4)


def test_every_loss_trains_under_float16_autocast_inputs():
    # AMP hands the losses half-precision features; they must compute in float32 and keep float32 centres
    metric = losses(*LOSSES, classes=3, dim=4)
    features = torch.randn(6, 4, dtype=torch.float16, requires_grad=True)
    loss = metric(features, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and features.grad is not None
    assert all(p.dtype == torch.float32 for p in metric.parameters())


def test_a_training_step_of_the_optional_losses_reads_nothing_back_to_the_host(monkeypatch):
    """On a GPU each read of a tensor (bool, item, int) waits for the queue: the triplet loss, SphereFace's
    annealing and the --wa update must not read any, on any step."""
    from reid.recipes import weight_average

    net = torch.nn.Linear(4, 4)
    average = weight_average(net, decay=0.9)
    average.update_parameters(net)   # the first update reads the restored counter once
    sphere = losses("sphere", classes=3, dim=4)
    features, labels = torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 0, 1, 2])

    def host_read(*args):
        raise AssertionError("a tensor was read on the host")
    for name in ("__bool__", "item", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    loss = metric_losses.batch_hard_triplet(features, labels) + sphere(features, labels)
    loss = loss + metric_losses.batch_hard_triplet(features, torch.arange(6))   # no anchor has a positive
    loss.backward()
    average.update_parameters(net)
    monkeypatch.undo()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert metric_losses.batch_hard_triplet(features, torch.arange(6)).item() == 0


def test_verification_loss_by_hand():
    """Three pictures of persons 0, 0, 1 in one dimension: one same-person pair, two different ones. The
    classifier's logits are (0, d) for the squared difference d: p(same) = sigmoid(d)... for the same pair
    the target is class 1, for different pairs class 0."""
    metric = losses("verif", classes=2, dim=1)
    classifier = metric.terms["verif"].classifier
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[0.0], [1.0]]))
        classifier.bias.zero_()
    features, labels = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0, 0, 1])
    ce = lambda d, target: -math.log(math.exp([0, d][target]) / (1 + math.exp(d)))  # noqa: E731
    same = ce(1.0, 1)                                 # (0 - 1)^2
    different = (ce(9.0, 0) + ce(4.0, 0)) / 2         # (0 - 3)^2 and (1 - 3)^2
    assert metric(features, labels).item() == pytest.approx((same + different) / 2, rel=1e-5)
    assert any(group for group in metric.parameter_groups(0.1, 0.5) if classifier.weight in group["params"])


def test_fsgd_takes_the_plain_steps_fused():
    steps = []
    for fused in (False, True):
        torch.manual_seed(0)   # the same layer and inputs for both
        net = torch.nn.Linear(4, 3)
        optimizer, _ = train.recipes.build_optimizer(net, options(lr=0.1, no_pretrained=True, FSGD=fused))
        assert bool(optimizer.defaults.get("fused")) is fused
        for _ in range(3):
            optimizer.zero_grad()
            net(torch.randn(5, 4)).square().sum().backward()
            optimizer.step()
        steps.append(torch.cat([p.detach().ravel() for p in net.parameters()]))
    assert torch.allclose(steps[0], steps[1], atol=1e-6)
