"""``histo-net train`` configuration (configs/train.yaml): one strict schema with nested sections.

Defaults are sized for a 2-core CPU: 128 px tiles at 0.5 um/px, resnet18.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from histo_net.config import StrictModel, TilingConfig
from histo_net.models.presets import get_preset

DEFAULT_CLASSES = ("neuroendocrine", "other_small_round_cell")


class SplitConfig(StrictModel):
    """Patient-level stratified split: fractions of patients per label, or k folds."""

    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of patients for validation")
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of patients held out for test")
    k_folds: int | None = Field(None, ge=2, description="k-fold mode: fold is test, fold+1 is val")
    fold: int = Field(0, ge=0, description="which fold is the test fold (k-fold mode)")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class TileCNNConfig(StrictModel):
    """Stage 1: the tile classifier."""

    backbone: str = Field("resnet18", description="registry name: resnet18, resnet50, efficientnet_b0, convnext_tiny")
    weights_path: str | None = Field(None, description="optional local backbone weights (never downloaded)")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate (cosine schedule)")
    weight_decay: float = Field(1e-4, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_tiles_per_slide: int = Field(256, ge=1, description="training tiles kept per slide (seeded)")
    val_max_tiles_per_slide: int = Field(64, ge=1, description="validation tiles kept per slide")
    tiles_per_epoch: int | None = Field(None, ge=1, description="balanced draws per epoch; None = all kept tiles")
    patience: int = Field(3, ge=1, description="early stopping: epochs without validation improvement")
    stain_jitter: float = Field(0.05, ge=0, le=0.5, description="HED augmentation strength")
    augmentation: Literal["basic", "strong"] = Field(
        "strong", description="basic: flips, HED, B/C, blur, JPEG; strong: adds stain-vector jitter "
        "in optical density, grey-world, gamma, wider blur and JPEG")
    stain_normalization: Literal["none", "macenko", "reinhard"] = Field(
        "none", description="stain normalisation inside the model (train and predict alike)")
    amp: bool = Field(True, description="autocast (bf16 on capable CPUs, fp16/bf16 on CUDA)")


class FeatureConfig(StrictModel):
    """Stage 2: embedding every tile with the trained CNN."""

    batch_size: int = Field(64, ge=1)


class MILConfig(StrictModel):
    """Stage 3: gated attention MIL."""

    hidden_dim: int = Field(128, ge=8)
    attn_dim: int = Field(64, ge=8)
    dropout: float = Field(0.25, ge=0, lt=1)
    epochs: int = Field(60, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    max_bag_tiles: int = Field(512, ge=1, description="tiles sampled per training bag")
    patience: int = Field(15, ge=1)
    class_weights: bool = Field(True, description="inverse-frequency class weights in the loss")
    class_specific: bool = Field(False, description="one attention branch per class (CLAM-MB); "
                                 "each class's heatmap explains that class")


class EncoderConfig(StrictModel):
    """A pretrained encoder from a local file (frozen-feature mode) instead of our tile CNN."""

    preset: str | None = Field(None, description="encoder preset (uni, uni2-h, virchow2, h-optimus-0, "
                               "h-optimus-1, prov-gigapath, resnet50-imagenet, ...); null = train our "
                               "own tile CNN")
    weights: str | None = Field(None, description="local weights file of the preset (.safetensors, "
                                ".bin, .pth); never downloaded")
    head_epochs: int = Field(200, ge=1, description="full-batch steps of the linear tile head")
    head_lr: float = Field(0.01, gt=0, description="AdamW learning rate of the tile head")
    head_weight_decay: float = Field(1e-4, ge=0)
    head_max_tiles_per_slide: int = Field(512, ge=1, description="training tiles per slide for the head")


class CalibrationConfig(StrictModel):
    """Temperature, threshold and indeterminate band, fit on held-out slide predictions."""

    method: Literal["auto", "cross_fit", "validation"] = Field(
        "auto", description="cross_fit: out-of-fold MIL predictions over train + validation; "
        "validation: the validation split; auto: validation when it has min_per_class slides "
        "of every class, else cross_fit")
    folds: int = Field(5, ge=2, description="cross-fitting folds (patient-grouped, stratified)")
    temperature: bool = Field(True, description="fit a temperature on held-out logits")
    threshold: float | None = Field(None, ge=0, le=1, description="fixed threshold; None = chosen on held-out slides")
    target_precision: float = Field(0.95, gt=0, le=1, description="precision (1 - error rate) required "
                                    "of confident calls; sets the indeterminate band")
    min_per_class: int = Field(10, ge=1, description="fewer calibration slides per class: loud warning")


class GuardrailConfig(StrictModel):
    """Floors below which training warns loudly (stderr and model card)."""

    min_val_auroc: float = Field(0.8, ge=0, le=1, description="validation slide AUROC floor")
    min_val_balanced_accuracy: float = Field(0.7, ge=0, le=1, description="validation balanced accuracy floor")


class DomainConfig(StrictModel):
    """Slide checks fitted on the training cohort: not assessable / no tumour detected."""

    enabled: bool = Field(True, description="fit the checks (off: every slide passes)")
    alpha: float = Field(0.03, gt=0, lt=0.5, description="share of in-distribution slides allowed to "
                         "fail the image and embedding checks together")
    alpha_tumour: float = Field(0.01, gt=0, lt=0.5, description="the same for the tumour-burden check")
    bank_size: int = Field(2048, ge=16, description="training tile embeddings kept for the kNN check")
    knn_k: int = Field(5, ge=1, description="neighbours in the kNN distance")


class EvaluationConfig(StrictModel):
    """Test-split metrics."""

    bootstrap_samples: int = Field(1000, ge=0)
    ci_level: float = Field(0.95, gt=0, lt=1)
    ece_bins: int = Field(10, ge=2)


class TrainConfig(StrictModel):
    """The whole training run."""

    classes: list[str] | None = Field(list(DEFAULT_CLASSES), description="allowed slide labels; null = from manifest")
    positive_class: str | None = Field("neuroendocrine", description="class whose probability is thresholded")
    target: Literal["label", "subtype"] = Field(
        "label", description="what the MIL head learns: label (the top-level classes) or subtype (the "
        "manifest's subtype column; the top-level call is the sum of its subtypes' probabilities and "
        "the report adds the subtype differential)")
    tiling: TilingConfig = TilingConfig(target_mpp=0.5, tile_size_px=128)
    split: SplitConfig = SplitConfig()
    tile_cnn: TileCNNConfig = TileCNNConfig()
    encoder: EncoderConfig = EncoderConfig()
    features: FeatureConfig = FeatureConfig()
    mil: MILConfig = MILConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    domain: DomainConfig = DomainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(False, description="deterministic algorithms and seeded workers (slower)")

    @model_validator(mode="before")
    @classmethod
    def _preset_tile_spec(cls, data: Any) -> Any:
        """With ``encoder.preset`` the preset fixes tile size and mpp: unset tiling keys take
        the preset's values, explicitly different ones are a one-line ``ConfigError``."""
        if not isinstance(data, dict):
            return data
        enc = data.get("encoder")
        name = enc.preset if isinstance(enc, EncoderConfig) else (
            enc.get("preset") if isinstance(enc, dict) else None)
        if not name:
            return data
        preset = get_preset(str(name))  # ConfigError listing the choices
        tiling = data.get("tiling")
        tiling = tiling.model_dump() if isinstance(tiling, TilingConfig) else dict(tiling or {})
        size, mpp = tiling.get("tile_size_px"), tiling.get("target_mpp")
        # unset keys take the preset's value; a set one must match it (one-line ConfigError)
        preset.check_tile_spec(int(size if size is not None else preset.tile_size_px),
                               float(mpp if mpp is not None else preset.target_mpp),
                               where=f"encoder.preset={preset.name}")
        tiling.update(tile_size_px=preset.tile_size_px, target_mpp=preset.target_mpp)
        return {**data, "tiling": tiling}

    @model_validator(mode="after")
    def _classes(self) -> TrainConfig:
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValueError("classes must list at least two distinct names")
            if "non_tumour" in self.classes:
                raise ValueError("'non_tumour' is reserved for tile labels")
        if self.encoder.weights is not None and self.encoder.preset is None:
            raise ValueError("encoder.weights needs encoder.preset (the architecture of the file)")
        return self

    @property
    def frozen_encoder(self) -> bool:
        """True when a pretrained encoder preset replaces the tile CNN (frozen features)."""
        return self.encoder.preset is not None
