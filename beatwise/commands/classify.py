"""``beatwise dataset build``, ``beatwise train``, ``beatwise eval classify`` (+ ``-report``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Collection
from pathlib import Path

DEFAULT_DATASET = "cache/beats.npz"

#: ``beatwise train`` options that only shape the fit, with their defaults. ``--weights DIR``
#: takes them from DIR/history.json instead, so they are refused there and left out of the
#: command line the card records.
FIT_OPTIONS: dict[str, object] = {
    "epochs": 30,
    "patience": 6,
    "batch_size": 256,
    "lr": 2e-3,
    "device": "cpu",
    "class_weight": "none",
    "augment": False,
    "widths": "16,32,64",
    "blocks": 2,
    "n_per_epoch": None,
    "swa_start": None,
}


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups["dataset"].add_parser(
        "build",
        help="cut every record's beats with the live pipeline and match them to the reference",
    )
    p.add_argument("--out", default=DEFAULT_DATASET, help="output .npz (default: %(default)s)")
    p.add_argument(
        "--detector",
        choices=("pipeline", "biosppy"),
        default="pipeline",
        help="pipeline: the live BeatPipeline (default); biosppy: the prior version's "
        "zero-phase filter + Hamilton R peaks, to measure train/serve mismatch",
    )
    p.add_argument(
        "--records",
        nargs="+",
        default=None,
        metavar="DB/NAME",
        help="only these records (default: all of mitdb and svdb)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--compress", action="store_true", help="deflate the arrays (smaller, slower)")
    p.set_defaults(func=_build)

    p = groups[""].add_parser("train", help="train the beat classifier; export TorchScript + card")
    p.add_argument("--protocol", choices=("seed", "interpatient"), required=True)
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="beat dataset (default: %(default)s)")
    p.add_argument(
        "--out", default=None, help="model file (default: models/beatwise_<protocol>.pt)"
    )
    for flag, kind, text in (
        ("--epochs", int, "most epochs"),
        ("--patience", int, "early-stopping epochs"),
        ("--batch-size", int, "beats per step"),
        ("--lr", float, "peak learning rate"),
        ("--blocks", int, "residual blocks per stage"),
    ):
        default = FIT_OPTIONS[flag[2:].replace("-", "_")]
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=FIT_OPTIONS["device"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="split, balancing and training seed")
    p.add_argument(
        "--balance",
        choices=("smote", "smote_keep_n", "undersample", "none"),
        default=None,
        help="training balance (default: smote for seed, undersample otherwise)",
    )
    p.add_argument(
        "--class-weight",
        choices=("none", "balanced", "sqrt"),
        default=FIT_OPTIONS["class_weight"],
        help="loss weights per class (default: %(default)s)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        default=FIT_OPTIONS["augment"],
        help="random shift/noise/tilt of windows",
    )
    p.add_argument(
        "--widths", default=FIT_OPTIONS["widths"], help="channels per stage (default: %(default)s)"
    )
    p.add_argument(
        "--n-per-epoch",
        type=int,
        default=FIT_OPTIONS["n_per_epoch"],
        help="train each epoch on a fresh random draw of this many N beats (default: all)",
    )
    p.add_argument(
        "--train-on-val",
        action="store_true",
        help="refit on training + validation records (after choosing settings and --epochs "
        "on validation; validation is then monitored, not held out)",
    )
    p.add_argument(
        "--tune-bias",
        action="store_true",
        help="after training, fit a per-class logit offset that maximises macro-F1 on the "
        "validation beats (a prior correction for balanced training)",
    )
    p.add_argument(
        "--swa-start",
        type=int,
        default=FIT_OPTIONS["swa_start"],
        help="from this epoch on, validate and keep the average of the epochs' weights",
    )
    p.add_argument(
        "--rr-mean-beats",
        type=int,
        default=None,
        help="experiment (with --prepare-only): add RR arrays whose mean RR is the record's "
        "running mean over this many beats; such a model cannot ship with the 10-beat pipeline",
    )
    p.add_argument(
        "--prepare-only",
        metavar="PATH",
        default=None,
        help="write the prepared (split + balanced) arrays to PATH and stop; fit them "
        "anywhere with 'python -m beatwise.model.train PATH --out DIR'",
    )
    p.add_argument(
        "--weights",
        metavar="DIR",
        default=None,
        help="skip fitting: export DIR/weights.pt (+ DIR/history.json) made by "
        "'python -m beatwise.model.train'",
    )
    p.add_argument(
        "--template",
        action="store_true",
        help="the model also takes each beat's running template (median of the last 16 "
        "windows) as a second input channel",
    )
    p.set_defaults(func=_train)

    p = groups["eval"].add_parser(
        "classify", help="model accuracy on test beats and system accuracy of the live pipeline"
    )
    p.add_argument("--model", required=True, help="TorchScript model (card beside it)")
    p.add_argument("--protocol", choices=("seed", "interpatient"), required=True)
    p.add_argument("--json", required=True, help="output JSON (PNG written beside it)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="beat dataset (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=360, help="samples per push (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--no-card", action="store_true", help="do not copy the metrics into the card")
    p.set_defaults(func=_eval)

    p = groups["eval"].add_parser(
        "classify-report", help="markdown tables from 'eval classify' JSON files"
    )
    p.add_argument("json", nargs="+", help="result JSON files")
    p.add_argument("--out", default="docs/classification.md", help="(default: %(default)s)")
    p.set_defaults(func=_report)


def _command_line(args: argparse.Namespace, omit: Collection[str] = ()) -> str:
    """The command as typed when run as ``beatwise``; else rebuilt from the parsed options
    (but those in ``omit``)."""
    if Path(sys.argv[0]).name == "beatwise":
        return shlex.join(["beatwise", *sys.argv[1:]])
    words = ["beatwise"]
    words += [w for w in (getattr(args, "command", None), getattr(args, "subcommand", None)) if w]
    for key, value in vars(args).items():
        if key in ("func", "command", "subcommand", *omit) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _progress():
    from beatwise.parallel import progress_bar

    return progress_bar(fields=("last",))


def _build(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from beatwise.classes import CLASSES
    from beatwise.dataset import all_records, build_dataset, save_dataset

    if args.records:
        records = []
        for r in args.records:
            if r.count("/") != 1:
                raise ValueError(f"record {r!r}: expected DB/NAME, e.g. mitdb/100.")
            records.append(tuple(r.split("/")))
    else:
        records = all_records()
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"beats ({args.detector})", total=len(records), last="")
        ds = build_dataset(
            records,
            detector=args.detector,
            workers=args.workers,
            on_record=lambda rid: progress.update(task, advance=1, last=rid),
        )
    path = save_dataset(ds, args.out, compress=args.compress)
    m = ds.meta
    console = Console()
    table = Table(title=f"{path}  ({len(records)} records, {time.perf_counter() - t0:.0f} s)")
    for col in ("class", "beats", "reference", "missed"):
        table.add_column(col, justify="right")
    for c in CLASSES:
        table.add_row(
            c,
            str(m["beats_per_class"][c]),
            str(m["reference_per_class"][c]),
            str(m["missed_per_class"][c]),
        )
    table.add_row("other", str(m["beats_other"]), "", str(m["missed_other"]))
    console.print(table)
    console.print(
        f"detected {m['n_beats']} beats: {m['n_matched']} matched, {m['n_unmatched']} unmatched "
        f"(kept, label -2); reference beats {m['n_reference']}, missed {m['n_missed']}."
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import json
    import time
    from dataclasses import asdict

    import torch

    from beatwise.dataset import load_dataset
    from beatwise.model.export import export_model
    from beatwise.model.protocols import prepare, split_dataset
    from beatwise.model.train import TrainConfig, fit, save_prepared

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        raise ValueError(
            f"--widths must be comma-separated integers, e.g. 16,32,64; got {args.widths!r}."
        ) from None
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        class_weight=args.class_weight,
        augment=args.augment,
        widths=widths,
        blocks=args.blocks,
        n_per_epoch=args.n_per_epoch,
        swa_start=args.swa_start,
        template=args.template,
    )
    if args.tune_bias and args.train_on_val:
        raise ValueError("--tune-bias needs held-out validation beats; drop --train-on-val.")
    changed = [k for k, v in FIT_OPTIONS.items() if getattr(args, k) != v] if args.weights else []
    if changed:
        raise ValueError(
            f"--weights {args.weights}: the fit's settings come from its history.json; drop "
            + ", ".join(
                f"--{k.replace('_', '-')}"
                + ("" if getattr(args, k) is True else f" {getattr(args, k)}")
                for k in changed
            )
            + " (they would be ignored)."
        )
    out = Path(args.out or f"models/beatwise_{args.protocol}.pt")
    ds = load_dataset(args.dataset)
    split = split_dataset(ds, args.protocol, seed=args.seed)
    t0 = time.perf_counter()
    if args.rr_mean_beats is not None and not args.prepare_only:
        raise ValueError("--rr-mean-beats is an experiment: use it with --prepare-only.")
    prepared = prepare(
        ds,
        split,
        seed=args.seed,
        balance=args.balance,
        rr_mean_beats=args.rr_mean_beats,
        train_on_val=args.train_on_val,
        template=args.template,
    )
    info = prepared["info"]
    print(f"prepared in {time.perf_counter() - t0:.0f} s: train {info['train']}, val {info['val']}")
    if args.prepare_only:
        prepared["info"] = {
            **info,
            "config": asdict(config),
            "prepare_command": _command_line(args),
        }
        path = save_prepared(prepared, args.prepare_only)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    fit_info: dict = {}
    if args.weights:
        wdir = Path(args.weights)
        for name in ("weights.pt", "history.json"):  # the fit's settings are in the history
            if not (wdir / name).is_file():
                raise FileNotFoundError(
                    f"--weights {wdir}: no {name} there (python -m beatwise.model.train writes "
                    f"weights.pt and history.json)."
                )
        fit_info = json.loads((wdir / "history.json").read_text())
        config = TrainConfig(**fit_info["config"])
        if config.template != args.template:
            raise ValueError(
                f"{wdir}: trained {'with' if config.template else 'without'} the running "
                f"template; export it with the options it was prepared with "
                f"({'' if config.template else 'no '}--template)."
            )
        if config.rr_key != "rr":
            raise ValueError(
                f"{wdir}: trained on RR inputs {config.rr_key!r}, not what the pipeline feeds "
                f"('rr'); such a model cannot be exported for the live pipeline."
            )
        model = config.model()
        state = torch.load(wdir / "weights.pt", map_location="cpu", weights_only=True)
        state.setdefault("logit_bias", torch.zeros(len(model.logit_bias)))
        model.load_state_dict(state)
        model.eval()
        history = fit_info.get("history", [])
        seconds = fit_info.get("train_seconds")
        device = fit_info.get("device", "?")
    else:
        t0 = time.perf_counter()
        model, history = fit(prepared, config=config)
        seconds = time.perf_counter() - t0
        device = (
            torch.cuda.get_device_name()
            if config.device == "cuda"
            else (f"cpu ({torch.get_num_threads()} threads)")
        )
        print(f"trained in {seconds:.0f} s on {device}")
    best = max(history, key=lambda h: h["val_macro_f1"]) if history else {}
    bias_info = None
    if args.tune_bias:
        from beatwise.model.train import predict_logits, tune_logit_bias

        model.logit_bias.zero_()
        logits = predict_logits(
            model,
            torch.from_numpy(prepared["x_val"]),
            torch.from_numpy(prepared["rr_val"]),
            torch.from_numpy(prepared["t_val"]) if config.template else None,
        ).numpy()
        bias, f1_before, f1_after = tune_logit_bias(logits, prepared["y_val"])
        model.logit_bias.copy_(torch.from_numpy(bias).float())
        y_val = prepared["y_val"]
        bias_info = {
            "logit_bias": [round(float(b), 3) for b in bias],
            "fitted_on": "validation beats (held out of training; never test beats)",
            "val_macro_f1_before": f1_before,
            "val_macro_f1_after": f1_after,
            "val_accuracy_before": float((logits.argmax(1) == y_val).mean()),
            "val_accuracy_after": float(((logits + bias).argmax(1) == y_val).mean()),
        }
        print(
            f"logit bias {bias_info['logit_bias']}: val macro-F1 {f1_before:.4f} -> "
            f"{f1_after:.4f}, val accuracy {bias_info['val_accuracy_before']:.4f} -> "
            f"{bias_info['val_accuracy_after']:.4f}"
        )
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": out.stem,
        "protocol": args.protocol,
        "architecture": {
            "type": "BeatResNet (1D-ResNet + RR head)"
            + (" on window + running template" if config.template else ""),
            "widths": list(config.widths),
            "blocks": config.blocks,
            "parameters": n_params,
        },
        "training": {
            "dataset": args.dataset,
            "dataset_detector": ds.meta.get("detector"),
            "split": split_description(split),
            "balance": info["balance"],
            "counts": {k: info[k] for k in ("train_before_balancing", "train", "val", "test")},
            "config": asdict(config),
            "epochs_run": len(history),
            "best_epoch": best.get("epoch"),
            "best_val_macro_f1": best.get("val_macro_f1"),
            "logit_bias": bias_info,
            "history": history,
            "train_seconds": seconds,
            "device": device,
            "torch": torch.__version__,
        },
        "command": _command_line(args, omit=FIT_OPTIONS if args.weights else ()),
        "metrics": None,
    }
    if fit_info.get("command"):
        card["training"]["fit_command"] = fit_info["command"]
        prep = fit_info.get("prepared_info", {})
        card["training"]["prepare_command"] = prep.get("prepare_command")
        # The same split and balance as the fit's (stratified splits of another seed have
        # the same counts, so the counts alone would not tell). Sets prepared before the
        # template existed say "template": null: they were prepared without it.
        prep = {**prep, "template": bool(prep.get("template"))}
        differ = [
            f"{k} {prep.get(k)!r} (here {info[k]!r})"
            for k in ("protocol", "seed", "balance", "template", "train", "val")
            if prep.get(k) != info[k]
        ]
        if differ:
            raise ValueError(
                f"--weights {args.weights}: trained on a prepared set with "
                + "; ".join(differ)
                + f"; use the options of its prepare command: {prep.get('prepare_command')}"
            )
    path = export_model(model, out, card=card, detector=ds.meta.get("detector", "pipeline"))
    size = path.stat().st_size
    print(
        f"wrote {path} ({size / 1024:.0f} KiB, {n_params} parameters) and its card "
        f"{path.with_suffix('.json')}; best val macro-F1 "
        f"{best.get('val_macro_f1', float('nan')):.4f} at epoch {best.get('epoch')}"
    )
    return 0


def split_description(split) -> dict:
    """The card's ``training.split``: enough to make the same split again at evaluation."""
    if split.protocol == "seed":
        return {
            "kind": "seed: stratified random 80/20 split of the six-class reference beats of all "
            "126 records (fixed seed); 10% of the training part held out for validation",
            "records": "all of mitdb and svdb",
            "seed": split.seed,
        }
    return {
        "kind": "inter-patient: train DS1 + paced 102 104 107 217 + svdb 800-859 (a quarter of "
        "DS1 and of svdb 800-859 held out for validation); test DS2 + svdb 860-894",
        "test_records": split.test_records,
        "val_records": split.val_records,
    }


def _eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from beatwise.eval.classification import evaluate

    with _progress() as progress:
        task = progress.add_task("system run", total=None, last="")
        out = evaluate(
            model=args.model,
            protocol=args.protocol,
            json_path=args.json,
            dataset=args.dataset,
            chunk=args.chunk,
            workers=args.workers,
            update_card=not args.no_card,
            command=_command_line(args),
            on_start=lambda n: progress.update(task, total=n),
            on_record=lambda rid: progress.update(task, advance=1, last=rid),
        )
    Console().print(_summary_table(out))
    return 0


def _summary_table(out: dict):
    from rich.table import Table

    t = Table(title=f"{out['model_file']}  ({out['protocol']} protocol)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("model accuracy (test beats)", f"{100 * out['model_accuracy']:.2f} %")
    t.add_row("system accuracy (live pipeline)", f"{100 * out['system_accuracy']:.2f} %")
    t.add_row("macro-F1 (test beats)", f"{out['macro_f1']:.4f}")
    for c, v in out["model"]["per_class"].items():
        t.add_row(
            f"  {c}: P / R / F1 (n)",
            f"{v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f} ({v['support']})",
        )
    s = out["system"]
    t.add_row("scored reference beats / missed", f"{s['n_scored']} / {s['n_missed']}")
    t.add_row("false detections", str(s["false_detections"]["count"]))
    if "aami" in out:
        a = out["aami"]
        t.add_row("AAMI DS2 accuracy", f"{100 * a['accuracy']:.2f} %")
        for c in ("N", "S", "V", "F", "Q"):
            t.add_row(
                f"  AAMI {c}: Se / +P / F1 (n)",
                f"{a[c]['se']:.3f} / {a[c]['ppv']:.3f} / {a[c]['f1']:.3f} ({a[c]['support']})",
            )
    t.add_row("inference, one thread", f"{out['inference_ms_per_beat']:.3f} ms/beat")
    t.add_row("live beats == dataset beats", str(out["live_beats_equal_dataset_beats"]))
    return t


def _report(args: argparse.Namespace) -> int:
    from beatwise.eval.classification import write_report

    path = write_report([Path(p) for p in args.json], Path(args.out))
    print(f"wrote {path}")
    return 0
