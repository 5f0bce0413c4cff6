"""`tokenmill plan` and `tokenmill which`: what a TokenDataset epoch delivers per source, and where
the samples of one training step come from (pipeline/loader, docs/loader.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from jobs.common import parse_storage_options, reports_user_errors, storage_option_flag


def parse_weights(values: tuple[str, ...]) -> list[float] | None:
    """--weights 0.7,0.3 or --weights 0.7 --weights 0.3."""
    from pipeline.errors import LoaderError

    parts = [p for value in values for p in value.replace(",", " ").split()]
    try:
        return [float(p) for p in parts] or None
    except ValueError:
        raise LoaderError(f"--weights {' '.join(values)}: numbers, e.g. 0.7,0.3") from None


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def weights_and_outputs(
    outputs: tuple[str, ...], weights: tuple[str, ...]
) -> tuple[list[str], list[float] | None]:
    """(outputs, weights) of the command line. `--weights 0.7 0.3` (the values space-separated)
    leaves the values after the first among the OUTPUT arguments: with --weights given, an
    "output" that is a number and names no existing path is one of the weights, in order."""
    import os

    weights_given = bool(weights)
    stray = [o for o in outputs if weights_given and _number(o) and not os.path.exists(o)]
    kept = [o for o in outputs if o not in stray]
    return kept, parse_weights((*weights, *stray))


def dataset_options(func: Any) -> Any:
    """The TokenDataset options both commands take (the sequence a trainer's dataset defines)."""
    options = [
        click.argument("outputs", nargs=-1, required=True, metavar="OUTPUT..."),
        click.option("--seq-len", type=click.IntRange(min=1), required=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--epoch", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--world-size", type=click.IntRange(min=1), default=1, show_default=True),
        click.option(
            "--weights",
            multiple=True,
            metavar="W,W,...",
            help="mixing weights, one per output (0.7,0.3 or 0.7 0.3)",
        ),
        click.option(
            "--weight-unit",
            type=click.Choice(["token", "byte", "document"]),
            default="token",
            show_default=True,
        ),
        click.option(
            "--stopping-strategy",
            type=click.Choice(["first_exhausted", "all_exhausted"]),
            default=None,
            help="default first_exhausted",
        ),
        click.option("--budget-tokens", type=click.IntRange(min=1), default=None),
        click.option(
            "--packing",
            type=click.Choice(["concat", "best_fit"]),
            default="concat",
            show_default=True,
        ),
        click.option("--pack-buffer", type=click.IntRange(min=1), default=1024, show_default=True),
        click.option("--group-shards", type=click.IntRange(min=1), default=4, show_default=True),
        click.option("--no-shuffle", is_flag=True, default=False),
        click.option("--eos-id", type=int, default=None, help="default: the tokenizer's"),
        click.option("--bos-id", type=int, default=None, help="default: the tokenizer's; -1: none"),
        click.option("--keep-last", is_flag=True, default=False, help="drop_last=False"),
        click.option("--mix-block", type=click.IntRange(min=1), default=64, show_default=True),
        storage_option_flag,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_dataset(kwargs: dict[str, Any], **extra: Any) -> Any:
    from pipeline.loader import TokenDataset

    outputs, weights = weights_and_outputs(kwargs["outputs"], kwargs["weights"])
    return TokenDataset(
        outputs,
        kwargs["seq_len"],
        kwargs["seed"],
        rank=extra.pop("rank", 0),
        world_size=kwargs["world_size"],
        batch_size=kwargs["batch_size"],
        weights=weights,
        weight_unit=kwargs["weight_unit"],
        stopping_strategy=kwargs["stopping_strategy"],
        budget_tokens=kwargs["budget_tokens"],
        packing=kwargs["packing"],
        pack_buffer=kwargs["pack_buffer"],
        group_shards=kwargs["group_shards"],
        shuffle=not kwargs["no_shuffle"],
        eos_id=kwargs["eos_id"],
        bos_id=kwargs["bos_id"],
        drop_last=not kwargs["keep_last"],
        mix_block=kwargs["mix_block"],
        storage_options=parse_storage_options(kwargs["storage_option"]),
        **extra,
    )


def checked(make: Any) -> Any:
    """A dataset, with a bad option (ValueError from TokenDataset) as a user error."""
    from pipeline.errors import LoaderError

    try:
        return make()
    except ValueError as exc:
        raise LoaderError(str(exc)) from exc


@click.command("plan")
@dataset_options
@click.option(
    "--detail/--no-detail",
    default=None,
    help="cut-document counts (concat reads every shard's lengths; default: local outputs only)",
)
@reports_user_errors
def plan_cmd(detail: bool | None, **kwargs: Any) -> None:
    """What one epoch of OUTPUT... (a mixture when several) delivers: per source tokens
    available and used, repeats, tokens dropped, share, padding and cut documents. Prints a
    table on stderr and the plan as JSON on stdout."""
    import warnings

    with warnings.catch_warnings():  # the plan itself says what a mixture leaves unused
        warnings.simplefilter("ignore")
        ds = checked(lambda: make_dataset(kwargs))
        plan = ds.plan(kwargs["epoch"], detail=detail)
    click.echo(plan_table(asdict(plan)), err=True)
    click.echo(json.dumps(asdict(plan), sort_keys=True))


def plan_table(plan: dict[str, Any]) -> str:
    head = "source  weight  available       used  repeats    dropped  share  padding  split"
    lines = [
        f"epoch {plan['epoch']}: {plan['num_samples']} samples, {plan['steps']} steps of "
        f"{plan['samples_per_step']} ({plan['stopping_strategy']}, {plan['packing']}, shares "
        f"by {plan['weight_unit']})",
        head,
    ]
    for i, s in enumerate(plan["sources"]):
        split = s.get("split_fraction")
        lines.append(
            f"{i:>6}  {s['weight']:>6.3g}  {s['tokens_available']:>9}  {s['tokens_used']:>9}  "
            f"{s['repeats']:>7.3f}  {s['tokens_dropped']:>9}  {s['share']:>5.3f}  "
            f"{s['padding_fraction']:>7.4f}  {'-' if split is None else f'{split:.3f}'}"
        )
    return "\n".join(lines)


@click.command("which")
@dataset_options
@click.option("--step", type=click.IntRange(min=0), required=True, help="global step (batch)")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True)
@reports_user_errors
def which_cmd(step: int, rank: int, **kwargs: Any) -> None:
    """The documents in rank RANK's batch at global step STEP of an epoch: one JSON line per
    segment (sample, row in the batch, doc_id, source, url, offset, row in the shard,
    doc_tokens, window), recomputed from the ledger and the deterministic plan alone."""
    import warnings

    from pipeline.errors import LoaderError

    if rank >= kwargs["world_size"]:
        raise LoaderError(f"--rank {rank} with --world-size {kwargs['world_size']}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = checked(lambda: make_dataset(kwargs, rank=rank))
        ds.set_epoch(kwargs["epoch"])
        plan = ds.plan(detail=False)
    batch = kwargs["batch_size"]
    first = step * batch * kwargs["world_size"] + rank * batch
    if first >= plan.num_samples:
        raise LoaderError(
            f"step {step} of rank {rank} starts at sample {first}: epoch {kwargs['epoch']} has "
            f"{plan.num_samples} samples ({plan.steps} steps)"
        )
    for i in range(first, min(first + batch, plan.num_samples)):
        for segment in ds.provenance(i):
            click.echo(json.dumps({"step": step, "batch_row": i - first, **segment}))


@click.command("find")
@click.argument("outputs", nargs=-1, required=True, metavar="OUTPUT...")
@click.option("--id", "ids", multiple=True, help="a document id (repeatable)")
@click.option(
    "--ids-file",
    type=click.Path(dir_okay=False),
    help="a file of document ids, one a line, whitespace around each stripped (what "
    "skip_documents takes; name an id with edge spaces with --id)",
)
@storage_option_flag
@reports_user_errors
def find_cmd(
    outputs: tuple[str, ...], ids: tuple[str, ...], ids_file: str | None, storage_option: tuple
) -> None:
    """Where documents are, by id, in OUTPUT... (a mixture's outputs, in order): one JSON line per
    copy found (doc_id, source, url, offset, row, shard, tokens), then one line with the ids found
    in no output. Exits 1 when some id is missing: check a skip_documents list before training
    (an id that names nothing skips nothing)."""
    from pipeline.errors import LoaderError
    from pipeline.loader.provenance import find_documents, load_skip

    wanted = set(ids)
    if ids_file is not None:
        wanted |= load_skip(ids_file) or set()
    if not wanted:
        raise LoaderError("give the ids to find: --id ID (repeatable) or --ids-file FILE")
    found, missing = find_documents(list(outputs), wanted, parse_storage_options(storage_option))
    for place in found:
        click.echo(json.dumps(place, sort_keys=True))
    click.echo(json.dumps({"found": len({p["doc_id"] for p in found}), "missing": missing}))
    if missing:
        raise SystemExit(1)
