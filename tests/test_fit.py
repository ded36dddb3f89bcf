"""The network path (``prior="network"``, ``"network+filter"``): the fit's quality on phantoms, slices and volumes,
determinism and RNG hygiene, the noise models under the fit, backtracking, and the CUDA out-of-memory fallback.

The default path (the filter) is specified in ``test_denoise.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import NOISE_MODEL_NAMES, make_phantom, noisy_phantom, psnr, small_network, synthesise

import monai_dnaprior.network.volume as volume_module
import monai_dnaprior.settings as settings_module
from monai_dnaprior import DNAPriorDenoise, NetworkConfig, PriorState, denoise, fit_prior, get_noise_model
from monai_dnaprior.network import FitResult, NetworkFit, OutputAverager, fit_network, volume_fits
from monai_dnaprior.settings import NETWORK_ALONE, PRESETS, preset_settings
from monai_dnaprior.noise import estimate_noise_field

SIGMA = 0.1


def _fit(img, iters: int = 60, **kwargs):
    """``denoise`` with the network alone and :func:`small_network` settings (``volume_mode`` etc. go there)."""
    network = {k: kwargs.pop(k) for k in list(kwargs) if k in NetworkConfig.__dataclass_fields__}
    return denoise(torch.as_tensor(img), prior=kwargs.pop("prior", "network"),
                   network_config=small_network(iters, **network), **kwargs)


# ---------------------------------------------------------------------------------------------------- quality


def test_network_alone_improves_a_2d_phantom(noisy_2d):
    clean, noisy = noisy_2d
    result = _fit(noisy, 60)
    assert result.image.shape == noisy.shape and result.image.dtype == torch.float32
    assert psnr(result.image, clean) > psnr(noisy, clean) + 3.0
    assert result.info["prior"] == "network" and result.info["volume_mode"] == "2d"
    assert result.info["iterations"] == 60 and result.info["noise_model"] == "gaussian"


def test_network_alone_is_not_the_filter(noisy_2d):
    """``prior="network"`` makes its estimate without the filter: its output is not the default's."""
    _, noisy = noisy_2d
    network = _fit(noisy, 20).image
    default = denoise(torch.from_numpy(noisy)).image
    assert float((network - default).abs().mean()) > 0.01


@pytest.mark.parametrize("volume_mode", ["volume", "slices", "auto"])
def test_network_alone_improves_a_3d_phantom(noisy_3d, volume_mode):
    clean, noisy = noisy_3d
    result = _fit(noisy, 60, volume_mode=volume_mode)
    assert result.image.shape == noisy.shape
    assert psnr(result.image, clean) > psnr(noisy, clean) + 2.0
    assert result.info["volume_mode"] == ("volume" if volume_mode == "volume" else "slices")


def test_slices_are_warm_started_with_a_fraction_of_the_budget(noisy_3d):
    _, noisy = noisy_3d
    result = _fit(noisy, 60, volume_mode="slices")
    depth = noisy.shape[-1]
    assert result.info["iterations"] == 60 + (depth - 1) * math.ceil(60 * small_network().warm_iters_fraction)


def test_warm_started_slices_agree_with_cold_per_slice_fits(noisy_3d):
    clean, noisy = noisy_3d
    warm = _fit(noisy, 60, volume_mode="slices", noise_level=SIGMA).image.numpy()
    cold = np.stack([_fit(noisy[..., k], 60, noise_level=SIGMA).image.numpy() for k in range(noisy.shape[-1])],
                    axis=-1)
    assert np.abs(warm - cold).mean() < 0.5 * SIGMA
    assert psnr(warm, clean) > psnr(cold, clean) - 1.0  # a tenth of the budget per slice loses nothing


@pytest.mark.parametrize("slice_axis", [0, 1, -2])
def test_slices_along_any_axis(slice_axis):
    clean, noisy = noisy_phantom((6, 10, 8))
    result = _fit(noisy, 40, volume_mode="slices", slice_axis=slice_axis)
    assert result.image.shape == noisy.shape
    depth = noisy.shape[1 + slice_axis % 3]
    assert result.info["iterations"] == 40 + (depth - 1) * math.ceil(40 * small_network().warm_iters_fraction)
    assert psnr(result.image, clean) > psnr(noisy, clean)


def test_fit_prior_result(noisy_2d):
    _, noisy = noisy_2d
    target = torch.from_numpy(noisy)[None]
    model = get_noise_model("gaussian", target[0], 2, level=SIGMA)
    seen = []
    result = fit_prior(target, model, small_network(20), seed=1,
                       monitor=lambda it, raw, avg: seen.append((it, raw.shape, avg.shape)))
    assert isinstance(result, FitResult)
    assert result.image.shape == result.uncertainty.shape == target.shape
    assert result.iterations == 20 and len(result.history) == 20
    assert [s[0] for s in seen] == list(range(20)) and seen[0][1] == seen[0][2] == target.shape
    assert isinstance(result.state, PriorState) and not result.image.requires_grad
    assert result.history[-1] < result.history[0]  # the loss goes down


def test_fit_network_gives_the_image_its_spread_and_how(noisy_3d):
    _, noisy = noisy_3d
    field, target = estimate_noise_field(torch.from_numpy(noisy), 3, "gaussian", SIGMA)
    fit = fit_network(target, field, small_network(10, volume_mode="volume"), seed=0)
    assert isinstance(fit, NetworkFit) and fit.mode == "volume" and fit.iterations == 10
    assert fit.image.shape == fit.spread.shape == target.shape
    assert bool((fit.spread >= 0).all()) and float(fit.spread.max()) > 0


# --------------------------------------------------------------------------------------------- network+filter


def _rician_phantom(shape=(32, 32), seed=0):
    clean = make_phantom(shape)[None]
    return clean, synthesise("rician", clean, np.random.default_rng(seed))


def test_network_then_filter_on_a_rician_image_is_neither_alone():
    """On a Rician magnitude the fit guides the filter (it corrects the magnitude's bias): the result is the filter's
    work, close to the filter alone, yet not equal to it, and not the network's output."""
    clean, noisy = _rician_phantom()
    both = _fit(noisy, 30, prior="network+filter", noise_model="rician")
    network = _fit(noisy, 30, noise_model="rician")
    filtered = denoise(torch.from_numpy(noisy), noise_model="rician")
    assert both.info["prior"] == "network+filter" and both.info["iterations"] == 30
    assert filtered.info["prior"] == "filter" and filtered.info["iterations"] == 0
    assert not torch.allclose(both.image, filtered.image, atol=1e-4)
    assert not torch.allclose(both.image, network.image, atol=1e-4)
    assert psnr(both.image, clean) > psnr(noisy, clean) + 3.0


def test_network_then_filter_on_other_noise_runs_the_filter_alone_with_a_warning(noisy_2d):
    _, noisy = noisy_2d
    with pytest.warns(UserWarning, match="changes only a Rician result"):
        result = _fit(noisy, 10, prior="network+filter", noise_model="gaussian")
    assert result.info["prior"] == "filter" and result.info["iterations"] == 0
    assert torch.equal(result.image, denoise(torch.from_numpy(noisy), noise_model="gaussian").image)


# ------------------------------------------------------------------------------------------ determinism, RNG


@pytest.mark.parametrize("shape, volume_mode", [((12, 12), "auto"), ((8, 8, 3), "slices"), ((8, 8, 3), "volume")])
def test_same_seed_same_output_bitwise_other_seed_differs(shape, volume_mode):
    _, noisy = noisy_phantom(shape)
    run = lambda seed: _fit(noisy, 10, seed=seed, volume_mode=volume_mode, uncertainty=True)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.image, b.image) and torch.equal(a.uncertainty, b.uncertainty)
    assert not torch.equal(a.image, c.image)


def test_fit_does_not_touch_the_global_torch_rng(noisy_2d, noisy_3d):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    fits = [_fit(noisy_2d[1], 5)] + [_fit(noisy_3d[1], 5, volume_mode=mode) for mode in ("slices", "volume")]
    assert all(f.info["iterations"] > 0 for f in fits)  # every one fitted a network
    assert torch.equal(torch.get_rng_state(), state)


def test_global_rng_state_does_not_change_the_result(noisy_2d):
    _, noisy = noisy_2d
    torch.manual_seed(0)
    a = _fit(noisy, 5).image
    torch.manual_seed(99)
    torch.rand(10)
    b = _fit(noisy, 5).image
    assert torch.equal(a, b)


def test_runs_under_no_grad_and_inference_mode_with_the_same_result(noisy_2d):
    _, noisy = noisy_2d
    expected = _fit(noisy, 10).image
    with torch.no_grad():
        assert torch.equal(_fit(noisy, 10).image, expected)
    with torch.inference_mode():
        assert torch.equal(_fit(noisy, 10).image, expected)
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------------------------------------ uncertainty


@pytest.mark.parametrize("noise_model", NOISE_MODEL_NAMES)
def test_uncertainty_shape_and_sign_for_every_model(noise_model):
    _, noisy = noisy_phantom((16, 17, 4))
    result = _fit(np.abs(noisy), 5, noise_model=noise_model, uncertainty=True)
    u = result.uncertainty
    assert u.shape == noisy.shape and u.dtype == torch.float32
    assert bool((u >= 0).all()) and bool(torch.isfinite(u).all()) and float(u.max()) > 0


def test_uncertainty_of_the_network_then_filter_on_a_rician_image():
    _, noisy = _rician_phantom((24, 24))
    result = _fit(noisy, 10, prior="network+filter", noise_model="rician", uncertainty=True)
    u = result.uncertainty
    assert result.info["prior"] == "network+filter"
    assert u.shape == noisy.shape and bool((u >= 0).all()) and bool(torch.isfinite(u).all())
    assert float(u.max()) > 0


# ----------------------------------------------------------------------------------------------- edge inputs


def test_the_fit_does_not_modify_its_input(noisy_2d):
    _, noisy = noisy_2d
    img = torch.from_numpy(noisy.copy())
    _fit(img, 5, uncertainty=True)
    assert torch.equal(img, torch.from_numpy(noisy))


def test_output_is_in_the_input_intensity_range_units():
    clean, noisy = noisy_phantom((24, 24))
    scale, offset = 1500.0, -300.0
    out = _fit(noisy * scale + offset, 60).image.numpy()
    # the fit runs on a percentile-normalised image and maps back: same PSNR in the image's own units
    assert psnr((out - offset) / scale, clean) > psnr(noisy, clean) + 3.0


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 4, 4, 3)])
def test_a_constant_image_is_returned_unchanged_without_a_fit(shape):
    result = _fit(torch.full(shape, 7.0), 5, uncertainty=True)
    assert torch.equal(result.image, torch.full(shape, 7.0))
    assert torch.equal(result.uncertainty, torch.zeros(shape)) and result.info["iterations"] == 0


def test_volume_fits_bounds_the_memory():
    assert volume_fits(torch.Size([1, 8, 8, 4]), NetworkConfig(), torch.device("cpu"))
    assert not volume_fits(torch.Size([1, 4096, 4096, 4096]), NetworkConfig(), torch.device("cpu"))
    wide = NetworkConfig(channels=(4096, 4096))
    assert not volume_fits(torch.Size([1, 256, 256, 256]), wide, torch.device("cpu"))


def test_a_volume_too_large_to_fit_whole_falls_back_to_slices(monkeypatch):
    monkeypatch.setattr(volume_module, "volume_fits", lambda shape, config, device: False)
    _, noisy = noisy_phantom((8, 8, 3))
    with pytest.warns(UserWarning, match="slice by slice"):
        result = _fit(noisy, 3, volume_mode="volume")
    assert result.info["volume_mode"] == "slices"


# ------------------------------------------------------------------------------------------------ noise models


@pytest.mark.parametrize("noise_model, iters", [("gaussian", 60), ("poisson", 60), ("rician", 150), ("speckle", 60)])
def test_every_noise_model_improves_a_phantom_under_its_noise(noise_model, iters):
    clean = make_phantom((32, 32))[None]
    noisy = synthesise(noise_model, clean, np.random.default_rng(0))
    result = _fit(noisy, iters, noise_model=noise_model)
    assert result.info["noise_model"] == noise_model
    assert psnr(result.image, clean) > psnr(noisy, clean) + 1.0
    assert bool((result.image >= 0).all()) or noise_model == "gaussian"  # the other models keep zero at zero


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rician_fit_is_not_hurt_by_the_sign_ambiguity(seed):
    """The Rician mean is even in the clean estimate, so the network may fit +x in one region and -x in another.

    Bug: ``fit_prior`` averaged the signed outputs and the result took ``abs`` only at the end, so wherever the
    output changed sign the average (and the image) was pulled to zero. With seed 2 the denoised image was no better
    than the noisy input at 150 iterations (and 3 dB *worse* at 300), while the same data under the Gaussian model
    gained 10 dB; constraining the Rician output to be non-negative gains 4-10 dB for every seed.
    """
    clean, noisy = _rician_phantom()
    out = _fit(noisy, 150, noise_model="rician", seed=seed).image
    assert psnr(out, clean) > psnr(noisy, clean) + 1.0


# --------------------------------------------------------------------------------------------- backtracking


class _SpikeOnce:
    """A noise model whose expected observation is NaN once, at call ``at``: a transient loss blow-up. Everything
    else is the wrapped model's."""

    def __init__(self, model, at: int) -> None:
        self.model, self.at, self.calls = model, at, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def observe(self, x):
        self.calls += 1
        out = self.model.observe(x)
        return out * float("nan") if self.calls == self.at else out


def _gaussian(target: torch.Tensor):
    return get_noise_model("gaussian", target[0], target.ndim - 2, level=SIGMA)


def test_a_transient_loss_spike_is_backtracked_and_the_fit_goes_on(noisy_2d):
    """Bug: the last good state was only saved at iterations 0, 50, 100, ... and ``best_loss`` kept after a
    backtrack, so a spike before iteration 50 restored the *initial* network, whose loss is far above 3x the best
    loss: every later iteration backtracked again and the fit ended with the average of its first few outputs.
    (It happened without injection too: the fast preset on a 32x32 phantom with noise in one half stopped learning
    after 13 of 600 iterations.)"""
    _, noisy = noisy_2d
    target = torch.from_numpy(noisy)[None]
    spiking = _SpikeOnce(_gaussian(target), at=20)
    result = fit_prior(target, spiking, small_network(60))
    assert spiking.calls > 20  # the spike happened
    assert not any(math.isnan(v) for v in result.history)  # the NaN loss was never stepped on
    assert result.iterations >= 50  # the fit went on after the spike


def test_non_finite_loss_never_reaches_the_output(noisy_2d):
    _, noisy = noisy_2d
    target = torch.from_numpy(noisy)[None]
    result = fit_prior(target, _SpikeOnce(_gaussian(target), at=3), small_network(10))
    assert torch.isfinite(result.image).all() and torch.isfinite(result.uncertainty).all()


# --------------------------------------------------------------------------------- CUDA out-of-memory fallback
# No GPU is needed: a CPU tensor that says it is on CUDA stands for the target, and ``fit_prior`` (the one fit that
# ``fit_network`` runs, on the whole image or slice by slice) is scripted to run out of memory.


class _OnCuda(torch.Tensor):
    """A CPU tensor that reports a CUDA device; ``.cpu()`` gives a :class:`_BackOnCpu`."""

    @property
    def device(self):
        return torch.device("cuda")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(_BackOnCpu)


class _BackOnCpu(torch.Tensor):
    """The CPU copy: ``.to(device)`` records where it was sent (a real tensor cannot go to CUDA here)."""

    sent_to = None

    def to(self, *args, **kwargs):
        out = self.as_subclass(_BackOnCpu)
        out.sent_to = torch.device(args[0] if args else kwargs["device"])
        return out


def _scripted_fit(monkeypatch, failures):
    """Replace ``fit_prior`` in the whole-image fit: the first calls raise ``failures`` in turn, the rest return the
    target itself. Returns the list of the targets' types and shapes, one per call."""
    calls = []

    def fake_fit_prior(target, model, config, seed=0, warm_start=None, monitor=None, noise_psd=None):
        calls.append((type(target), tuple(target.shape)))
        if failures:
            raise failures.pop(0)
        return FitResult(target.clone(), torch.zeros_like(target), 3, PriorState({}, target))

    monkeypatch.setattr(volume_module, "fit_prior", fake_fit_prior)
    monkeypatch.setattr(volume_module, "volume_fits", lambda shape, config, device: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return calls


def _field_and_target(shape):
    field, target = estimate_noise_field(torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)),
                                         len(shape), "gaussian", SIGMA)
    return field, target


def _oom():
    return torch.OutOfMemoryError("CUDA out of memory")


def test_cuda_oom_in_2d_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    field, target = _field_and_target((8, 8))
    calls = _scripted_fit(monkeypatch, [_oom()])
    with pytest.warns(UserWarning, match="CPU"):
        fit = fit_network(target.as_subclass(_OnCuda), field, small_network(3), 0)
    assert [c[0] for c in calls] == [_OnCuda, _BackOnCpu]  # retried on the CPU copy ...
    assert fit.image.sent_to == fit.spread.sent_to == torch.device("cuda")  # ... and moved back
    assert fit.mode == "2d" and fit.iterations == 3
    torch.testing.assert_close(fit.image.as_subclass(torch.Tensor), target)


def test_cuda_oom_on_a_volume_retries_slice_by_slice_then_on_the_cpu(monkeypatch):
    field, target = _field_and_target((8, 8, 4))
    calls = _scripted_fit(monkeypatch, [_oom(), _oom()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_network(target.as_subclass(_OnCuda), field, small_network(3, volume_mode="volume"), 0)
    messages = [str(w.message) for w in caught]
    assert any("slice by slice" in m for m in messages) and any("CPU" in m for m in messages)
    assert calls[0] == (_OnCuda, (1, 1, 8, 8, 4))  # the whole volume
    assert calls[1] == (_OnCuda, (1, 1, 8, 8))  # its first slice, still on the GPU
    assert calls[2:] == [(_BackOnCpu, (1, 1, 8, 8))] * 4  # every slice on the CPU
    assert fit.mode == "slices" and fit.iterations == 4 * 3 and fit.image.sent_to == torch.device("cuda")
    torch.testing.assert_close(fit.image.as_subclass(torch.Tensor), target)


def test_cuda_oom_on_a_volume_that_fits_as_slices_stays_on_the_gpu(monkeypatch):
    field, target = _field_and_target((4, 4, 2))
    calls = _scripted_fit(monkeypatch, [_oom()])
    with pytest.warns(UserWarning, match="slice by slice"):
        fit = fit_network(target.as_subclass(_OnCuda), field, small_network(3, volume_mode="volume"), 0)
    assert [c[0] for c in calls] == [_OnCuda] * 3 and fit.mode == "slices"
    assert fit.image.device.type == "cuda" and not isinstance(fit.image, _BackOnCpu)


def test_out_of_memory_on_the_cpu_is_not_swallowed(monkeypatch):
    field, target = _field_and_target((4, 4))
    _scripted_fit(monkeypatch, [torch.OutOfMemoryError("out of memory")])
    with pytest.raises(torch.OutOfMemoryError):
        fit_network(target, field, small_network(3), 0)


def test_other_errors_pass_through_the_fallback(monkeypatch):
    field, target = _field_and_target((4, 4))
    _scripted_fit(monkeypatch, [ValueError("boom")])
    with pytest.raises(ValueError, match="boom"):
        fit_network(target.as_subclass(_OnCuda), field, small_network(3), 0)


# ------------------------------------------------------------------------------- the fit alone: budget and stop


def test_the_fit_alone_has_its_own_budget_and_the_guide_fit_keeps_its():
    """``prior="network"`` takes :data:`NETWORK_ALONE` (thousands of iterations, the average at the variance
    minimum); the guide fit of ``network+filter`` keeps :data:`PRESETS`' (its numbers unchanged)."""
    for preset in ("fast", "default", "quality"):
        _, alone = preset_settings(preset, prior="network")
        _, guide = preset_settings(preset, prior="network+filter")
        assert alone == NETWORK_ALONE[preset] and alone.keep_best
        assert guide == PRESETS[preset][1] and not guide.keep_best
        assert alone.max_iters >= 5 * guide.max_iters
    assert preset_settings("default")[1] == preset_settings("default", prior="auto")[1] == PRESETS["default"][1]
    assert DNAPriorDenoise(prior="network").network_config == NETWORK_ALONE["default"]
    assert DNAPriorDenoise(prior="network", preset="fast", max_iters=9).network_config == replace(
        NETWORK_ALONE["fast"], max_iters=9)
    assert DNAPriorDenoise(prior="network+filter").network_config == PRESETS["default"][1]


@pytest.mark.parametrize("noise_model", NOISE_MODEL_NAMES)
def test_denoise_fits_the_network_alone_with_the_fit_alone_settings(monkeypatch, noise_model):
    """Without ``network_config``, ``prior="network"`` runs the preset's fit alone, for every noise model."""
    budget = small_network(25, min_iters=10, patience=500, keep_best=True)
    monkeypatch.setitem(settings_module.NETWORK_ALONE, "default", budget)
    noisy = synthesise(noise_model, make_phantom((24, 24))[None], np.random.default_rng(1))
    result = denoise(torch.from_numpy(noisy), noise_model, prior="network")
    assert result.info["prior"] == "network" and result.info["iterations"] == 25
    assert result.info["noise_model"] == noise_model and bool(torch.isfinite(result.image).all())


def test_keep_best_returns_the_average_at_the_output_variance_minimum():
    """ES-WMV: outputs that settle and then wander off (as a fit that starts to fit the noise); the stop comes
    ``patience`` iterations after the variance minimum, and ``keep_best`` returns the average as it was there."""
    generator = torch.Generator().manual_seed(0)
    kept, last = OutputAverager(0.9, patience=20, min_iters=5, keep_best=True), OutputAverager(0.9, 20, 5)
    averages = []
    for it in range(1, 300):
        output = torch.randn(1, 1, 8, 8, generator=generator) * (abs(it - 60) / 60 + 0.05)
        kept.update(output)
        last.update(output)
        averages.append(kept.mean.clone())
        if kept.should_stop():
            break
    assert 55 <= kept.best_iteration <= 80 and kept.iteration == kept.best_iteration + 21 and last.should_stop()
    assert kept.result_iteration == kept.best_iteration and last.result_iteration == last.iteration
    assert torch.equal(kept.result()[0], averages[kept.best_iteration - 1])
    assert torch.equal(last.result()[0], averages[-1]) and not torch.equal(kept.result()[0], last.result()[0])


def test_the_fit_returns_the_average_it_names(noisy_2d):
    """With ``keep_best`` the fit returns the average of ``returned_iteration`` (the last variance minimum), without
    it the last one; the same seed gives the same result."""
    _, noisy = noisy_2d
    target = torch.from_numpy(noisy)[None]
    model = get_noise_model("gaussian", target[0], 2, level=SIGMA)
    runs = {}
    for keep_best in (True, False):
        seen = []
        config = small_network(40, min_iters=5, patience=500, min_change=0.0, keep_best=keep_best)
        result = fit_prior(target, model, config, seed=3, monitor=lambda it, raw, avg: seen.append(avg.clone()))
        assert result.iterations == 40 and 5 <= result.returned_iteration <= 40
        assert torch.equal(result.image, seen[result.returned_iteration - 1])
        runs[keep_best] = result
    assert runs[False].returned_iteration == 40
    again = fit_prior(target, model, small_network(40, min_iters=5, patience=500, min_change=0.0, keep_best=True),
                      seed=3)
    assert torch.equal(again.image, runs[True].image) and again.returned_iteration == runs[True].returned_iteration
