"""Markdown tables of ``bench/bench_gpu.py``: levels, start-up, dispatch counts.

Each set-up's rows are also printed as soon as it is measured (:func:`print_level_rows`), so
that a run cut short by a time limit still leaves its finished rows in the log.
"""

from __future__ import annotations

LEVEL_HEAD = (
    "| set-up | level | images/s | / ceiling | peak GPU MiB | GPU busy % | host syncs / batch "
    "| note |\n|---|---|---|---|---|---|---|---|"
)


def fmt(value, spec: str = ".1f", none: str = "n/a") -> str:
    """``format(value, spec)``, or ``none`` for None."""
    return none if value is None else format(value, spec)


def level_rows(name: str, run, job=None) -> list[str]:
    """One markdown row per level of ``run`` (a ``SetupRun``), and the job's when given."""
    top = run.levels["ceiling"].images_per_s
    rows = [
        f"| {name} | {level} | {r.images_per_s:.2f} | {r.images_per_s / top:.2f} | "
        f"{fmt(r.peak_mib, '.0f')} | {fmt(r.busy_pct, '.0f')} | {fmt(r.syncs_per_batch, 'd')} "
        f"| {r.note} |"
        for level, r in run.levels.items()
    ]
    if job is not None:
        rate = job.images_per_s
        gpu_wide = "" if job.peak_used_mib is None else " (whole GPU)"
        rows.append(
            f"| {name} | job | {fmt(rate, '.2f')} | {fmt(rate and rate / top, '.2f')} | "
            f"{fmt(job.peak_used_mib, '.0f')}{gpu_wide} | {fmt(job.busy_pct, '.0f')} | n/a | "
            f"{job.images} images ({job.errors} errors), {job.parts} parts; first model call to "
            f"last written row; model calls alone {fmt(job.model_images_per_s, '.2f')}, with "
            f"start-up {job.pipeline_images_per_s:.2f} |"
        )
    return rows


def print_level_rows(name: str, run, job=None) -> None:
    """A set-up's rows with the table head, right away (see the module docstring)."""
    print("\n".join(["", LEVEL_HEAD, *level_rows(name, run, job)]), flush=True)


def print_tables(header: str, runs: dict, jobs: dict, ray_s: float | None, args) -> None:
    """Every table of the run, after ``header`` (what ran, where)."""
    print(f"\n## Results\n\n{header}\n\n{LEVEL_HEAD}")
    for name, run in runs.items():
        print("\n".join(level_rows(name, run, jobs.get(name))))
    print(
        "\nStart-up, seconds (not in the rates above)\n\n| set-up | vocabulary + predictor build "
        "(in-process) | Ray start | job: to the first model call | of which vocabulary |\n"
        "|---|---|---|---|---|"
    )
    for name, run in runs.items():
        job = jobs.get(name)
        first, vocab = (job.startup_s, job.vocabulary_s) if job else (None, None)
        ray = ray_s if job else None
        print(f"| {name} | {run.build_s:.1f} | {fmt(ray)} | {fmt(first)} | {fmt(vocab)} |")
    print_counts(runs, args.count_batches, args.count_max_crops, args.device == "cuda")


def print_counts(runs: dict, batches: list[int], max_crops: int, cuda: bool) -> None:
    """ATen ops per image and host round-trips per batch at each of ``batches``."""
    counted = {name: run.counts for name, run in runs.items() if run.counts}
    if not counted:
        return
    b = batches
    print(f"\nDispatch counts, {max_crops} crops per forward, after one warm-up call\n")
    head = [f"ATen ops / image, batch {n}" for n in b] + [f"batch {b[-1]} / batch {b[0]}"]
    head += [f"host syncs / batch, batch {n}" for n in b]
    head += [f"CUDA syncs / batch, batch {n}" for n in b] if cuda else []
    print("| set-up | " + " | ".join(head) + f" | syncs at batch {b[-1]} |")
    print("|---|" + "---|" * (len(head) + 1))
    for name, counts in counted.items():
        cells = [f"{c.ops_per_image:.0f}" for c in counts]
        cells.append(f"{counts[-1].ops_per_image / counts[0].ops_per_image:.2f}")
        cells += [str(c.syncs_per_batch) for c in counts]
        cells += [fmt(c.cuda_syncs_per_batch, "d") for c in counts] if cuda else []
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts[-1].syncs_by_name.items()))
        print(f"| {name} | " + " | ".join(cells) + f" | {detail} |")
