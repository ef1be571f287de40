"""Generator behaviour: shapes, layouts, gradients, own-format round trips, edge inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import apollo
from apollo.model import gain_shape
from apollo.model.config import PRESETS, ApolloConfig, paper_layout, v1_layout
from apollo.model.layers import ONEDNN_LINEAR
from apollo.pretrained import build_test_model


def test_v1_layout_matches_released_bands():
    assert v1_layout(882) == [(79, 5), (1, 47)]
    assert v1_layout(960) == [(79, 6), (1, 7)]


def test_paper_layout_is_160_hz():
    layout = paper_layout(882, 44100)
    assert sum(n * w for n, w in layout) == 442
    width = layout[0][1]
    assert width * 44100 / 882 == pytest.approx(150.0)  # 160 Hz rounded to whole 50 Hz bins
    assert layout[-1][1] >= width
    assert sum(n for n, _ in layout) == 147


def test_gain_shape_by_hand():
    bands = torch.tensor([[[3.0, 0.0], [4.0, 0.0]]])  # one band: Re = [3, 0], Im = [4, 0]
    feats = gain_shape(bands)
    gain = math.sqrt(25 + torch.finfo(torch.float32).eps)
    expected = torch.tensor([[3 / gain, 0.0, 4 / gain, 0.0, math.log(gain)]])
    assert torch.allclose(feats, expected, atol=1e-7)


CONFIGS = {
    "v1-tiny": PRESETS["tiny"],
    "paper-tiny": ApolloConfig(feature_dim=16, num_blocks=2, num_heads=2, band_layout="paper"),
    "v1-48k": ApolloConfig(sample_rate=48000, feature_dim=24, num_blocks=1, num_heads=4),
    "paper-16k": ApolloConfig(sample_rate=16000, feature_dim=16, num_blocks=1, num_heads=2, band_layout="paper"),
    "v1-residual": ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_backward_and_roundtrip(name, channels, tmp_path):
    config = CONFIGS[name]
    torch.manual_seed(0)
    model = apollo.Apollo(config)
    wav = torch.randn(2, channels, config.sample_rate // 4)
    out = model(wav)
    assert out.shape == wav.shape
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    path = tmp_path / "model.safetensors"
    apollo.save_checkpoint(path, model.state_dict(), config)
    loaded = apollo.load_model(path)
    assert loaded.config == config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(loaded(wav), model(wav))


def test_residual_model_starts_as_the_identity_and_learns():
    torch.manual_seed(0)
    model = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True))
    wav = torch.randn(1, 2, 11025)
    out = model(wav)
    assert torch.allclose(out, wav, atol=1e-5)  # STFT -> iSTFT round trip only
    target = 0.5 * wav
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        loss = (model(wav) - target).abs().mean()
        loss.backward()
        opt.step()
    assert (model(wav) - target).abs().mean() < 0.9 * (out - target).abs().mean()


@pytest.mark.parametrize("grow_to", [2, 3])
def test_grown_model_computes_what_the_smaller_one_did_and_its_new_blocks_learn(grow_to):
    torch.manual_seed(0)
    small = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True))
    for p in small.parameters():  # a trained-looking model: no zero output layers
        torch.nn.init.normal_(p, std=0.1)
    big = small.grown(grow_to)
    assert big.config == dataclasses.replace(small.config, num_blocks=grow_to) and len(big.blocks) == grow_to
    wav = torch.randn(1, 2, 8820)
    with torch.no_grad():
        assert torch.equal(big(wav), small(wav))
    new = [p for p in big.blocks[1:].parameters()]
    opt = torch.optim.SGD(new, lr=1e-2)
    for _ in range(2):  # the zeroed output layers learn first, then the layers before them
        opt.zero_grad()
        (big(wav) - 0.5 * wav).abs().mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new if p.requires_grad and p.dim() > 1)
    with pytest.raises(ValueError, match="cannot grow"):
        big.grown(1)


@pytest.mark.parametrize("dim", [16, 64])
def test_cpu_tiles_hold_a_fixed_number_of_values_and_do_not_change_the_output(dim, monkeypatch):
    from apollo.model import band_sequence

    x = torch.zeros(3, 40, 7, dim)
    assert band_sequence.tile_rows(x) == band_sequence.TILE_ELEMENTS // dim
    assert band_sequence.TILE_ELEMENTS // 256 == 1024  # the full-size model keeps its 1024-row tiles
    torch.manual_seed(0)
    model = apollo.Apollo(ApolloConfig(feature_dim=dim, num_blocks=2, num_heads=2)).eval()
    wav = torch.randn(2, 1, 44100 // 2) * 0.1
    with torch.no_grad():
        monkeypatch.setattr(band_sequence, "TILE_ELEMENTS", 10**9)  # one piece
        whole = model(wav)
        monkeypatch.setattr(band_sequence, "TILE_ELEMENTS", dim * 333)  # 333 rows: many tiles, the last one short
        tiled = model(wav)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_channels_are_independent():
    model = build_test_model()
    torch.manual_seed(1)
    wav = torch.randn(1, 3, 8000)
    with torch.inference_mode():
        together = model(wav)
        alone = model(wav[:, 1:2])
    assert torch.allclose(together[:, 1:2], alone, atol=1e-5)


@pytest.mark.parametrize("length", [1, 100, 440, 881, 882, 2000])
def test_short_inputs_are_finite(length):
    model = build_test_model()
    with torch.inference_mode():
        out = model(torch.randn(1, 2, length))
    assert out.shape == (1, 2, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("short_of_a_hop", [1, 2, 5, 20, 100])
@pytest.mark.parametrize("causal", [False, True])
def test_an_input_ending_short_of_a_whole_hop_ends_at_its_level(short_of_a_hop, causal):
    # The iSTFT divides by the windows' overlap, which under the last hop of such an input is one
    # Hann tail (~1e-4 at the last sample): unpadded, this model's last samples came out 60-2800x
    # louder than the rest, which --clip rescale then took out of the whole file.
    causal_model = apollo.Apollo(dataclasses.replace(PRESETS["tiny"], causal=True)).eval()
    model = causal_model if causal else build_test_model()
    hop = model.config.hop
    length = 100 * hop - short_of_a_hop
    assert model.padded_length(length) == 100 * hop and model.padded_length(100 * hop) == 100 * hop
    wav = 0.1 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(short_of_a_hop))
    with torch.inference_mode():
        out = model(wav)
    assert out.shape == wav.shape and torch.isfinite(out).all()
    assert out[..., -hop:].abs().max() < 2 * out[..., :-hop].abs().max()


def test_silence_gives_finite_output():
    model = build_test_model()
    with torch.inference_mode():
        out = model(torch.zeros(1, 2, 44100))
    assert torch.isfinite(out).all()


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="batch, channels, samples"):
        build_test_model()(torch.zeros(100))


def test_test_model_is_deterministic():
    a, b = build_test_model(), build_test_model()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        ApolloConfig(band_layout="mel")
    with pytest.raises(ValueError):
        ApolloConfig(feature_dim=100, num_heads=8)
    with pytest.raises(ValueError):
        ApolloConfig.from_dict({"sample_rate": 44100, "colour": "red"})


def _lowpassed_noise(samples: int, cutoff_bin: int, window: int, seed: int = 0) -> torch.Tensor:
    """Stereo noise with only 16-bit noise above cutoff_bin of a `window`-point STFT (an MP3 lowpass)."""
    torch.manual_seed(seed)
    spec = torch.fft.rfft(torch.randn(1, 2, samples))
    spec[..., int(cutoff_bin * samples / window):] = 0
    return torch.fft.irfft(spec, samples) + 2**-15 * torch.randn(1, 2, samples)


def test_band_limit_finds_the_codecs_cliff():
    from apollo.model.band_limit import band_limit, emptied_band_mask

    level_db = torch.full((6, 442), -100.0)
    level_db[0, :161] = -20.0  # a 8 kHz lowpass
    level_db[1, :161] = -20.0
    level_db[1, 300:303] = -60.0  # spurs narrower than the smoothing are not music
    level_db[2, :81] = -20.0  # 24 kbps: a 4 kHz lowpass in an MPEG-2 stream whose noise floor
    level_db[2, 81:221] = -90.0  # stops at its 11 kHz Nyquist, a second, shallower step
    level_db[2, 221:] = -130.0
    level_db[3, :11] = -10.0  # a bass: its own cliff at 500 Hz, but harmonics above it,
    level_db[3, 11:101] = -40.0  # so the codec's cliff is the one at 5 kHz
    level_db[4] = torch.linspace(-10.0, -60.0, 442)  # full band, no cliff: nothing emptied
    level_db[5] = -200.0  # silence: nothing emptied
    assert band_limit(level_db).tolist() == [160, 160, 80, 100, 441, 441]

    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, keep_input_band=True)
    wav = _lowpassed_noise(config.sample_rate // 2, 160, config.window)
    wav[:, 1] *= 0.1  # a quieter channel keeps the item's limit
    model = apollo.Apollo(config)
    spec = model.stft(wav.reshape(2, -1))
    mask = emptied_band_mask(spec, channels=2)
    assert mask.shape == (2, 1, 442, 1)
    limit = int(mask[0, 0, :, 0].argmax())
    assert 158 <= limit <= 176 and torch.equal(mask[0], mask[1])  # the window leaks ~10 bins


def test_band_limit_hears_transients_above_a_quieter_cliff():
    from apollo.model.band_limit import emptied_band_mask

    # chords to bin 140; a hi-hat to the codec's lowpass at bin 330 in every fifth frame only
    spec = torch.zeros(2, 100, 442, 2)
    spec[..., :141, 0] = 1.0
    spec[:, ::5, 141:331, 0] = 1e-2
    spec[:, 50, :, 0] += 1e-2  # a click at a chunk's cut edge fills one frame up to Nyquist
    limit = int(emptied_band_mask(spec, channels=1)[0, 0, :, 0].argmax()) - 1
    assert 325 <= limit <= 335  # the codec's cliff, not the chords' (a mean in dB finds 140)


@pytest.mark.parametrize("kbps, low, high", [(24, 3000, 4500), (64, 8000, 11500), (128, 15500, 17500)])
def test_band_limit_of_real_mp3_is_the_coded_bandwidth(kbps, low, high):
    from apollo import degrade
    from apollo.model.band_limit import emptied_band_mask

    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal((2, 44100 * 2))).astype(np.float32)
    coded = torch.from_numpy(degrade.mp3(noise, 44100, kbps))
    model = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, keep_input_band=True))
    mask = emptied_band_mask(model.stft(coded.float()), channels=2)
    start_hz = int(mask[0, 0, :, 0].argmax()) * 44100 / model.config.window
    # the top of the steepest fall of the log spectrum: at or a little below the -20 dB bandwidth
    # of benchmarks/mp3_bandwidth.py (3.8, 10.8, 16.6 kHz); never the 11 kHz of MPEG-2 streams
    assert low <= start_hz <= high


@pytest.mark.parametrize("samples", [441, 882, 1323, 44100, 44100 + 7, 44100 + 440, 321930])
def test_file_band_levels_from_blocks_equal_one_stft_over_the_file(samples):
    # the streamed histogram sees the frames of the generator's own STFT, end padding included
    from apollo.model.band_limit import (
        SOURCE_QUANTILE,
        FileBandLevels,
        cells_to_db,
        frame_levels,
        input_band_limit,
        input_levels,
        quantile_rank,
    )
    from apollo.model.framing import pad_end, reflects_end

    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, keep_input_band=True)
    model = apollo.Apollo(config)
    wav = _lowpassed_noise(samples, 200, config.window)[0] if samples >= config.window else torch.randn(2, samples)
    x = pad_end(wav, model.padded_length(samples) - samples, reflects_end(samples, config.window, causal=False))
    spec = model.stft(x)
    cells = frame_levels(spec)
    expected = cells_to_db(cells.kthvalue(quantile_rank(cells.shape[1]) + 1, dim=1).values)
    assert torch.equal(input_levels(spec), expected)  # the levels input_band_limit reads
    rng = np.random.default_rng(samples)
    levels = FileBandLevels(config.window, config.hop, channels=2)
    pos = 0
    while pos < samples:  # blocks of random sizes, down to one sample
        n = int(rng.integers(1, 3 * config.window))
        levels.add(wav[:, pos:pos + n])
        pos += n
    got = levels.levels()
    assert levels.frames == spec.shape[1]
    assert (got - expected).abs().max() <= 0.1 + 1e-4  # at most one 0.1 dB cell, from FFT rounding
    assert (got == expected).float().mean() > 0.99
    assert levels.limit().tolist() == input_band_limit(spec, 2).tolist()
    # read again, at the loudest frames' quantile too: the file is counted once
    assert levels.limit(SOURCE_QUANTILE).tolist() == input_band_limit(spec, 2, SOURCE_QUANTILE).tolist()
    assert torch.equal(levels.levels(), got) and levels.frames == spec.shape[1]
    with pytest.raises(RuntimeError, match="after levels"):
        levels.add(wav[:, :10])


def test_keep_input_band_writes_only_above_the_band_limit():
    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, keep_input_band=True)
    torch.manual_seed(0)
    model = apollo.Apollo(config)
    for p in model.band_reconstruction.parameters():  # the residual starts at zero: move it
        torch.nn.init.normal_(p, std=0.05)
    wav = 0.1 * _lowpassed_noise(config.sample_rate // 2, 160, config.window)
    with torch.inference_mode():
        out = model(wav)
        before, after = (model.stft(x.reshape(2, -1)) for x in (wav, out))
    change = (after - before).abs().sum(-1).mean((0, 1))  # per bin
    level = before.abs().sum(-1).mean((0, 1))
    # the codec's band is the input's, up to the re-analysis of the written band's edge
    assert (change[:150] / level[:150]).max() < 1e-4
    assert change[200:].mean() > 3 * level[200:].mean()  # the emptied band is written
    with pytest.raises(ValueError, match="residual"):
        ApolloConfig(keep_input_band=True)


TOLD = {"bitrate_classes": (24, 128)}


def _model_and_changed(base: dict | None = None, **change):
    """A tiny residual model (with the `base` config fields) whose reconstruction writes something,
    and the same weights under a config with `change` as well: (model, changed model)."""
    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, **(base or {}))
    torch.manual_seed(0)
    model = apollo.Apollo(config)
    for p in model.band_reconstruction.parameters():
        torch.nn.init.normal_(p, std=0.05)
    changed = apollo.Apollo(dataclasses.replace(config, **change))
    changed.load_state_dict(model.state_dict())
    return model, changed


def _restored_plain_and_changed(**change):
    """_model_and_changed's pair, untold: (model, changed model, input spectrum, both restored
    spectra) of lowpassed noise."""
    model, changed = _model_and_changed(**change)
    config = model.config
    wav = 0.1 * _lowpassed_noise(config.sample_rate // 2, 160, config.window)
    spec = model.stft(wav.reshape(2, -1))
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, channels=2)
        other, _ = changed.restore_spectrum(spec, channels=2)
    return model, changed, spec, plain, other


def test_fill_gain_scales_only_what_is_written_above_the_band_limit():
    from apollo.model.band_limit import emptied_band_mask

    model, louder, spec, plain, gained = _restored_plain_and_changed(fill_gain_db=6.0)
    limit = int(emptied_band_mask(spec, channels=2)[0, 0, :, 0].argmax())  # the first written bin
    assert 150 <= limit <= 180
    assert torch.equal(gained[:, :, :limit], plain[:, :, :limit])  # the kept band as without the gain
    written, scaled = plain[:, :, limit:] - spec[:, :, limit:], gained[:, :, limit:] - spec[:, :, limit:]
    assert written.abs().max() > 1e-3  # the test has teeth: something is written there
    assert torch.allclose(scaled, written * 10 ** (6 / 20), atol=1e-6)
    assert louder.file_band_levels(2) is not None and model.file_band_levels(2) is None
    with pytest.raises(ValueError, match="residual"):
        ApolloConfig(fill_gain_db=3.0)
    with pytest.raises(ValueError, match="causal"):
        ApolloConfig(residual=True, causal=True, fill_gain_db=3.0)


def test_fill_gain_told_scales_each_item_by_its_own_bitrate():
    from apollo.model.band_limit import emptied_band_mask

    told = {"bitrate_classes": (24, 128)}
    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, **told)
    torch.manual_seed(0)
    model = apollo.Apollo(config)
    for p in [*model.band_reconstruction.parameters(), model.bitrate_embedding]:  # rows differ: a wrong one shows
        torch.nn.init.normal_(p, std=0.05)
    per_bitrate = apollo.Apollo(dataclasses.replace(config, fill_gain_db_told=(6.0, 0.0)))
    everywhere = apollo.Apollo(dataclasses.replace(config, fill_gain_db=6.0))
    for other in (per_bitrate, everywhere):
        other.load_state_dict(model.state_dict())
    spec = model.stft(0.1 * _lowpassed_noise(config.sample_rate // 2, 160, config.window).reshape(2, -1))
    limit = int(emptied_band_mask(spec, channels=1)[0, 0, :, 0].argmax())
    with torch.inference_mode():
        # one stereo item per row of the batch: told 24 kbps, told 128 kbps, unknown (0)
        batch = spec[:, None].expand(2, 3, *spec.shape[1:]).transpose(0, 1).reshape(6, *spec.shape[1:])
        bitrate = torch.tensor([24, 128, 0])
        plain, _ = model.restore_spectrum(batch, channels=2, bitrate=bitrate)
        gained, _ = per_bitrate.restore_spectrum(batch, channels=2, bitrate=bitrate)
        global_gain, _ = everywhere.restore_spectrum(batch, channels=2, bitrate=bitrate)
    written = plain[:, :, limit:] - batch[:, :, limit:]
    assert written[:2].abs().max() > 1e-3  # the test has teeth: something is written there
    scaled = gained[:, :, limit:] - batch[:, :, limit:]
    assert torch.allclose(scaled[:2], written[:2] * 10 ** (6 / 20), atol=1e-6)  # 24 kbps: +6 dB
    assert torch.equal(gained[2:], plain[2:])  # 128 kbps (0 dB) and unknown (fill_gain_db 0): as without
    assert torch.equal(gained[:2], global_gain[:2])  # the same gain told or for all: the same bits
    with pytest.raises(ValueError, match="one gain per bitrate_classes"):
        ApolloConfig(residual=True, **told, fill_gain_db_told=(3.0,))
    with pytest.raises(ValueError, match="causal"):
        ApolloConfig(residual=True, causal=True, **told, fill_gain_db_told=(3.0, 0.0))
    assert ApolloConfig.from_dict(per_bitrate.config.to_dict()) == per_bitrate.config  # survives the file's JSON


def _dark_and_bright_items(model) -> torch.Tensor:
    """The spectrum of four stereo items: noise that ends at bin 160 (8 kHz) in every frame, the same
    with short full-band bursts in ~6% of its frames (as an encoder's holes leave bright music), and
    the first twice more. The band limit of most frames is 8 kHz in all; that of the loudest frames
    (SOURCE_QUANTILE) is the top bin in the second."""
    config = model.config
    rate = config.sample_rate
    dark = 0.1 * _lowpassed_noise(2 * rate, 160, config.window)[0]
    bursts = dark.clone()
    for start in range(rate // 4, 2 * rate, rate // 2):
        bursts[:, start:start + 441] += 0.05 * torch.randn(2, 441)
    return model.stft(torch.stack([dark, bursts, dark, dark]).reshape(8, -1))


def test_dark_source_rule_writes_nothing_above_a_limit_far_under_the_codecs_edge():
    from apollo.model.band_limit import SOURCE_QUANTILE, input_band_limit

    # of _dark_and_bright_items only the first (and third and fourth) are dark at the source, for
    # the rule at 9 kHz for 24 kbps, 7 kHz for 128 kbps (where 8 kHz is not dark, and a 6-dB gain applies)
    model, ruled = _model_and_changed(TOLD, dark_source_hz_told=(9000.0, 7000.0), fill_gain_db_told=(0, 6))
    told = TOLD
    spec = _dark_and_bright_items(model)
    assert input_band_limit(spec, 2).tolist() == [160] * 4
    assert input_band_limit(spec, 2, SOURCE_QUANTILE).tolist() == [160, 441, 160, 160]
    limit = 161  # the first bin above the limit
    bitrate = torch.tensor([24, 24, 128, 0])
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, channels=2, bitrate=bitrate)
        got, _ = ruled.restore_spectrum(spec, channels=2, bitrate=bitrate)
    written = plain[:, :, limit:] - spec[:, :, limit:]
    assert written[:4].abs().max() > 1e-3  # the test has teeth: something is written there
    assert torch.equal(got[:2, :, limit:], spec[:2, :, limit:])  # dark at 24 kbps: the input above the limit
    assert torch.equal(got[:2, :, :limit], plain[:2, :, :limit])  # and the model's output under it
    assert torch.equal(got[2:4], plain[2:4])  # the bursts show the source is bright: restored as without
    scaled = got[4:6, :, limit:] - spec[4:6, :, limit:]
    assert torch.allclose(scaled, written[4:6] * 10 ** (6 / 20), atol=1e-6)  # 128 kbps: not dark, its gain
    assert torch.equal(got[6:], plain[6:])  # unknown bitrate: no rule
    with torch.inference_mode():  # nor for a batch of which none is told
        assert torch.equal(ruled.restore_spectrum(spec, channels=2)[0], model.restore_spectrum(spec, channels=2)[0])
    with pytest.raises(ValueError, match="one frequency per bitrate_classes"):
        ApolloConfig(residual=True, **told, dark_source_hz_told=(9000.0,))
    with pytest.raises(ValueError, match="residual"):
        ApolloConfig(**told, dark_source_hz_told=(9000.0, 0.0))


def test_told_fill_gain_goes_only_to_inputs_whose_loudest_frames_reach_its_rows_frequency():
    from apollo.model.band_limit import SOURCE_QUANTILE, input_band_limit

    # the dark noise ends at 8 kHz in every frame; the bursts reach the top bin in its loudest frames
    model, gated = _model_and_changed(TOLD, fill_gain_db_told=(6.0, 6.0), fill_gain_from_hz_told=(9000.0, 0.0))
    spec = _dark_and_bright_items(model)
    assert input_band_limit(spec, 2, SOURCE_QUANTILE).tolist() == [160, 441, 160, 160]
    bitrate = torch.tensor([24, 24, 128, 0])
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, channels=2, bitrate=bitrate)
        got, _ = gated.restore_spectrum(spec, channels=2, bitrate=bitrate)
        # the whole file's limit, given (as Restorer.whole_input gives it to every chunk), wins over the item's
        given, _ = gated.restore_spectrum(spec, channels=2, bitrate=bitrate, source_limit=torch.tensor([441] * 4))
    limit = 161  # the first bin above the band limit
    written = plain[:, :, limit:] - spec[:, :, limit:]
    assert written.abs().max() > 1e-3  # the test has teeth: something is written there
    assert torch.equal(got[:2], plain[:2])  # 24 kbps, ends at 8 kHz, under its row's 9 kHz: no gain
    for item in (1, 2):  # 24 kbps reaching the top bin, and 128 kbps (0 Hz: every input), get theirs
        rows = slice(2 * item, 2 * item + 2)
        assert torch.allclose(got[rows, :, limit:] - spec[rows, :, limit:], written[rows] * 10 ** (6 / 20), atol=1e-6)
        assert torch.equal(got[rows, :, :limit], plain[rows, :, :limit])
    assert torch.equal(got[6:], plain[6:])  # unknown bitrate: fill_gain_db, 0
    assert torch.allclose(given[:2, :, limit:] - spec[:2, :, limit:], written[:2] * 10 ** (6 / 20), atol=1e-6)
    assert gated.config.reads_source_limit and not model.config.reads_source_limit
    assert ApolloConfig.from_dict(gated.config.to_dict()) == gated.config  # survives the file's JSON
    with pytest.raises(ValueError, match="one frequency per fill_gain_db_told"):
        ApolloConfig(residual=True, **TOLD, fill_gain_db_told=(3.0, 0.0), fill_gain_from_hz_told=(9000.0,))
    with pytest.raises(ValueError, match=">= 0 Hz"):
        ApolloConfig(residual=True, **TOLD, fill_gain_db_told=(3.0, 0.0), fill_gain_from_hz_told=(-1.0, 0.0))
    with pytest.raises(ValueError, match="needs fill_gain_db_told"):
        ApolloConfig(residual=True, **TOLD, fill_gain_from_hz_told=(9000.0, 0.0))


def test_unknown_fill_gain_goes_only_to_inputs_whose_loudest_frames_end_in_its_window():
    # items end at 8 kHz, the top bin, 8 kHz, 8 kHz in their loudest frames; told rows keep their own gains
    told = {**TOLD, "fill_gain_db_told": (6.0, 6.0)}
    model, gated = _model_and_changed(told, fill_gain_db=3.0, fill_gain_window_hz=(7000.0, 9000.0))
    _, above = _model_and_changed(told, fill_gain_db=3.0, fill_gain_window_hz=(9000.0, 12000.0))
    spec = _dark_and_bright_items(model)
    bitrate = torch.tensor([0, 0, 24, 0])
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, channels=2, bitrate=bitrate)
        got, _ = gated.restore_spectrum(spec, channels=2, bitrate=bitrate)
        missed, _ = above.restore_spectrum(spec, channels=2, bitrate=bitrate)
        # the whole file's limit, given (Restorer.whole_input), wins over the item's own
        given, _ = gated.restore_spectrum(spec, channels=2, bitrate=bitrate, source_limit=torch.tensor([441] * 4))
        untold, _ = gated.restore_spectrum(spec, channels=2)  # nobody told: every item is unknown
        plain_untold, _ = model.restore_spectrum(spec, channels=2)
    limit = 161  # the first bin above the band limit
    written = plain[:, :, limit:] - spec[:, :, limit:]
    assert written.abs().max() > 1e-3  # the test has teeth: something is written there
    for item in (0, 3):  # unknown, ending at 8 kHz, inside (7, 9) kHz: 3 dB louder above the limit
        rows = slice(2 * item, 2 * item + 2)
        assert torch.allclose(got[rows, :, limit:] - spec[rows, :, limit:], written[rows] * 10 ** (3 / 20), atol=1e-6)
        assert torch.equal(got[rows, :, :limit], plain[rows, :, :limit])
    assert torch.equal(got[2:6], plain[2:6])  # unknown reaching the top bin: no gain; told 24: its row's, unchanged
    assert torch.equal(missed, plain)  # 8 kHz lies under a (9, 12) kHz window: no item gets it
    assert torch.equal(given, plain)  # the file reaches the top bin
    untold_written = plain_untold[4:6, :, limit:] - spec[4:6, :, limit:]  # the third item, now unknown: gained
    assert torch.allclose(untold[4:6, :, limit:] - spec[4:6, :, limit:], untold_written * 10 ** (3 / 20), atol=1e-6)
    assert gated.config.reads_source_limit and ApolloConfig.from_dict(gated.config.to_dict()) == gated.config
    with pytest.raises(ValueError, match="from < under"):
        ApolloConfig(residual=True, fill_gain_db=3.0, fill_gain_window_hz=(9000.0, 7000.0))
    with pytest.raises(ValueError, match="from < under"):
        ApolloConfig(residual=True, fill_gain_db=3.0, fill_gain_window_hz=(7000.0,))
    with pytest.raises(ValueError, match="needs fill_gain_db"):
        ApolloConfig(residual=True, fill_gain_window_hz=(7000.0, 9000.0))


def test_dark_source_rule_keeps_the_input_above_the_loudest_frames_limit_when_the_90_percent_one_finds_no_cliff():
    # diabolicux at 96 kbps (docs/default-model.md, "Where the rule finds nothing to keep"): the loudest
    # frames end at 8.35 kHz, but the 90% levels have no cliff, so the limit the rule kept the input
    # above was the top bin, and the input was restored as if it were not dark
    model, ruled = _model_and_changed(TOLD, dark_source_hz_told=(9000.0, 0.0))
    config = model.config
    spec = model.stft(0.1 * _lowpassed_noise(config.sample_rate, 160, config.window)[0])
    spec = torch.cat([spec, spec])  # two stereo items: told 24 kbps, and unknown
    top = torch.tensor([config.num_bins - 1] * 2)  # the 90% limit: no cliff
    source = torch.tensor([160, 160])  # the loudest frames' limit: 8 kHz, under the rule's 9 kHz
    bitrate = torch.tensor([24, 0])
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, 2, band_limit=top, bitrate=bitrate)
        got, _ = ruled.restore_spectrum(spec, 2, band_limit=top, bitrate=bitrate, source_limit=source)
    assert (plain[:2, :, 161:] - spec[:2, :, 161:]).abs().max() > 1e-3  # something is written there
    assert torch.equal(got[:2, :, 161:], spec[:2, :, 161:])  # dark: the input above the loudest frames' limit
    assert torch.equal(got[:2, :, :161], plain[:2, :, :161])  # and the model's output under it
    assert torch.equal(got[2:], plain[2:])  # unknown bitrate: no rule


def test_an_items_own_dark_source_frequency_replaces_its_rows_where_the_row_has_a_rule():
    # Restorer.file_bitrate reads the encoder's lowpass from an MP3's LAME tag: DARK_EDGE_SHARE of it is
    # that file's frequency (dark_source_hz), in place of its bitrate row's, but a row with no rule
    # (0 Hz, here 24 kbps) stays without one, and NaN leaves the row's
    model, ruled = _model_and_changed(TOLD, dark_source_hz_told=(0.0, 7000.0))
    config = model.config
    spec = model.stft(0.1 * _lowpassed_noise(config.sample_rate, 160, config.window)[0])  # ends at 8 kHz
    spec = torch.cat([spec] * 4)  # four stereo items
    source = torch.tensor([160] * 4)
    bitrate = torch.tensor([128, 128, 128, 24])
    own = torch.tensor([9000.0, float("nan"), 6000.0, 9000.0])
    assert ruled.dark_rows(ruled.bitrate_index(bitrate, 4), source).tolist() == [False] * 4
    assert ruled.dark_rows(ruled.bitrate_index(bitrate, 4), source, own).tolist() == [True, False, False, False]
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, 2, bitrate=bitrate)
        got, _ = ruled.restore_spectrum(spec, 2, bitrate=bitrate, source_limit=source, dark_source_hz=own)
        by_rows, _ = ruled.restore_spectrum(spec, 2, bitrate=bitrate, source_limit=source)
    assert (plain[:2, :, 161:] - spec[:2, :, 161:]).abs().max() > 1e-3  # something is written there
    assert torch.equal(got[:2, :, 161:], spec[:2, :, 161:])  # 8 kHz under its own 9 kHz: dark
    assert torch.equal(got[2:], plain[2:]) and torch.equal(by_rows, plain)  # the others: not dark


def test_an_input_sampled_under_the_models_rate_is_dark_only_under_its_own_edge():
    from apollo.model.band_limit import DARK_EDGE_SHARE, at_own_rate

    window, rate = 882, 44100  # 50 Hz bins
    limits = torch.tensor([100, 165, 166, 199, 230])  # 5, 8.25, 8.3, 9.95, 11.5 kHz
    # 22.05 kHz: nothing above 11.025 kHz; 0.75 of that is 8269 Hz = bin 165.4
    assert DARK_EDGE_SHARE * 11025 / 50 == pytest.approx(165.375)
    assert at_own_rate(limits, 22050, rate, window).tolist() == [100, 165, 441, 441, 441]
    # at the model's rate or above (then resampled down) the rule's own edges apply, unchanged
    for input_rate in (44100, 48000, 96000):
        assert torch.equal(at_own_rate(limits, input_rate, rate, window), limits)
    assert at_own_rate(limits, 8000, rate, window).tolist() == [441] * 5  # 3 kHz and up reach its top


def test_hole_gain_scales_what_is_written_into_holes_under_the_band_limit():
    from apollo.model.band_limit import emptied_band_mask

    model, holed = _model_and_changed(TOLD, hole_gain_db_told=(6.0, 0.0))
    config, told = model.config, TOLD
    wav = 0.1 * _lowpassed_noise(config.sample_rate, 160, config.window)[0]
    spec = model.stft(wav)
    spec[:, ::3, 100:140] = 0  # the codec's holes: every third frame empty over 5-7 kHz, under the limit
    spec = torch.cat([spec, spec, spec])  # three stereo items: told 24 kbps, told 128 kbps, unknown
    limit = int(emptied_band_mask(spec, channels=2)[0, 0, :, 0].argmax())  # the first bin above the limit
    assert 150 <= limit <= 180
    bitrate = torch.tensor([24, 128, 0])
    with torch.inference_mode():
        plain, _ = model.restore_spectrum(spec, channels=2, bitrate=bitrate)
        got, _ = holed.restore_spectrum(spec, channels=2, bitrate=bitrate)
    written, scaled = plain - spec, got - spec
    hole = (written.square().sum(-1) > spec.square().sum(-1))[:2]  # told 24 kbps
    hole[..., limit:] = False
    assert hole[:, ::3, 100:140].all()  # the emptied cells are holes ...
    assert hole.float().mean() < 0.5  # ... and most cells the codec kept are not
    assert torch.allclose(scaled[:2][hole], written[:2][hole] * 10 ** (6 / 20), atol=1e-6)  # +6 dB there
    assert torch.equal(got[:2][~hole], plain[:2][~hole])  # the rest, and above the limit, as without
    assert torch.equal(got[2:], plain[2:])  # 128 kbps (0 dB) and unknown: as without
    assert holed.file_band_levels(2) is not None  # it needs the whole file's band limit
    with pytest.raises(ValueError, match="one gain per bitrate_classes"):
        ApolloConfig(residual=True, **told, hole_gain_db_told=(3.0,))
    with pytest.raises(ValueError, match="residual"):
        ApolloConfig(**told, hole_gain_db_told=(3.0, 0.0))
    assert ApolloConfig.from_dict(holed.config.to_dict()) == holed.config  # survives the file's JSON


def test_drop_small_corrections_fades_what_is_far_under_the_input_cell():
    from apollo.model.band_reconstruction import drop_small_corrections

    spec = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0]).reshape(1, 1, 5, 1) * torch.tensor([0.6, 0.8])  # |x| 1 or 0
    ratio = torch.tensor([0.1, 1e-3, 10.0, 1e-3, 0.0]).reshape(1, 1, 5, 1)  # |q| / |x|: at, under, over the floor
    quadrature = ratio * torch.tensor([-0.8, 0.6])  # out of phase with the cell (in the hole: any direction)
    level = torch.tensor([0.0, 0.0, 0.0, 0.0, -0.05]).reshape(1, 1, 5, 1) * spec  # a 5% level change, in phase
    gated = drop_small_corrections(quadrature + level, spec, floor_db=-20.0)
    gain = (gated.norm(dim=-1) / (quadrature + level).norm(dim=-1)).flatten()
    assert torch.allclose(gain, torch.tensor([0.5, 1e-6 / (1e-6 + 1e-2), 100 / 100.01, 1.0, 1.0]), rtol=1e-4)
    assert torch.allclose(gated[0, 0, :4], (quadrature * gain.reshape(1, 1, 5, 1))[0, 0, :4])  # only scaled
    assert torch.allclose(gated[0, 0, 4], level[0, 0, 4])  # the level change stays whole, far under the floor


def test_correction_floor_keeps_cells_the_codec_kept_and_fills_the_rest():
    _, _, spec, plain, kept = _restored_plain_and_changed(correction_floor_db=-20.0)
    d, x = (plain - spec).norm(dim=-1), spec.norm(dim=-1)
    small, large = d < 0.01 * x, d > 10 * x  # corrections 40 dB under the cell; over it (the emptied band)
    assert small.sum() > 100 and large.sum() > 100  # the test has teeth: both kinds occur
    moved = kept - spec
    along = (moved * spec).sum(-1) / x  # the in-phase part, kept whole
    assert torch.allclose(along[small], ((plain - spec) * spec).sum(-1)[small] / x[small], rtol=1e-4, atol=1e-6)
    across = (moved[..., 0] * spec[..., 1] - moved[..., 1] * spec[..., 0]).abs()[small] / x[small]
    assert (across <= 0.01 * d[small] + 1e-9).all()  # the rest dropped: 40 dB under -> gain < 1%
    assert torch.allclose(moved.norm(dim=-1)[large], d[large], rtol=1e-3)  # written (nearly) whole
    with pytest.raises(ValueError, match="residual"):
        ApolloConfig(correction_floor_db=-20.0)


def test_cap_to_band_edge_limits_the_written_band_per_frame():
    from apollo.model.band_limit import EDGE_BINS, cap_to_band_edge

    rows, frames, bins, limit = 3, 12, 60, 30
    spec = torch.zeros(rows, frames, bins, 2)
    spec[0, :, :limit + 1, 0] = 0.5  # a loud kept band up to its edge
    spec[1, :, :limit + 1 - EDGE_BINS, 0] = 0.5  # loud below, silent in the top EDGE_BINS bins
    spec[2, :, :limit + 1, 0] = 0.5
    spec[2, 8:, :limit + 1, 0] = 0.001  # a decay: the edge falls silent in the last frames
    written = torch.full((rows, frames, bins, 2), 0.3)
    mask = (torch.arange(bins) > limit).float()[None, None, :, None].expand(rows, 1, bins, 1)
    capped = cap_to_band_edge(written * mask, spec, mask)
    magnitude = capped.pow(2).sum(-1).sqrt()
    assert torch.allclose(magnitude[0, :, limit + 1:], torch.tensor(0.3 * 2**0.5))  # under the cap: kept
    assert magnitude[:, :, :limit + 1].abs().max() == 0  # nothing written below the limit
    assert magnitude[1].max() < 1e-6  # nothing at the edge: nothing above it
    assert torch.allclose(magnitude[2, :6, limit + 1:], torch.tensor(0.3 * 2**0.5))
    assert torch.allclose(magnitude[2, 10:, limit + 1:], torch.tensor(0.001))  # follows the edge down
    assert torch.allclose(capped[2, 10:, limit + 1:, 0], capped[2, 10:, limit + 1:, 1])  # phase kept
    with pytest.raises(ValueError, match="keep_input_band"):
        ApolloConfig(residual=True, cap_emptied_band=True)


def test_capped_model_keeps_the_written_band_under_a_quiet_edge():
    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, residual=True, keep_input_band=True)
    torch.manual_seed(0)
    model = apollo.Apollo(config)
    for p in model.band_reconstruction.parameters():
        torch.nn.init.normal_(p, std=0.3)
    capped = apollo.Apollo(dataclasses.replace(config, cap_emptied_band=True))
    capped.load_state_dict(model.state_dict())
    samples = config.sample_rate // 2
    wav = 0.1 * _lowpassed_noise(samples, 160, config.window)
    spectrum = torch.fft.rfft(wav)
    spectrum[..., int(100 * samples / config.window):] *= 1e-2  # a source whose top falls 40 dB
    wav = torch.fft.irfft(spectrum, samples)
    with torch.inference_mode():
        spec = model.stft(wav.reshape(2, -1))
        free, held = (model.stft(m(wav).reshape(2, -1)) - spec for m in (model, capped))
    edge = spec[..., 140:160, :].pow(2).sum(-1).mean().sqrt()
    assert free[..., 200:, :].pow(2).sum(-1).sqrt().mean() > 5 * edge  # uncapped: far above the edge
    assert held[..., 200:, :].pow(2).sum(-1).sqrt().mean() < 2 * edge  # capped (up to window leakage)
    assert torch.equal(capped(wav[:, :, :2000] * 0), wav[:, :, :2000] * 0)  # silence stays silent


def _linear_ops(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, set[str]]:
    """layer's output through apollo.layers.linear, and the names of the operators it ran."""
    from apollo.model.layers import linear

    with torch.profiler.profile() as prof:
        y = linear(layer, x)
    return y, {event.name for event in prof.events()}


@pytest.mark.skipif(not ONEDNN_LINEAR, reason="needs oneDNN on an AVX-512 CPU")
def test_linear_goes_to_onednn_for_float32_inference():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(64, 32), torch.randn(5, 7, 64)
    with torch.inference_mode():
        y, ops = _linear_ops(layer, x)
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert "mkldnn::_linear_pointwise" in ops and y.shape == (5, 7, 32)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_linear_keeps_the_plain_layer_for_training_autocast_and_int8():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(64, 32), torch.randn(5, 64)
    y, ops = _linear_ops(layer, x)  # gradients on: oneDNN's op has no autograd formula
    assert "mkldnn::_linear_pointwise" not in ops
    y.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, ops = _linear_ops(layer, x)
    assert y.dtype == torch.bfloat16 and "mkldnn::_linear_pointwise" not in ops
    from apollo.inference import quantize_int8

    q = quantize_int8(torch.nn.Sequential(layer))[0]
    with torch.inference_mode():
        y, _ = _linear_ops(q, x)
    assert 20 < 10 * torch.log10(layer(x).pow(2).sum() / (y - layer(x)).pow(2).sum()).item() < 80
