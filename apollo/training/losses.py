"""GAN losses of the paper (Eq. 3-7) as released: LSGAN, feature matching, multi-resolution magnitude."""

from __future__ import annotations

import torch

WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)  # Sec. III-B: the multi-resolution STFT windows
ENVELOPE_BANDS = 22  # band_envelope_loss splits each spectrum into this many equal bands (~1 kHz at 44.1 kHz)
SHORTFALL_WINDOWS = (512, 1024, 2048)  # shortfall_loss: the diagnostics count holes at 2048


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: sum over discriminators of E[(D(real) - 1)^2] + E[D(fake)^2] (Eq. 3)."""
    return sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(real, fake))


def generator_adversarial_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN for the generator: sum over discriminators of E[(D(fake) - 1)^2]."""
    return sum(((f - 1) ** 2).mean() for f in fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over discriminators and layers of E|H_fake - sg(H_real)| / mean|sg(H_real)| (Eq. 5)."""
    terms = []
    for real_maps, fake_maps in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            r = r.detach()
            terms.append((f - r).abs().mean() / r.abs().mean().clamp_min(1e-8))
    return torch.stack(terms).mean()


def magnitude(wav: torch.Tensor, window: int) -> torch.Tensor:
    """|STFT| of (batch, channels, time) audio at one window, hop window/2: (batch*channels, bins, frames)."""
    b, c, length = wav.shape
    hann = torch.hann_window(window, device=wav.device)
    spec = torch.stft(wav.reshape(b * c, length).float(), window, window // 2, window=hann, return_complex=True)
    return spec.abs()


class Magnitudes:
    """One waveform's |STFT| at each window, computed on first use and then shared, so the losses
    that look at the same windows (Eq. 4, log_magnitude_loss, band_envelope_loss) pay for each once.
    Every loss here takes either a waveform or this."""

    def __init__(self, wav: torch.Tensor) -> None:
        self.wav = wav
        self._by_window: dict[int, torch.Tensor] = {}

    def __call__(self, window: int) -> torch.Tensor:
        if window not in self._by_window:
            self._by_window[window] = magnitude(self.wav, window)
        return self._by_window[window]


Audio = torch.Tensor | Magnitudes


def _magnitudes(audio: Audio) -> Magnitudes:
    return audio if isinstance(audio, Magnitudes) else Magnitudes(audio)


def reconstruction_loss(estimate: Audio, reference: Audio, windows: tuple[int, ...] = WINDOWS) -> torch.Tensor:
    """Mean over STFT windows of mean| |S_est| - |S_ref| | / mean |S_ref| (Eq. 4)."""
    estimate, reference = _magnitudes(estimate), _magnitudes(reference)
    terms = []
    for w in windows:
        est, ref = estimate(w), reference(w)
        terms.append((est - ref).abs().mean() / ref.mean().clamp_min(1e-8))
    return torch.stack(terms).mean()


def log_magnitude_loss(estimate: Audio, reference: Audio, windows: tuple[int, ...] = WINDOWS,
                       floor: float = 1e-5) -> torch.Tensor:
    """Mean over STFT windows of mean |log10(|S_est| + floor) - log10(|S_ref| + floor)|.

    Not in the paper. Eq. 4 weighs an error by its level, so a quiet high band barely counts;
    here a band 10x too loud costs one decade at any level, as in LSD. The floor sits below
    16-bit noise at every window.
    """
    estimate, reference = _magnitudes(estimate), _magnitudes(reference)
    terms = []
    for w in windows:
        est, ref = estimate(w), reference(w)
        terms.append((torch.log10(est + floor) - torch.log10(ref + floor)).abs().mean())
    return torch.stack(terms).mean()


def band_envelope_loss(estimate: Audio, reference: Audio, windows: tuple[int, ...] = (256, 512, 1024),
                       bands: int = ENVELOPE_BANDS, floor: float = 1e-5,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over windows, bands and frames of |log10 RMS_est - log10 RMS_ref| of each band's magnitude.

    `weight` (batch,) scales each example's share of the mean (its channels alike); 0 leaves an
    example out, and the mean stays over the whole batch, so an example counts as much as without it.

    Not in the paper. Per-bin losses (Eq. 4, log_magnitude_loss) are dominated by the fine structure
    of a noise-like high band, which no generator can predict; summed over a ~1 kHz band that noise
    averages out, and what is left is the band's level frame by frame: whether the generated band
    follows the music's transients (diagnostics.transient_following) and sits at the right level.
    """
    estimate, reference = _magnitudes(estimate), _magnitudes(reference)
    terms = []
    for w in windows:
        est, ref = estimate(w) ** 2, reference(w) ** 2  # (batch, bins, frames)
        band_of_bin = torch.arange(est.shape[1], device=est.device) * bands // est.shape[1]
        average = torch.nn.functional.one_hot(band_of_bin, bands).float()  # (bins, bands)
        average = average / average.sum(0)
        est, ref = torch.einsum("kb,nkt->nbt", average, est), torch.einsum("kb,nkt->nbt", average, ref)
        error = 0.5 * (torch.log10(est + floor**2) - torch.log10(ref + floor**2)).abs()
        if weight is not None:
            error = error * _rows(weight.to(error), error)[:, None, None]
        terms.append(error.mean())
    return torch.stack(terms).mean()


def shortfall_loss(estimate: Audio, reference: Audio, windows: tuple[int, ...] = SHORTFALL_WINDOWS,
                   margin_db: float = 10.0, active_db: float = 60.0, floor: float = 1e-5,
                   edge: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over windows of the decades by which active reference cells stay more than `margin_db`
    under it: mean over active cells of max(0, log10 |S_ref| - log10 |S_est| - margin_db / 20).

    Not in the paper. It charges only a restoration that is far too quiet where the reference has
    something (active: within `active_db` of the example's loudest cell): the codec's holes left
    unfilled and a fill many dB under the music (diagnostics.holes, band_level_error). A cell the
    reference leaves empty, as in dark music, costs nothing however it is filled. So where the
    model cannot tell dark music from a holed band it pulls the fill up, not to the middle as
    log_magnitude_loss does: on v6 it halved the holes and over-filled dark sources
    (docs/default-model.md, "v6's stage 2 with a shortfall term").

    `edge` (batch,), each example's band edge as a fraction of Nyquist, keeps the charge to the
    cells under it: with the input's edge (metrics.cutoff_hz), the holes in the band the codec
    kept, and not the band it cut, which dark music never had. A negative edge leaves the example out.
    """
    estimate, reference = _magnitudes(estimate), _magnitudes(reference)
    terms = []
    for w in windows:
        est, ref = estimate(w), reference(w)  # (batch * channels, bins, frames)
        loudest = ref.amax(dim=(1, 2), keepdim=True)
        active = (ref > loudest * 10 ** (-active_db / 20)).float()
        if edge is not None:
            active = active * _under_edge(edge, ref, w)
        short = torch.relu(torch.log10(ref + floor) - torch.log10(est + floor) - margin_db / 20)
        terms.append((short * active).sum() / active.sum().clamp_min(1.0))
    return torch.stack(terms).mean()


def _rows(per_example: torch.Tensor, spectra: torch.Tensor) -> torch.Tensor:
    """Each example's value repeated for its channels: (batch * channels,), the rows of `spectra` as
    magnitude() lays them out (channels vary fastest)."""
    return per_example.to(spectra.device).repeat_interleave(spectra.shape[0] // per_example.shape[0])


def _under_edge(edge: torch.Tensor, spectra: torch.Tensor, window: int) -> torch.Tensor:
    """1 for the bins at or under each example's edge (a fraction of Nyquist), else 0:
    (batch * channels, bins, 1) for `spectra` of (batch * channels, bins, frames) at `window`."""
    rows = _rows(edge, spectra)
    fraction = torch.arange(spectra.shape[1], device=spectra.device) / (window // 2)
    return (fraction[None, :] <= rows[:, None]).float()[:, :, None]


def anchor_loss(estimate: Audio, anchor: Audio, edge: torch.Tensor, windows: tuple[int, ...] = SHORTFALL_WINDOWS,
                floor: float = 1e-5) -> torch.Tensor:
    """Mean over windows of the mean |log10 |S_est| - log10 |S_anchor|| over the cells above each
    example's band edge (`edge` (batch,), a fraction of Nyquist, as in shortfall_loss).

    Not in the paper. With another generator's output as `anchor` and the input's edge, it holds a
    fine-tune to that generator's fill above the edge (its restraint on dark music included), while
    other terms change what it does under the edge (docs/default-model.md, "Anchored above the edge").
    """
    estimate, anchor = _magnitudes(estimate), _magnitudes(anchor)
    terms = []
    for w in windows:
        est, held = estimate(w), anchor(w)
        above = 1.0 - _under_edge(edge, held, w)
        gap = (torch.log10(est + floor) - torch.log10(held + floor)).abs() * above
        terms.append(gap.sum() / (above.sum() * est.shape[-1]).clamp_min(1.0))
    return torch.stack(terms).mean()


NSIM_BANDS = 32  # ViSQOL's audio mode: 32 gammatone bands from 50 Hz
NSIM_WINDOW = 4096  # ~93 ms at 44.1 kHz (ViSQOL: 80 ms frames)
NSIM_FLOOR_DB = 45.0  # ViSQOL's floors: -45 dB absolute, and 45 dB under each frame's loudest band


def erb_filterbank(bins: int, sample_rate: int, bands: int = NSIM_BANDS, low_hz: float = 50.0) -> torch.Tensor:
    """(bands, bins) triangular weights with centres equally spaced on the ERB scale from `low_hz` to
    Nyquist: a gammatone spectrogram's frequency axis, for one-sided spectra of `bins` bins."""
    def erb(hz: torch.Tensor) -> torch.Tensor:
        return 21.4 * torch.log10(1 + 0.00437 * hz)

    nyquist = sample_rate / 2
    position = erb(torch.linspace(0, nyquist, bins, dtype=torch.float64))
    edges = torch.linspace(float(erb(torch.tensor(low_hz))), float(erb(torch.tensor(nyquist))), bands + 2,
                           dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (position[None] - lower) / (centre - lower)
    falling = (upper - position[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def _band_levels(wav: torch.Tensor, sample_rate: int, window: int) -> torch.Tensor:
    """(batch, channels, time) audio -> (batch, 1, bands, frames): each band's RMS in the mono downmix
    per frame, in ViSQOL's dB (10 log10 of the RMS), at least -NSIM_FLOOR_DB."""
    mono = wav.float().mean(1, keepdim=True)
    power = magnitude(mono, window) ** 2  # (batch, bins, frames)
    weights = erb_filterbank(power.shape[1], sample_rate).to(power.device)
    hann = torch.hann_window(window, device=power.device)
    mean_square = 2 * torch.einsum("kb,nbt->nkt", weights, power) / (window * hann.square().sum())
    return (5 * torch.log10(mean_square + 1e-30)).clamp_min(-NSIM_FLOOR_DB)[:, None]


def nsim_loss(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
              window: int = NSIM_WINDOW) -> torch.Tensor:
    """1 - mean NSIM of the two (batch, channels, time) waveforms' gammatone-like spectrograms.

    Not in the paper. ViSQOL scores a restoration by the neurogram similarity (NSIM: the SSIM
    index's intensity and structure terms over 3x3 Gaussian neighbourhoods of band x frame) of the
    mono downmix's gammatone spectrogram against the reference's. Per-bin losses (Eq. 4) charge a fill
    by its level; this charges it, as ViSQOL does, by whether its band levels rise and fall with the
    reference's from frame to frame (docs/default-model.md: a fill that does not follow the music
    scores best below the reference's level). Levels are floored as ViSQOL floors them (NSIM_FLOOR_DB
    absolute and under each frame's loudest band of either signal) and shifted to start at 0.
    """
    ref = _band_levels(reference, sample_rate, window)
    est = _band_levels(estimate, sample_rate, window)
    loudest = torch.maximum(ref.amax(dim=2, keepdim=True), est.amax(dim=2, keepdim=True)).detach()
    ref, est = torch.maximum(ref, loudest - NSIM_FLOOR_DB), torch.maximum(est, loudest - NSIM_FLOOR_DB)
    lowest = torch.minimum(ref.amin(dim=(2, 3), keepdim=True), est.amin(dim=(2, 3), keepdim=True)).detach()
    ref, est = ref - lowest, est - lowest
    span = ref.amax(dim=(2, 3), keepdim=True).detach()  # the reference's intensity range
    taps = torch.exp(-2 * (torch.arange(3, dtype=torch.float32, device=ref.device) - 1) ** 2)
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2  # sigma 0.5, as ViSQOL's window

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"),
                                          kernel[None, None])

    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2 / 2
    mu_r, mu_e = blur(ref), blur(est)
    var_r = (blur(ref * ref) - mu_r**2).clamp_min(0)
    var_e = (blur(est * est) - mu_e**2).clamp_min(0)
    cov = blur(ref * est) - mu_r * mu_e
    intensity = (2 * mu_r * mu_e + c1) / (mu_r**2 + mu_e**2 + c1)
    structure = (cov + c2) / ((var_r * var_e + 1e-12).sqrt() + c2)
    return 1 - (intensity * structure).mean()
