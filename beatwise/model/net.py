"""The beat classifier: a small 1D-ResNet on the window, plus the RR context in the head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["N_RR_FEATURES", "BeatResNet", "rr_features"]

#: RR features the head sees, computed inside the model from the three RR inputs (seconds).
N_RR_FEATURES = 7


def rr_features(rr: torch.Tensor) -> torch.Tensor:
    """Turn the pipeline's RR context into scale-free features.

    Args:
        rr: ``(n, 3)`` float tensor in seconds: pre-RR, post-RR, local mean RR.

    Returns:
        ``(n, 7)``: the three raw RRs (s), log(pre/local), log(post/local), log(post/pre),
        and pre/local - 1. Ratios to the local mean make a premature beat look premature in
        every patient, whatever the heart rate -- morphology alone cannot separate
        supraventricular from normal beats in a new patient.
    """
    eps = 0.05  # seconds: keeps the logs finite for absurd RRs
    pre = rr[:, 0:1].clamp(min=eps, max=5.0)
    post = rr[:, 1:2].clamp(min=eps, max=5.0)
    local = rr[:, 2:3].clamp(min=eps, max=5.0)
    return torch.cat(
        [
            pre,
            post,
            local,
            torch.log(pre / local),
            torch.log(post / local),
            torch.log(post / pre),
            pre / local - 1.0,
        ],
        dim=1,
    )


class _Block(nn.Module):
    """Two kernel-3 convolutions and a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.skip(x))


class BeatResNet(nn.Module):
    """1D-ResNet over a beat window, with the RR context joined in the head.

    Stem: convolution (kernel 7, stride 2) + max-pool (stride 2); then one stage per entry
    of ``widths`` (the first at stride 1, the others at stride 2), each of ``blocks``
    residual blocks of two kernel-3 convolutions; adaptive average pooling; a head that
    joins the pooled features with :func:`rr_features` and outputs one logit per class.

    Args:
        n_classes: Output classes. Default 6.
        widths: Channels per stage. Default ``(16, 32, 64)``.
        blocks: Residual blocks per stage. Default 2.
        rr_hidden: Width of the RR embedding. Default 16.
        head_hidden: Width of the hidden head layer. Default 64.
        dropout: Dropout before the last layer. Default 0.2.
        template: Also take the stream's running template (a second input channel beside
            the window): how this beat differs from the patient's recent beats. Default
            False.

    Inputs of ``forward``: ``window`` ``(n, 280)`` float32 min-max scaled to [0, 1];
    ``rr`` ``(n, 3)`` float32 seconds (pre-RR, post-RR, local mean RR); ``template`` ``(n,
    280)`` (:func:`beatwise.dsp.beats.running_template`), for template models only. Output: ``(n,
    n_classes)`` logits, plus the ``logit_bias`` buffer (zeros unless tuned on validation,
    see :func:`beatwise.model.train.tune_logit_bias`).
    """

    def __init__(
        self,
        *,
        n_classes: int = 6,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: int = 2,
        rr_hidden: int = 16,
        head_hidden: int = 64,
        dropout: float = 0.2,
        template: bool = False,
    ) -> None:
        super().__init__()
        self.template_input = template
        if not widths or blocks < 1:
            raise ValueError(
                f"need at least one stage and one block; got widths={widths}, blocks={blocks}."
            )
        self.stem = nn.Sequential(
            nn.Conv1d(2 if template else 1, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(_Block(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.rr = nn.Sequential(nn.Linear(N_RR_FEATURES, rr_hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.Linear(c + rr_hidden, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, n_classes),
        )
        # Added to the logits: a prior correction chosen on validation beats after training
        # (balanced training shifts the class priors); zeros until then.
        self.register_buffer("logit_bias", torch.zeros(n_classes))

    def forward(
        self, window: torch.Tensor, rr: torch.Tensor, template: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.template_input:
            if template is None:
                raise ValueError("this model takes the running template as a third input")
            x = torch.stack([window, template], dim=1)
        else:
            x = window.unsqueeze(1)
        x = self.body(self.stem(x))
        x = self.pool(x).flatten(1)
        return self.head(torch.cat([x, self.rr(rr_features(rr))], dim=1)) + self.logit_bias
