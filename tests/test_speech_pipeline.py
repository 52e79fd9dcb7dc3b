"""Speech-like audio (onnxslim.testing) and a small VAD CNN through prune -> distill -> int8,
scored by frame-level agreement of its speech probability with the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import onnxslim  # noqa: E402
from onnxslim.testing import (  # noqa: E402
    export_torch,
    frame_agreement,
    log_mel,
    speech_like_audio,
)

FRAMES = 100  # frames (10 ms each) per model input


def test_generator_is_deterministic_and_labels_follow_the_synthesis() -> None:
    clip = speech_like_audio(10.0, seed=0)
    again = speech_like_audio(10.0, seed=0)
    other = speech_like_audio(10.0, seed=1)
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (160000,)
    assert clip.labels.dtype == bool and clip.labels.shape == (1000,)
    np.testing.assert_array_equal(clip.audio, again.audio)
    np.testing.assert_array_equal(clip.labels, again.labels)
    assert not np.array_equal(clip.audio, other.audio)
    assert int(clip.labels.sum()) == 474
    assert not clip.labels[:20].any()  # at least 0.2 s of silence first
    # Speech frames are loud, the rest is the noise floor (25 dB SNR by default).
    frames = clip.audio.reshape(1000, 160).astype(np.float64)
    power = (frames**2).mean(1)
    assert 10 * np.log10(power[clip.labels].mean() / power[~clip.labels].mean()) > 15
    assert np.abs(clip.audio).max() <= 1.0
    pcm = clip.pcm16()
    assert pcm.dtype == np.int16 and int(np.abs(pcm).max()) == round(
        np.abs(clip.audio).max() * 32767
    )


def test_generator_rejects_bad_sizes_and_agreement_checks_shapes() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        speech_like_audio(0.0)
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\) differ"):
        frame_agreement(np.zeros(3), np.zeros(2))
    assert frame_agreement(np.array([0.1, 0.6, 0.7, 0.4]), np.array([0.2, 0.9, 0.3, 0.6])) == 0.5


def test_log_mel_shape_and_speech_energy() -> None:
    clip = speech_like_audio(3.0, seed=2)
    mel = log_mel(clip.audio, n_mels=16)
    assert mel.shape == (301, 16) and mel.dtype == np.float32
    energy = mel[: len(clip.labels)].mean(1)
    assert energy[clip.labels].mean() - energy[~clip.labels].mean() > 2.0


class TinyVad(torch.nn.Module):
    """Conv1d stack over log-mel frames -> per-frame speech probability."""

    def __init__(self, mels: int = 16, width: int = 24) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv1d(mels, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, 1, 1),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # [B, T, mels] -> [B, T, 1]
        # [B, T, 1], not [B, T]: the fidelity helpers take a float [N, C > 1] output for class
        # scores, and Distill would then pick its best epoch by top-1 over the time axis.
        return torch.sigmoid(self.body(mel.transpose(1, 2))).transpose(1, 2)


def windows(seed: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Standardised log-mel windows [n, FRAMES, 16] of one clip and their frame labels."""
    clip = speech_like_audio(seconds, seed=seed)
    mel = (log_mel(clip.audio, n_mels=16)[: len(clip.labels)] + 6.0) / 4.0
    count = len(clip.labels) // FRAMES
    shape = (count, FRAMES)
    return mel[: count * FRAMES].reshape(*shape, 16), clip.labels[: count * FRAMES].reshape(shape)


def trained_vad(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    parts = [windows(seed, 6.0) for seed in range(4)]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))
    model = TinyVad()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (8 s instead of 0.5 s)
    try:
        for _ in range(60):
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy(model(x)[..., 0], y)
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return export_torch(
        model, (x[:1],), tmp_path / "vad.onnx", input_names=["mel"], output_names=["speech"]
    )


def probabilities(path: Path, mel: np.ndarray) -> np.ndarray:
    session = onnxslim.create_session(path)
    return session.run(None, {"mel": mel})[0][..., 0]


def test_vad_cnn_prune_distill_int8_keeps_frame_agreement(tmp_path: Path) -> None:
    from onnxslim.passes import Cleanup, Distill, QuantizeStatic, StructuredPrune

    source = trained_vad(tmp_path)
    train = np.concatenate([windows(seed, 6.0)[0] for seed in range(4, 8)])
    eval_x, eval_y = windows(50, 8.0)
    items = [{"mel": train[i : i + 1]} for i in range(len(train))]

    def agreement_at_least(reference: list, candidate: list) -> bool:
        a = np.concatenate([r["speech"] for r in reference])  # [N, T, 1]
        b = np.concatenate([c["speech"] for c in candidate])
        return frame_agreement(a, b) >= 0.9

    passes = [
        Cleanup(),
        StructuredPrune(ratio=0.3, round_to=1),  # 24 channels: no rounding to 8 or 16
        Distill(items, epochs=1, batch_size=4, lr=1e-3, output_losses={"speech": "mse"}, seed=0),
        QuantizeStatic(
            calibration=items[:8], latency_guard=False, min_top1=None, metric=agreement_at_least
        ),
    ]
    (tmp_path / "stages").mkdir()
    result = onnxslim.Pipeline(passes).run(
        source, data=items[:2], sizes={"mel": (1, FRAMES, 16)}, stage_dir=tmp_path / "stages"
    )
    stages = result.report.stages
    paths = [Path(str(stage.model_path)) for stage in stages]
    assert [s.stage for s in stages] == ["input", "cleanup", "prune", "distill", "quantize"]
    pruned = onnx.load(paths[2])
    conv_widths = [
        next(i for i in pruned.graph.initializer if i.name == n.input[1]).dims[0]
        for n in pruned.graph.node
        if n.op_type == "Conv"
    ]
    assert conv_widths == [17, 17, 1]
    assert stages[2].parameters < stages[1].parameters
    quantized = onnx.load(paths[4])
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) > 0
    reference = probabilities(paths[0], eval_x)
    assert reference.shape == eval_y.shape == (8, FRAMES)
    assert np.mean((reference > 0.5) == eval_y) > 0.85  # the float VAD does its task
    agreement = {
        stage.stage: frame_agreement(reference, probabilities(path, eval_x))
        for stage, path in zip(stages[1:], paths[1:])
    }
    assert stages[3].summary["sqnr_after_db"] > stages[3].summary["sqnr_before_db"] + 10
    assert agreement["cleanup"] == 1.0
    # Pruning alone loses frames, one epoch of distillation wins them back, int8 keeps them.
    assert agreement["distill"] > agreement["prune"], agreement
    assert agreement["distill"] >= 0.9 and agreement["quantize"] >= 0.9, agreement
