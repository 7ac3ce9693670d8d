"""MADE core: the autoregressive property, normalisation, masks and their generator."""

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from conftest import random_made
from made_exp.core.choices import ACTIVATIONS, DIRECT_CONNECTIONS
from made_exp.core.made import MADE, Mask, MaskedLinear, log_bernoulli

OPTIONS = list(
    itertools.product(tuple(ACTIVATIONS), DIRECT_CONNECTIONS, ([16], [12, 7], [3, 20, 9]), (False, True), (False, True))
)


def all_binary(dim: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)


def build(activation="relu", direct="none", hidden=(16,), natural=False, conditioned=False, dim=7, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MADE(
            dim,
            list(hidden),
            activation=activation,
            direct_connection=direct,
            natural_ordering=natural,
            condition_on_mask=conditioned,
            init="orthogonal",
            **kwargs,
        ).double()
    torch.manual_seed(0)  # deterministic weights and test inputs
    for parameter in model.parameters():  # non-zero mask-conditioning weights, so they are exercised too
        torch.nn.init.normal_(parameter, std=0.5)
    return model


def reachable(model: MADE) -> torch.Tensor:
    """(D_out, D_in) True where some masked path (or the direct layer) links input to output."""
    paths = torch.eye(model.input_dim, dtype=torch.float64)
    for index, layer in enumerate(model.hidden):
        paths = layer.mask @ paths
        if index > 0 and model.input_skips:
            paths = paths + model.input_skips[index - 1].mask
    paths = model.output.mask @ paths
    if model.direct is not None:
        paths = paths + model.direct.mask
    return paths > 0


@pytest.mark.parametrize("activation,direct,hidden,natural,conditioned", OPTIONS)
def test_output_depends_only_on_earlier_inputs(activation, direct, hidden, natural, conditioned):
    model = build(activation, direct, hidden, natural, conditioned, num_masks=3)
    points = [torch.bernoulli(torch.full((7,), 0.5, dtype=torch.float64)) for _ in range(4)]
    points += [torch.randn(7, dtype=torch.float64) for _ in range(4)]  # wake up more ReLUs
    for k in range(model.num_masks):
        model.set_mask(k)
        jacobian = sum(torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x).abs() for x in points)
        degrees = model.mask(k).input_degrees
        forbidden = degrees[None, :] >= degrees[:, None]  # input at or after output in the ordering
        assert torch.all(jacobian[forbidden] == 0)
        # not vacuous: gradient flows exactly along paths the masks allow, and some do
        assert torch.all(jacobian[~reachable(model)] == 0)
        assert (jacobian != 0).any()


@pytest.mark.parametrize("activation,direct,hidden,natural,conditioned", OPTIONS[::5])
def test_probabilities_sum_to_one(activation, direct, hidden, natural, conditioned):
    model = build(activation, direct, hidden, natural, conditioned, dim=10, num_masks=2)
    states = all_binary(10)
    for k in range(model.num_masks):
        model.set_mask(k)
        total = torch.logsumexp(model.log_prob(states), 0).exp()
        assert abs(float(total) - 1.0) < 1e-10


def test_log_prob_is_stable_for_extreme_logits():
    model = build(dim=5)
    for parameter in model.parameters():
        parameter.data.mul_(1e4)
    log_prob = model.log_prob(all_binary(5))
    assert torch.isfinite(log_prob).all()
    assert abs(float(torch.logsumexp(log_prob, 0))) < 1e-6


def test_log_bernoulli_matches_torch_bce_and_its_gradients():
    torch.manual_seed(0)
    logits = torch.cat([torch.linspace(-60, 60, 241), torch.randn(159)]).double().reshape(4, 100)
    x = torch.bernoulli(torch.full_like(logits, 0.5))
    reference = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.allclose(log_bernoulli(logits, x), reference, rtol=0, atol=1e-12)
    fp32 = log_bernoulli(logits.float(), x.float()).double()
    assert torch.allclose(fp32, reference, rtol=1e-6, atol=100 * 6e-8)  # per-dimension rounding, 100 dimensions
    probe = (logits[:, :20] / 10).requires_grad_(), x[:, :20].clone().requires_grad_()
    assert torch.autograd.gradcheck(log_bernoulli, probe)


def test_log_bernoulli_upcasts_half_precision_logits():
    logits, x = torch.randn(3, 8).bfloat16(), torch.ones(3, 8)
    assert log_bernoulli(logits, x).dtype == torch.float32


def test_narrow_hidden_layer_still_autoregressive_and_warns():
    with pytest.warns(UserWarning, match="reach no output"):
        model = MADE(30, [4, 3], seed=1).double()
    x = torch.bernoulli(torch.full((30,), 0.5, dtype=torch.float64))
    jacobian = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x)
    degrees = model.mask(0).input_degrees
    assert torch.all(jacobian[degrees[None, :] >= degrees[:, None]] == 0)


def test_bank_masks_differ_by_resample_mode():
    full = build(num_masks=4, resample="full")
    orderings = full.bank_orderings
    assert len({tuple(o.tolist()) for o in orderings}) == 4
    ordering_only = build(num_masks=4, resample="ordering")
    assert all(torch.equal(ordering_only.bank_degrees_0[0], d) for d in ordering_only.bank_degrees_0)
    assert len({tuple(o.tolist()) for o in ordering_only.bank_orderings}) == 4
    connectivity_only = build(num_masks=4, resample="connectivity")
    assert all(torch.equal(connectivity_only.bank_orderings[0], o) for o in connectivity_only.bank_orderings)
    natural = build(num_masks=3, natural=True)
    assert torch.equal(natural.bank_orderings, torch.arange(7).repeat(3, 1))


def test_hidden_degrees_respect_lower_layer_minimum():
    model = build(hidden=(50, 40, 30), dim=20, num_masks=5)
    for k in range(5):
        below = 1
        for degrees in model.mask(k).hidden_degrees:
            assert int(degrees.min()) >= below and int(degrees.max()) <= 19
            below = int(degrees.min())


def test_same_seed_same_masks_and_generator_state_restored():
    first, second = build(seed=3, num_masks=2), build(seed=3, num_masks=2)
    assert torch.equal(first.bank_orderings, second.bank_orderings)
    first.draw_mask()
    restored = build(seed=99, num_masks=2)
    restored.load_state_dict(first.state_dict())
    assert torch.equal(restored.bank_orderings, first.bank_orderings)
    assert torch.equal(restored.draw_mask().ordering, first.draw_mask().ordering)
    x = torch.bernoulli(torch.full((4, 7), 0.5, dtype=torch.float64))
    first.set_mask(0)
    assert torch.allclose(restored.log_prob(x), first.log_prob(x))


def test_fresh_mask_with_own_generator_leaves_model_generator_alone():
    model, twin = build(seed=5), build(seed=5)
    model.draw_mask(torch.Generator().manual_seed(0))
    assert torch.equal(model.draw_mask().ordering, twin.draw_mask().ordering)


def test_setting_the_same_bank_mask_again_is_skipped_and_loading_resets_it():
    model = build(num_masks=3, seed=1)
    model.set_mask(1)
    mask_tensor = model.hidden[0].mask
    model.set_mask(1)
    assert model.hidden[0].mask is mask_tensor  # nothing rebuilt
    other = build(num_masks=3, seed=9)
    other.set_mask(1)
    other.load_state_dict(model.state_dict())
    other.set_mask(1)  # not skipped: the bank changed under it
    assert torch.equal(other.hidden[0].mask, model.hidden[0].mask)


def test_set_mask_accepts_mask_objects():
    model = build(num_masks=2)
    custom = Mask(torch.arange(7).flip(0), model.mask(0).hidden_degrees)
    model.set_mask(custom)
    assert torch.equal(model.current_mask.input_degrees, torch.arange(7, 0, -1))


def test_masked_linear_ignores_masked_weights():
    layer = MaskedLinear(3, 2)
    layer.set_mask(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    x = torch.randn(4, 3)
    changed = x.clone()
    changed[:, 1:] += 1.0
    assert torch.allclose(layer(x)[:, 0], layer(changed)[:, 0])


def test_baked_mask_gives_the_same_outputs_and_kept_gradients_and_refuses_another_mask():
    model = random_made(7, num_masks=2, hidden_sizes=[16, 12], direct_connection="full")
    x = torch.bernoulli(torch.full((10, 7), 0.5, dtype=torch.float64))
    model.set_mask(1)
    expected = model.log_prob(x)
    expected.sum().backward()
    expected_grads = [layer.weight.grad.clone() for layer in model.masked_layers()]
    model.zero_grad()
    model.bake_mask()
    torch.testing.assert_close(model.log_prob(x), expected, atol=1e-12, rtol=0)
    model.log_prob(x).sum().backward()
    for layer, reference in zip(model.masked_layers(), expected_grads, strict=True):
        assert torch.equal(layer.weight, layer.weight * layer.mask)
        torch.testing.assert_close(layer.weight.grad * layer.mask, reference, atol=1e-12, rtol=0)
    model.set_mask(1)  # the same mask again is fine
    with pytest.raises(RuntimeError, match="baked"):
        model.set_mask(0)
    model.unbake_mask()
    model.set_mask(0)
    assert not model.mask_baked
