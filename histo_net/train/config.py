"""``histo-net train`` configuration (configs/train.yaml): one strict schema with nested sections.

Defaults are sized for a 2-core CPU: 128 px tiles at 0.5 um/px, resnet18.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from histo_net.config import StrictModel, TilingConfig

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


class CalibrationConfig(StrictModel):
    """Temperature scaling, decision threshold and indeterminate band, fit on validation."""

    temperature: bool = Field(True, description="fit a temperature on validation logits")
    threshold: float | None = Field(None, ge=0, le=1, description="fixed threshold; None = chosen on validation")
    target_precision: float = Field(0.95, gt=0, le=1, description="precision required outside the indeterminate band")
    min_per_class: int = Field(5, ge=1, description="fewer validation slides per class: default narrow band")


class EvaluationConfig(StrictModel):
    """Test-split metrics."""

    bootstrap_samples: int = Field(1000, ge=0)
    ci_level: float = Field(0.95, gt=0, lt=1)
    ece_bins: int = Field(10, ge=2)


class TrainConfig(StrictModel):
    """The whole training run."""

    classes: list[str] | None = Field(list(DEFAULT_CLASSES), description="allowed slide labels; null = from manifest")
    positive_class: str | None = Field("neuroendocrine", description="class whose probability is thresholded")
    tiling: TilingConfig = TilingConfig(target_mpp=0.5, tile_size_px=128)
    split: SplitConfig = SplitConfig()
    tile_cnn: TileCNNConfig = TileCNNConfig()
    features: FeatureConfig = FeatureConfig()
    mil: MILConfig = MILConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(False, description="deterministic algorithms and seeded workers (slower)")

    @model_validator(mode="after")
    def _classes(self) -> TrainConfig:
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValueError("classes must list at least two distinct names")
            if "non_tumour" in self.classes:
                raise ValueError("'non_tumour' is reserved for tile labels")
        return self
