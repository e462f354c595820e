"""diffusers' UNet2DModel as an ablate model (`pip install 'ablate[diffusers]'`): the architectures people
already use, trained and compared like any other model, and exported as a DDPMPipeline (`ablate export-model`).

diffusers is imported when a model is built, never when the registry loads or a study is validated, so
`ablate plugins` stays fast and a machine without it lists the plugin and fails only a study that uses it,
with one line saying what to install.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from torch import Tensor, nn

from ablate import AblateError, DataSpec, Model, hookimpl

INSTALL = "the diffusers_unet model needs the diffusers package: pip install 'ablate[diffusers]'"


# The block names UNet2DModel accepts (diffusers' get_down_block / get_up_block, without the cross-attention
# ones, which need text conditioning): checked without importing diffusers, so loading the registry and
# validating a study stay fast, and a machine without diffusers loads every other plugin without a word.
BLOCKS = frozenset({"DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D", "ResnetDownsampleBlock2D",
                    "KDownBlock2D", "UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D",
                    "ResnetUpsampleBlock2D", "KUpBlock2D"})


def require_diffusers() -> Any:
    """The diffusers module, or one clear line saying how to get it."""
    try:
        import diffusers
    except ImportError:
        raise AblateError(INSTALL, key="model.name") from None
    return diffusers


class UNet2DWrapper(nn.Module):
    """ablate's model contract, forward(x_t, t) -> tensor, around a UNet2DModel (kept as `.unet`, so
    its weights are the wrapper's under the prefix 'unet.')."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t).sample


class DiffusersUNet(Model):
    """diffusers' UNet2DModel, built from the keys of the model table (its own config names); sample_size
    and the channels come from the data. Defaults: the block layout of DDPM's CIFAR-10 model."""

    name = "diffusers_unet"

    class Params(Model.Params):
        block_out_channels: list[int] = Field([128, 256, 256, 256], min_length=1, description="channels per resolution level")
        layers_per_block: int = Field(2, ge=1, description="ResNet layers per down block (up blocks have one more)")
        down_block_types: list[str] = Field(["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                                            description="one diffusers down block per level, e.g. DownBlock2D, AttnDownBlock2D")
        up_block_types: list[str] = Field(["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                                          description="one diffusers up block per level, lowest resolution first")
        norm_num_groups: int = Field(32, ge=1, description="GroupNorm groups (must divide every channel count)")
        attention_head_dim: int | None = Field(None, ge=1, description="channels per attention head (None: one head)")
        dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the ResNet blocks")

        @model_validator(mode="after")
        def _consistent(self) -> DiffusersUNet.Params:
            """Checked with the study, before anything trains: the levels agree and diffusers knows the blocks."""
            levels, problems = len(self.block_out_channels), []
            for key in ("down_block_types", "up_block_types"):
                if len(getattr(self, key)) != levels:
                    problems.append(f"{key} needs one entry per block_out_channels level ({levels}), "
                                    f"got {len(getattr(self, key))}")
            bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
            if bad:
                problems.append(f"norm_num_groups = {self.norm_num_groups} must divide every block_out_channels "
                                f"entry (not {', '.join(map(str, bad))})")
            unknown = [n for n in self.down_block_types + self.up_block_types if n not in BLOCKS]
            if unknown:
                problems.append(f"unknown diffusers block type(s) {', '.join(unknown)} (one of {', '.join(sorted(BLOCKS))})")
            if problems:
                raise ValueError("; ".join(problems))
            return self

    def config(self, spec: DataSpec) -> dict[str, Any]:
        """The UNet2DModel config for this data: the model table plus sample_size and channels."""
        if not spec.is_image:
            raise AblateError(f"diffusers_unet needs image data [C, H, W]; dataset {spec.name!r} has shape "
                              f"{spec.shape} (use mlp)", key="model.name")
        c, h, w = spec.shape
        factor = 2 ** (len(self.params.block_out_channels) - 1)
        if h != w or h % factor:
            raise AblateError(f"image size {h}x{w} must be square and divisible by 2^(levels-1) = {factor}",
                              key="model.block_out_channels")
        return {"sample_size": h, "in_channels": c, "out_channels": c, **self.params.model_dump()}

    def build(self, spec: DataSpec) -> nn.Module:
        config = self.config(spec)
        diffusers = require_diffusers()
        try:
            unet = diffusers.UNet2DModel(**config)
        except (ValueError, TypeError, KeyError) as exc:  # e.g. an unknown block type
            raise AblateError(f"diffusers could not build UNet2DModel: {exc}", key="model") from None
        return UNet2DWrapper(unet)


@hookimpl
def ablate_models() -> list[type]:
    return [DiffusersUNet]
