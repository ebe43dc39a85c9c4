"""SAM's MaskDecoder, subclassed only to also return the output token states (MODEL.md part 6).

Input tokens are SAM's ``[IoU token, mask tokens]`` followed by the sparse prompts, which
RefSAM sets to ``[real text tokens; track token]``. Parameter names are SAM's, so an
official checkpoint's ``mask_decoder.*`` keys load unchanged.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


class TokenMaskDecoder(MaskDecoder):
    """MaskDecoder whose :meth:`decode` returns single-mask logits, IoU and token states."""

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image, P prompts (as SAM).

        Args: image_embeddings 1×C×h×w, image_pe 1×C×h×w, sparse P×N×C, dense P×C×h×w.
        Returns: masks P×1×4h×4w (logits), iou P×1, tokens P×(1+M+N)×C — the transformer's
        output token states (index 1 is the first mask token: the object token).
        """
        states: list[torch.Tensor] = []
        handle = self.transformer.register_forward_hook(lambda _m, _i, out: states.append(out[0]))
        try:
            masks, iou = self(
                image_embeddings=image_embeddings,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_prompt_embeddings,
                dense_prompt_embeddings=dense_prompt_embeddings,
                multimask_output=False,
            )
        finally:
            handle.remove()
        return masks, iou, states[0]

    def unused_parameters(self, *, iou_loss: bool) -> list[torch.nn.Parameter]:
        """Parameters that get no gradient with single-mask output: the hypernetwork MLPs of
        mask tokens 1..3, and the IoU head unless the IoU loss is on."""
        unused = [p for mlp in self.output_hypernetworks_mlps[1:] for p in mlp.parameters()]
        if not iou_loss:
            unused += list(self.iou_prediction_head.parameters())
        return unused
