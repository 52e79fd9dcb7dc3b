"""Speech-like audio made here, with its frame labels: data for audio models without a corpus.

Utterances are runs of syllables: a harmonic source (glottal pitch with a glide and vibrato)
shaped by three formant resonances, some syllables led by a fricative noise burst, at a
syllable rate of about 4 per second, with short gaps inside an utterance and longer silences
between utterances, over a stationary pinkish background noise at a chosen SNR. The labels say,
per ``hop`` samples, whether the synthesis put speech there (not an energy detector's guess),
so a VAD or keyword model can be scored frame by frame. Deterministic under ``seed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SpeechLikeClip", "frame_agreement", "log_mel", "speech_like_audio", "stream"]

_FORMANT_BANDWIDTHS = (90.0, 130.0, 220.0)


@dataclasses.dataclass(frozen=True)
class SpeechLikeClip:
    """Mono audio in [-1, 1] and, per ``hop`` samples, whether it holds speech."""

    audio: np.ndarray  # float32 [samples]
    labels: np.ndarray  # bool [samples // hop]
    sample_rate: int
    hop: int

    def pcm16(self) -> np.ndarray:
        """The audio as 16-bit PCM samples (what most keyword-spotting front ends read)."""
        return np.round(self.audio * 32767.0).astype(np.int16)


def _syllable(rng: np.random.Generator, f0: float, seconds: float, rate: int) -> np.ndarray:
    """One voiced syllable: harmonics of a gliding f0 weighted by three formant peaks."""
    count = int(seconds * rate)
    t = np.arange(count) / rate
    glide = np.linspace(rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.05), count)
    pitch = f0 * glide * (1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    formants = (rng.uniform(300, 850), rng.uniform(900, 2400), rng.uniform(2400, 3300))
    signal = np.zeros(count)
    for k in range(1, int(0.45 * rate / pitch.max()) + 1):
        frequency = k * f0
        gain = sum(
            1.0 / (1.0 + ((frequency - centre) / width) ** 2)
            for centre, width in zip(formants, _FORMANT_BANDWIDTHS)
        )
        signal += gain / np.sqrt(k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    # Rise and fall of a syllable nucleus: no click at its edges.
    envelope = np.clip(np.sin(np.pi * np.arange(count) / max(count - 1, 1)), 0, 1) ** 0.6
    return signal * envelope / max(np.abs(signal).max(), 1e-9)


def _fricative(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    """A consonant onset: high-passed noise (first difference of white noise), faded in."""
    count = int(seconds * rate)
    noise = np.diff(rng.standard_normal(count + 1))
    return 0.3 * noise / np.abs(noise).max() * np.linspace(0.2, 1.0, count)


def _pink_noise(rng: np.random.Generator, count: int) -> np.ndarray:
    """Unit-power noise with a 1/f power spectrum above 50 Hz: a tilted, speech-free floor."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequencies = np.fft.rfftfreq(count)
    spectrum /= np.sqrt(np.maximum(frequencies, 50.0 / 16000.0))
    noise = np.fft.irfft(spectrum, n=count)
    return noise / noise.std()


def _utterance(rng: np.random.Generator, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """2-7 syllables with short gaps: the waveform and its per-sample speech mask."""
    f0 = rng.uniform(90, 240)
    pieces, masks = [], []
    for _ in range(int(rng.integers(2, 8))):
        if rng.random() < 0.5:
            burst = _fricative(rng, rng.uniform(0.03, 0.07), rate)
            pieces.append(burst)
            masks.append(np.ones(len(burst), bool))
        voiced = _syllable(rng, f0 * rng.uniform(0.9, 1.15), rng.uniform(0.12, 0.3), rate)
        pieces.append(voiced)
        masks.append(np.ones(len(voiced), bool))
        gap = int(rng.uniform(0.02, 0.08) * rate)
        pieces.append(np.zeros(gap))
        masks.append(np.zeros(gap, bool))
    return np.concatenate(pieces) * rng.uniform(0.15, 0.7), np.concatenate(masks)


def speech_like_audio(
    seconds: float,
    *,
    sample_rate: int = 16000,
    hop: int = 160,
    seed: int = 0,
    snr_db: float = 25.0,
) -> SpeechLikeClip:
    """``seconds`` of utterances and silences over noise; labels per ``hop`` samples.

    A frame is labelled speech when at least half of its samples belong to a syllable or a
    consonant burst. The noise level is set from the mean power of the speech samples.
    """
    if seconds <= 0 or sample_rate <= 0 or hop <= 0:
        raise ValueError("speech_like_audio: seconds, sample_rate and hop must be positive")
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    speech = np.zeros(total)
    mask = np.zeros(total, bool)
    cursor = int(rng.uniform(0.2, 0.6) * sample_rate)
    while cursor < total:
        wave, active = _utterance(rng, sample_rate)
        end = min(cursor + len(wave), total)
        speech[cursor:end] = wave[: end - cursor]
        mask[cursor:end] = active[: end - cursor]
        cursor = end + int(rng.uniform(0.3, 1.0) * sample_rate)
    power = float(np.mean(speech[mask] ** 2)) if mask.any() else 1e-4
    noise = _pink_noise(rng, total) * np.sqrt(power / 10 ** (snr_db / 10))
    audio = np.clip(speech + noise, -1.0, 1.0).astype(np.float32)
    frames = total // hop
    labels = mask[: frames * hop].reshape(frames, hop).mean(1) >= 0.5
    return SpeechLikeClip(audio=audio, labels=labels, sample_rate=sample_rate, hop=hop)


def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale (HTK formula), [n_mels, n_fft//2+1]."""
    mels = np.linspace(0.0, 2595 * np.log10(1 + sample_rate / 2 / 700), n_mels + 2)
    edges = 700 * (10 ** (mels / 2595) - 1)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    rising = (bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(
    audio: np.ndarray,
    *,
    sample_rate: int = 16000,
    n_fft: int = 400,
    hop: int = 160,
    n_mels: int = 32,
) -> np.ndarray:
    """Log mel energies [frames, n_mels], frame ``i`` centred on sample ``i * hop``."""
    padded = np.pad(np.asarray(audio, dtype=np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[index] * np.hanning(n_fft), axis=1)) ** 2
    energies = spectrum @ _mel_filters(sample_rate, n_fft, n_mels).T
    return np.log(energies + 1e-6).astype(np.float32)


def frame_agreement(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> float:
    """Share of frames where both probabilities fall on the same side of ``threshold``."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape:
        raise ValueError(f"frame_agreement: shapes {reference.shape} and {candidate.shape} differ")
    return float(np.mean((reference > threshold) == (candidate > threshold)))


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def stream(
    model: Any,
    chunks: Iterable[np.ndarray],
    carry: Mapping[str, str],
    fixed: Mapping[str, np.ndarray] | None = None,
    chunk_input: str | None = None,
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Runs ``model`` (a path or an in-memory model) chunk by chunk as a streaming caller does:
    each call is fed its chunk (as ``chunk_input``; default the one input neither carried nor
    fixed), the ``fixed`` feeds (a sample rate) and, for every ``carry[output] = input``, the
    previous call's ``output`` (zeros of the input's declared shape on the first call, symbolic
    dims 1). Returns every call's (feeds, outputs by name)."""
    from onnxslim import create_session

    session = create_session(model)
    fixed = dict(fixed or {})
    carried = set(carry.values())
    declared = {i.name: i for i in session.get_inputs()}
    if chunk_input is None:
        free = [n for n in declared if n not in carried and n not in fixed]
        if len(free) != 1:
            raise ValueError(f"stream: name the chunk input among {free}")
        chunk_input = free[0]
    state = {
        name: np.zeros(
            [d if isinstance(d, int) else 1 for d in declared[name].shape],
            _ORT_TYPES.get(declared[name].type, np.float32),
        )
        for name in carried
    }
    names = [o.name for o in session.get_outputs()]
    calls = []
    for chunk in chunks:
        feeds = {chunk_input: np.asarray(chunk), **fixed, **state}
        outputs = dict(zip(names, session.run(None, feeds)))
        calls.append((feeds, outputs))
        state = {name: outputs[output] for output, name in carry.items()}
    return calls
