"""Channels-last (NHWC) memory format for the convolutional networks: an opt-in speed switch (DESIGN.md §2).

GPU tensor-core convolutions (cuDNN) are NHWC-native; on NCHW tensors every convolution pays a layout transpose
each way. Converting the weights once and the 4-D inputs where they enter the network keeps every activation in
NHWC, because convolutions, norms, interpolation, concatenation and element-wise ops all keep the layout of
their (first) input. Only strides change, never values or shapes, so state dicts, checkpoints and outputs stay
exactly what they are. The output is handed back in the default layout, so samplers and losses never see it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_HANDLES = "_channels_last_hooks"  # attribute of a converted module holding its two hook handles


def has_conv_weights(module: nn.Module) -> bool:
    """Whether ``module`` holds a 4-D weight (a 2-D convolution), the only kind channels-last changes."""
    return any(p.ndim == 4 for p in module.parameters())


def _convert(value: Any, fmt: torch.memory_format) -> Any:
    if isinstance(value, Tensor) and value.ndim == 4:
        return value.contiguous(memory_format=fmt)
    if isinstance(value, (tuple, list)):
        return type(value)(_convert(v, fmt) for v in value)
    return value


def _inputs_to_channels_last(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # x_t, and an upsampler's low-resolution condition; tokens and embeddings (not 4-D) pass untouched.
    return _convert(args, torch.channels_last), {k: _convert(v, torch.channels_last) for k, v in kwargs.items()}


def _output_to_default(module: nn.Module, args: tuple, output: Any) -> Any:
    return _convert(output, torch.contiguous_format)


def is_channels_last(module: nn.Module) -> bool:
    """Whether :func:`set_channels_last` switched ``module`` on."""
    return getattr(module, _HANDLES, None) is not None


def set_channels_last(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Convert ``module`` (in place) to channels-last weights and inputs, or back to the default layout.

    Hooks on the module's call convert its 4-D tensor arguments on the way in and its output on the way out, so
    callers (samplers, losses, DDP or ``torch.compile`` wrappers) need no change. Raises for a network without
    2-D convolutions (a prior, a text tower), where the switch would do nothing.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"channels_last must be True or False, got {enabled!r}")
    if not has_conv_weights(module):
        raise ValueError(
            f"channels-last needs a convolutional network, but {type(module).__name__} has no 4-D (Conv2d) weights"
        )
    handles: tuple[RemovableHandle, RemovableHandle] | None = getattr(module, _HANDLES, None)
    if handles is not None:
        for h in handles:
            h.remove()
        setattr(module, _HANDLES, None)
    module.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
    if enabled:
        pre = module.register_forward_pre_hook(_inputs_to_channels_last, with_kwargs=True)
        post = module.register_forward_hook(_output_to_default)
        setattr(module, _HANDLES, (pre, post))
    return module
