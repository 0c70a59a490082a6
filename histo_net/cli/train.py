"""``histo-net train``: manifest -> tiles -> tile CNN -> features -> MIL -> RUN/model.pt."""

from __future__ import annotations

import argparse

from histo_net.cli.common import (
    EXIT_OK,
    add_config_options,
    add_device_options,
    add_progress_option,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the train options (config/device groups come from cli.common)."""
    parser.add_argument("--manifest", required=True,
                        help="CSV slide_id,patient_id,path,label[,annotations][,mpp]")
    parser.add_argument("--out", required=True, help="run folder RUN (config, splits, logs, model.pt)")
    add_config_options(parser, "configs/train.yaml; defaults built in",
                       example="tile_cnn.epochs=3")
    parser.add_argument("--preset", choices=("demo", "benchmark"), default=None,
                        help="named overrides applied on top of --config, below --set")
    parser.add_argument("--stage", choices=("tiles", "features", "mil", "all"), default="all",
                        help="tiles: tiling + tile CNN; features: embeddings; mil: slide model, "
                        "calibration, evaluation and bundle; all (default)")
    parser.add_argument("--resume", action="store_true",
                        help="continue stage 1 from RUN/checkpoints/tile_cnn_last.pt")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms and seeded workers (slower)")
    add_progress_option(parser)
    add_device_options(parser)
    parser.set_defaults(batch_size=None)  # None: keep the config's batch sizes


def run(args: argparse.Namespace) -> int:
    """Build the config, train, print where the bundle and metrics are."""
    import json
    import os
    from pathlib import Path

    # deferred imports: pydantic and torch load only when training runs (fast --help)
    from histo_net.config import build_config, deep_merge, read_yaml
    from histo_net.train.config import TrainConfig
    from histo_net.train.presets import preset_overrides
    from histo_net.train.run import run_training

    out = Path(args.out)
    resolved = out / "config.yaml"
    if args.config:
        data = read_yaml(args.config)
    elif args.resume and resolved.is_file() and not args.preset:
        data = read_yaml(resolved)  # continue with the run's own settings (plus any --set)
    else:
        data = {}
    if args.preset:
        data = deep_merge(data, preset_overrides(args.preset))
    if args.deterministic:
        data["deterministic"] = True
    overrides = list(args.overrides)
    source = args.config or (f"--preset {args.preset}" if args.preset else
                             str(resolved) if data else "defaults")
    cfg = build_config(TrainConfig, data, overrides, source=source)
    if args.batch_size is not None:
        cfg = build_config(TrainConfig, cfg.model_dump(mode="json"),
                           [f"tile_cnn.batch_size={args.batch_size}",
                            f"features.batch_size={args.batch_size}"], source=source)
    bundle = run_training(Path(args.manifest), out, cfg, stage=args.stage, resume=args.resume,
                          device=args.device, workers=args.workers, progress=args.progress)
    if os.environ.get("RANK", "0") == "0":
        metrics_path = out / "metrics.json"
        if bundle.is_file() and metrics_path.is_file() and args.stage in ("mil", "all"):
            metrics = json.loads(metrics_path.read_text())
            keys = ("slide_auroc", "balanced_accuracy", "tile_auroc", "attention_localisation_auroc",
                    "ece_before_scaling", "ece_after_scaling")
            summary = ", ".join(f"{k}={metrics[k]:.3f}" for k in keys
                                if isinstance(metrics.get(k), (int, float)))
            print(f"bundle: {bundle}\nmetrics: {metrics_path} ({summary})")
        else:
            print(f"stage '{args.stage}' done: {out}")
    return EXIT_OK
