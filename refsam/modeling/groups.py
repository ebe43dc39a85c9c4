"""RefSAM's parameter bookkeeping: named trainable groups, counts and checkpoint keys.

A mixin of :class:`~refsam.modeling.refsam.RefSAM` (it reads the model's modules by their
names): which parameters each group (``adapters``, ``temporal``, ``cross_modal_mlp``, …)
holds, freezing/unfreezing by group, per-module counts, and the tensors a training
checkpoint must hold (everything not rebuilt from the text encoder or a SAM checkpoint).
"""

from __future__ import annotations

import torch
from torch import nn

from refsam.config import ModelConfig
from refsam.errors import ConfigError
from refsam.modeling.adapters import BlockAdapters

# the config's default (model.trainable), defined once there: RefSAM's own modules and
# SAM's mask decoder; every group adds SAM's image and prompt encoders
DEFAULT_TRAINABLE = tuple(ModelConfig().trainable)
GROUPS = (*DEFAULT_TRAINABLE, "image_encoder", "prompt_encoder")


def _params(module: nn.Module | None) -> list[nn.Parameter]:
    return list(module.parameters()) if module is not None else []


class ParameterGroups:
    """Group-wise parameter access for RefSAM (mixed into the ``nn.Module``)."""

    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module
    text_encoder: nn.Module | None
    cross_modal_mlp: nn.Module
    dense: nn.Module | None
    tracking: nn.Module | None
    temporal: nn.Module | None
    iou_loss: bool
    sam_checkpoint: str | None

    @property
    def _adapter_params(self) -> list[nn.Parameter]:
        """Parameters of the adapters attached inside the encoder blocks."""
        modules = [m for m in self.image_encoder.modules() if isinstance(m, BlockAdapters)]
        return [p for m in modules for p in m.parameters()]

    def _groups(self) -> dict[str, list[nn.Parameter]]:
        """Every group's parameters (trainable or not); only parameters that get gradients."""
        adapter_ids = {id(p) for p in self._adapter_params}
        unused = {id(p) for p in self.mask_decoder.unused_parameters(iou_loss=self.iou_loss)}
        groups: dict[str, list[nn.Parameter]] = {
            "adapters": list(self._adapter_params),
            "image_encoder": [
                p for p in self.image_encoder.parameters() if id(p) not in adapter_ids
            ],
            "prompt_encoder": [self.prompt_encoder.no_mask_embed.weight],
            "mask_decoder": [p for p in self.mask_decoder.parameters() if id(p) not in unused],
            "cross_modal_mlp": list(self.cross_modal_mlp.parameters()),
            "dense": _params(self.dense),
            "tracking": _params(self.tracking),
            "temporal": _params(self.temporal),
        }
        return groups

    def set_trainable(self, groups: tuple[str, ...] | list[str]) -> None:
        """Freeze everything, then unfreeze the named groups (those absent in this build —
        e.g. ``dense`` with dense_path none — are skipped). Unknown names: ConfigError."""
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown:
            raise ConfigError(
                f"model.trainable: unknown group(s) {', '.join(unknown)}; expected among {', '.join(GROUPS)}"
            )
        self.requires_grad_(False)
        for name, params in self._groups().items():
            if name in groups:
                for p in params:
                    p.requires_grad_(True)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group name (empty groups left out)."""
        groups = {n: [p for p in ps if p.requires_grad] for n, ps in self._groups().items()}
        return {n: ps for n, ps in groups.items() if ps}

    def module_parameter_counts(self) -> dict[str, tuple[int, int]]:
        """{module: (total, trainable)} parameter counts; adapters apart from the encoder."""
        adapter_ids = {id(p) for p in self._adapter_params}
        modules = {
            "image_encoder": [
                p for p in self.image_encoder.parameters() if id(p) not in adapter_ids
            ],
            "adapters": self._adapter_params,
            "prompt_encoder": list(self.prompt_encoder.parameters()),
            "mask_decoder": list(self.mask_decoder.parameters()),
            "text_encoder": _params(self.text_encoder),
            "cross_modal_mlp": list(self.cross_modal_mlp.parameters()),
            "dense": _params(self.dense),
            "tracking": _params(self.tracking),
            "temporal": _params(self.temporal),
        }
        return {
            name: (sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad))
            for name, ps in modules.items()
        }

    def new_keys(self) -> set[str]:
        """State-dict keys of RefSAM's own modules (everything not in a SAM checkpoint)."""
        adapter_ids = {id(p) for p in self._adapter_params}
        adapter_keys = {n for n, p in self.named_parameters() if id(p) in adapter_ids}
        sam = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
        return {k for k in self.state_dict() if not k.startswith(sam)} | adapter_keys

    def _restorable_keys(self) -> set[str]:
        """Keys rebuilt from the named sources: the text encoder, and frozen SAM tensors
        when a SAM checkpoint was loaded."""
        keys = {k for k in self.state_dict() if k.startswith("text_encoder.")}
        if self.sam_checkpoint is not None:
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            new = self.new_keys()
            keys |= {k for k in self.state_dict() if k not in new and k not in trainable}
        return keys

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold: trained parameters, RefSAM's new modules, and
        SAM's tensors unless they come from a SAM checkpoint (no text encoder)."""
        skip = self._restorable_keys()
        return {k: v for k, v in self.state_dict().items() if k not in skip}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state_dict`; missing/unexpected keys are a ConfigError."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                "checkpoint does not match this model build: "
                f"missing {missing[:8]}{' …' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}"
            )
        self.load_state_dict(state, strict=False)
