"""Recurrent kernels: LSTM, GRU and RNN as ONNX defines them (gate orders iofc / zrh), any direction.

The input projection ``X W^T + Wb`` is one matmul over all steps; the recurrence loops over time.
Attributes not implemented here (``input_forget``, activations other than Sigmoid/Tanh/Relu) raise :class:`UnsupportedKernelError` when the module is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx_ir as ir
import torch

from onnxslim.torch_bridge._registry import UnsupportedKernelError, _kernel

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}
_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
Cell = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def _settings(node: ir.Node) -> tuple[int, int, list[list[Callable]]]:
    """(layout, directions, activations per direction), or UnsupportedKernelError."""
    op = node.op_type
    if node.attributes.get_int("input_forget", 0):
        raise UnsupportedKernelError(
            "LSTM with input_forget=1 is not supported by the torch kernel"
        )
    direction = node.attributes.get_string("direction", "forward")
    directions = 2 if direction == "bidirectional" else 1
    per_direction = len(_DEFAULTS[op])
    names = list(node.attributes.get_strings("activations", list(_DEFAULTS[op]) * directions))
    if len(names) == per_direction and directions == 2:
        names = names * 2
    unknown = sorted({n for n in names if n.lower() not in _ACTIVATIONS})
    if unknown:
        raise UnsupportedKernelError(
            f"{op} activation(s) {unknown} are not supported by the torch kernel"
        )
    functions = [_ACTIVATIONS[n.lower()] for n in names]
    clip = node.attributes.get_float("clip", 0.0)
    if clip:  # the gates' inputs are clipped to [-clip, clip] (ORT: not the input of h(C))
        functions = [
            fn if op == "LSTM" and i % 3 == 2 else _clipped(fn, clip)
            for i, fn in enumerate(functions)
        ]
    split = [functions[d * per_direction : (d + 1) * per_direction] for d in range(directions)]
    return node.attributes.get_int("layout", 0), directions, split


def _clipped(function: Callable, clip: float) -> Callable:
    return lambda value: function(value.clamp(-clip, clip))


def _run_direction(
    cell: Cell,
    projected: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Steps ``cell`` over ``projected`` [S, B, gH]; returns (Y [S, B, H], last h, last c)."""
    steps = range(projected.shape[0] - 1, -1, -1) if reverse else range(projected.shape[0])
    outputs: list[torch.Tensor] = [h] * projected.shape[0]
    for t in steps:
        h, c = cell(projected[t], h, c)
        outputs[t] = h
    return torch.stack(outputs), h, c


def _recurrent(node: ir.Node, make_cell: Callable[..., Cell]) -> Callable[..., tuple]:
    layout, directions, activations = _settings(node)
    hidden = node.attributes.get_int("hidden_size", 0)
    gates = _GATES[node.op_type]
    with_cell = node.op_type == "LSTM"
    reverse = node.attributes.get_string("direction", "forward") == "reverse"

    def run(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
        if layout:
            x = x.transpose(0, 1)  # [B, S, I] -> [S, B, I]
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if sequence_lens is not None and bool((sequence_lens != steps).any()):
            raise ValueError(f"{node.op_type} with sequence_lens shorter than the sequence")
        size = hidden or r.shape[-1]
        zeros = x.new_zeros((directions, batch, size))
        h0 = zeros if initial_h is None else initial_h
        c0 = zeros if initial_c is None else initial_c
        ys, hs, cs = [], [], []
        for d in range(directions):
            bias = b[d] if b is not None else x.new_zeros(2 * gates * size)
            projected = x @ w[d].t() + bias[: gates * size]
            peep = None if p is None else p[d]
            cell = make_cell(r[d], bias[gates * size :], peep, activations[d])
            y, h, c = _run_direction(
                cell, projected, h0[d], c0[d] if with_cell else None, reverse or d == 1
            )
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, 1)  # [S, D, B, H]
        y_h = torch.stack(hs)
        if layout:
            y, y_h = y.permute(2, 0, 1, 3), y_h.transpose(0, 1)
        if not with_cell:
            return y, y_h
        y_c = torch.stack(cs)  # type: ignore[arg-type]
        return y, y_h, y_c.transpose(0, 1) if layout else y_c

    return run


def _lstm_cell(r, rb, p, activation: Sequence[Callable]) -> Cell:
    f, g, h_act = activation
    p_i, p_o, p_f = (None, None, None) if p is None else p.chunk(3)

    def step(xw, h, c):
        i, o, fg, cand = (xw + h @ r.t() + rb).chunk(4, -1)
        if p_i is not None:
            i, fg = i + p_i * c, fg + p_f * c
        i, fg, cand = f(i), f(fg), g(cand)
        c = fg * c + i * cand
        o = f(o + p_o * c) if p_o is not None else f(o)
        return o * h_act(c), c

    return step


def _gru_cell(linear_before_reset: int) -> Callable[..., Cell]:
    def make(r, rb, p, activation: Sequence[Callable]) -> Cell:
        f, g = activation
        r_z, r_r, r_h = r.chunk(3)
        rb_z, rb_r, rb_h = rb.chunk(3)

        def step(xw, h, c):
            x_z, x_r, x_h = xw.chunk(3, -1)
            z = f(x_z + h @ r_z.t() + rb_z)
            reset = f(x_r + h @ r_r.t() + rb_r)
            if linear_before_reset:
                candidate = g(x_h + reset * (h @ r_h.t() + rb_h))
            else:
                candidate = g(x_h + (reset * h) @ r_h.t() + rb_h)
            return (1 - z) * candidate + z * h, None

        return step

    return make


def _rnn_cell(r, rb, p, activation: Sequence[Callable]) -> Cell:
    (f,) = activation

    def step(xw, h, c):
        return f(xw + h @ r.t() + rb), None

    return step


@_kernel("LSTM")
def _lstm(node: ir.Node, opset: int):
    return _recurrent(node, _lstm_cell)


@_kernel("GRU")
def _gru(node: ir.Node, opset: int):
    return _recurrent(node, _gru_cell(node.attributes.get_int("linear_before_reset", 0)))


@_kernel("RNN")
def _rnn(node: ir.Node, opset: int):
    return _recurrent(node, _rnn_cell)
