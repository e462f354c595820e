"""The study file's schema: pydantic models of its fixed sections, and of its plugin sections as the
kinds table (`ablate.interfaces.KINDS`) declares them, each plugin table checked against its own Params.

Errors are lines 'dotted.key: what was expected (got value)'.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ablate.errors import AblateError, did_you_mean
from ablate.interfaces import KINDS
from ablate.plugins import Registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyInfo(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="identifier of the study (reports/<name>/)")
    question: str = Field("", description="the question the study answers, quoted in its report")
    seeds: list[int] = Field([0], min_length=1, description="training seeds; every arm runs once per seed")
    companions: dict[str, str] = Field({}, description="label -> another study whose results (same profile) this "
                                       "study's report shows as extra arms '<label> + <arm>', e.g. an exact-oracle baseline")


class TrainConfig(_Strict):
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate after warmup")
    warmup: int = Field(100, ge=0, description="linear warmup steps")
    lr_decay: Literal["none", "cosine"] = Field("none", description="after warmup: constant ('none') or a cosine "
                                                "decay to 0 at the last step")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the evaluated weights")
    checkpoint_every: int = Field(500, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(10, ge=1, description="steps between recorded losses")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    bf16: bool = Field(True, description="bf16 autocast on CUDA")
    compile: bool = Field(False, description="torch.compile the model (GPU)")


class EvalConfig(_Strict):
    batch_size: int = Field(1000, ge=1, description="samples generated per batch")
    grid_samples: int = Field(64, ge=0, description="samples kept per sampler for the report's sample grid")
    reference: Literal["test", "train"] = Field("test", description="real split samples are compared with: the "
                                                "held-out 'test' split, or 'train' (what the model was fitted to)")
    clip_x0: bool | None = Field(None, description="clamp x0_hat to [-1, 1] at the denoiser (DDPM's clip_denoised) "
                                 "for every sampler; default: on for image data, off otherwise")
    raw_weights: bool = Field(False, description="also evaluate the raw (non-EMA) final weights")
    at_steps: list[int] = Field([], description="training steps at which the cheap metrics are also evaluated "
                                "(learning curves), with the EMA weights of that step")
    curve_samples: int | None = Field(None, ge=2, description="with at_steps: also evaluate the sample metrics that "
                                      "declare a headline key at each of those steps, at this many samples (capped at "
                                      "the metric's num_samples), under one sampler; the final weights too, stored at "
                                      "step = train.steps. Unset: only the cheap metrics")
    curve_sampler: str | None = Field(None, description="the sampler label of the headline's learning curve "
                                      "(default: the first [[sampler]])")


def _section(kind: Any) -> tuple[Any, Any]:
    """A plugin section's field: one table or a list of them, required when the kind has no default."""
    annotation = list[dict[str, Any]] if kind.many else dict[str, Any]
    if kind.default is None:
        return annotation, ...
    return annotation, Field(default_factory=lambda: copy.deepcopy(kind.default))


def study_model() -> type[BaseModel]:
    """The whole study file's model, its plugin sections taken from the kinds table as it is now."""
    one = [k for k in KINDS.values() if not k.many]
    fields: dict[str, Any] = {"plugins": (list[str], []), "study": (StudyInfo, ...)}
    fields |= {k.section: _section(k) for k in one if k.cell}
    fields |= {"train": (TrainConfig, TrainConfig()), "eval": (EvalConfig, EvalConfig())}
    fields |= {k.section: _section(k) for k in one if not k.cell}
    fields |= {"grid": (dict[str, list[Any]], {}), "arm": (list[dict[str, Any]], [])}
    fields |= {k.section: _section(k) for k in KINDS.values() if k.many}
    fields |= {"contrast": (list[dict[str, Any]], []), "profiles": (dict[str, dict[str, Any]], {})}
    return create_model("StudyModel", __base__=_Strict, **fields)


def required_sections() -> list[str]:
    """The tables a study must give ([study] and the plugin sections without a default), as TOML spells them."""
    return ["[study] (with a name)", *(f"[[{k.section}]]" if k.many else f"[{k.section}]"
                                      for k in KINDS.values() if k.default is None)]


def dotted(loc: tuple) -> str:
    """pydantic's error location as the study file spells it: ('sampler', 1, 'jump_at') -> 'sampler[1].jump_at'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the (nested) model at `loc` accepts, or [] where it is not a model (a free-form table)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return list(model.model_fields)


def error_lines(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> list[str]:
    """One 'key: message (got value)' line per pydantic error, its key under `prefix`. model: what was
    validated, so that an unknown key lists the keys it accepts (and the closest one)."""
    lines = []
    for err in exc.errors():
        where = ".".join(p for p in (prefix, dotted(err["loc"])) if p)
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err["input"], dict) else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = known_keys(model, err["loc"][:-1]) if model is not None else []
            msg = "unknown key" + (f"; known: {', '.join(known)}{did_you_mean(err['loc'][-1], known)}" if known else "")
        lines.append(f"{where or '(top level)'}: {msg}{got}")
    return lines


def validate_plugin(registry: Registry, kind: str, table: Any, key: str) -> tuple[dict[str, Any], list[str]]:
    """Resolve a plugin table {name, **params} to its full params (defaults filled), or errors."""
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        return {}, [f"{key}: expected a table with a `name` (a {kind} plugin), got {table!r}"]
    try:
        cls = registry.get(kind, table["name"])
    except AblateError as exc:
        return {}, [f"{key}.name: {exc}"]
    params = {k: v for k, v in table.items() if k != "name"}
    try:
        parsed = cls.Params.model_validate(params)
    except ValidationError as exc:
        return {}, error_lines(exc, key, cls.Params)
    return {"name": table["name"], **parsed.model_dump(mode="json")}, []


def plugin_sections(many: bool) -> dict[str, str]:
    """Study section -> plugin kind, for the one-table sections or the list ([[section]]) ones."""
    return {k.section: k.name for k in KINDS.values() if k.many == many}


def cell_sections() -> list[str]:
    """The plugin sections that make up a training cell's config (with `train` and the seed)."""
    return [k.section for k in KINDS.values() if k.cell]
