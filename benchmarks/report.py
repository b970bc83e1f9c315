"""The report of a benchmark run: one row per comparison (ours, baseline, ratio, target, met?, the load it
was measured under), the table printed at the end, and results.json.

Every row keeps both figures and their ratio; `comparisons` turns the phases' results into rows, so the
row names, units and targets are spelled only here.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from servers import LEVELS


def row(name: str, unit: str, ours: float | None, baseline: float | None, better: str, target: str = "",
        met: bool | None = None, measure: dict | None = None, note: str = "", baseline_name: str = "") -> dict:
    ratio = ours / baseline if ours is not None and baseline else None
    return {"comparison": name, "unit": unit, "ours": ours, "baseline": baseline, "baseline_name": baseline_name,
            "ratio": ratio, "better": better, "target": target, "target_met": met,
            "load_1min": (measure or {}).get("load_1min_max"), "other_cpu_cores": (measure or {}).get("other_cpu_cores"),
            "note": note}


def comparisons(res: dict, mode: dict, cores: int) -> list[dict]:
    """The rows of every phase that ran, in the order preprocess, input, train, serve."""
    rows: list[dict] = []
    if "preprocess" in res:
        rows += _preprocess_rows(res["preprocess"], cores)
    if "input" in res:
        rows += _input_rows(res["input"])
    if "train" in res:
        rows += _train_rows(res["train"])
    if "serve" in res:
        rows += _serve_rows(res["serve"], mode["requests"])
    return rows


def _preprocess_rows(p: dict, cores: int) -> list[dict]:
    rows = []
    all_cores, one = p["all_cores"], p["one_worker"]
    target = 0.8 * cores
    ratio = all_cores["images_per_second"] / one["images_per_second"]
    rows.append(row(f"preprocess: preprocess.build images/s, workers=0 ({cores} processes) vs workers=1",
                    "images/s", all_cores["images_per_second"], one["images_per_second"], "higher",
                    f">= {target:.1f}x (0.8 x {cores} cores)", ratio >= target, all_cores["_measure"],
                    f"{all_cores['images']} images; convert time incl. pool start-up (build wall: "
                    f"{all_cores['build_seconds']:.1f}s vs {one['build_seconds']:.1f}s)", "workers=1"))
    if "profile_all" in p:
        a, o = p["profile_all"], p["profile_one"]
        rows.append(row("preprocess profile: conversion with a warm pool (start-up excluded)", "images/s",
                        a["warm_images_per_second"], o["warm_images_per_second"], "higher", "", None,
                        a["_measure"], f"pool start-up {a['startup_seconds']:.1f}s; archive streaming alone "
                                       f"{a['archive_stream_images_per_second']:.0f} images/s", "1 worker"))
    return rows


def _input_rows(i: dict) -> list[dict]:
    rows = []
    m = i["_measure"]
    base = i["keras_per_epoch_decode"]["steady_images_per_second"]
    for key, label in (("ours_eval", "eval reader (training=False)"),
                       ("ours_train_augment", "training reader with augmentation")):
        ours = i[key]["steady_images_per_second"]
        rows.append(row(f"input: {label}, steady epoch, vs Keras example decoding PNGs each epoch", "images/s",
                        ours, base, "higher", ">= 5x", ours / base >= 5, m,
                        f"{i['images']} train images, batch 32", "Keras example, no cache"))
    rows.append(row("input: first (cold) epoch, eval reader vs Keras example", "images/s",
                    i["ours_eval"]["cold_images_per_second"], i["keras_per_epoch_decode"]["cold_images_per_second"],
                    "higher", "", None, m, "includes pipeline start-up", "Keras example"))
    rows.append(row("input: eval reader vs Keras example as published (.batch().cache(): float batches in RAM)",
                    "images/s", i["ours_eval"]["steady_images_per_second"],
                    i["keras_as_published_cache"]["steady_images_per_second"], "higher", "", None, m,
                    "steady epoch; both read memory", "Keras example, cached"))
    return rows


def _train_rows(t: dict) -> list[dict]:
    rows = []
    c = t["compare"]
    m = c["_measure"]
    o, k = c["pipelines"]["ours"], c["pipelines"]["keras_per_epoch_decode"]
    rows.append(row("training: samples/s, Keras fit of the default model, steady epochs (interleaved)",
                    "samples/s", o["steady_samples_per_second"], k["steady_samples_per_second"], "higher", "",
                    None, m, f"ours augments, the baseline does not; epoch s {o['epoch_seconds']} vs "
                             f"{k['epoch_seconds']} (1st: tracing)", "same model on Keras pipeline"))
    ol, kl = o["loop"], k["loop"]
    rows.append(row("training: time a step waits for its batch (mean, train_on_batch loop)", "ms/step",
                    ol["wait_ms_mean"], kl["wait_ms_mean"], "lower", "< 5% of step time",
                    ol["wait_fraction"] < 0.05, m,
                    f"wait share {100 * ol['wait_fraction']:.1f}% vs {100 * kl['wait_fraction']:.1f}%; p95 "
                    f"{ol['wait_ms_p95']:.1f} vs {kl['wait_ms_p95']:.1f} ms; step {ol['step_ms_mean']:.0f} vs "
                    f"{kl['step_ms_mean']:.0f} ms", "Keras pipeline"))
    if "keras_as_published_cache" in c["pipelines"]:
        kc = c["pipelines"]["keras_as_published_cache"]
        rows.append(row("training: samples/s vs the Keras pipeline as published (cached), interleaved",
                        "samples/s", o["steady_samples_per_second"], kc["steady_samples_per_second"], "higher",
                        "", None, m, f"its wait share {100 * kc['loop']['wait_fraction']:.1f}%", "Keras, cached"))
    alone = t["ours"]
    rows.append(row("training alone (ours, as steps.train fits): samples/s, steady epoch", "samples/s",
                    alone["steady_samples_per_second"], None, "higher", "", None, alone["_measure"],
                    f"epoch s {alone['epoch_seconds']}", ""))
    rows.append(row("memory: peak RSS of training (ours, the training process)", "MB",
                    alone["peak_rss_bytes"] / 2**20, None, "lower", "", None, alone["_measure"],
                    f"process tree incl. export: {alone['_measure']['peak_rss_mb']} MB", ""))
    return rows


def _serve_rows(s: dict, requests: int) -> list[dict]:
    rows = []
    ours, ml = s["ours"]["levels"], s["mlflow"]["levels"]
    other = s["_measure"]["other_cpu_cores"]
    for c in LEVELS:
        c = str(c)
        met = ours[c]["images_per_second"] >= 2 * ml[c]["images_per_second"] if c == "8" else None
        rows.append(row(f"serve: throughput at concurrency {c}", "images/s", ours[c]["images_per_second"],
                        ml[c]["images_per_second"], "higher", ">= 2x" if c == "8" else "", met,
                        {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                        f"{ours[c]['repeats']} x {requests} requests, servers taking turns; runs "
                        f"{ours[c]['runs_images_per_second']} vs {ml[c]['runs_images_per_second']}",
                        "mlflow models serve"))
    for c in LEVELS:
        c = str(c)
        for q in ("p50", "p95"):
            target = "< 20 ms" if (c == "1" and q == "p50") else ""
            met = ours[c]["p50_ms"] < 20 if target else None
            rows.append(row(f"serve: {q} latency at concurrency {c}", "ms", ours[c][f"{q}_ms"], ml[c][f"{q}_ms"],
                            "lower", target, met, {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                            "one word image per request", "mlflow models serve"))
    for c in ("1", "8"):
        rows.append(row(f"serve: server CPU per image at concurrency {c}", "ms", ours[c]["server_cpu_ms_per_image"],
                        ml[c]["server_cpu_ms_per_image"], "lower", "", None,
                        {"load_1min_max": ours[c]["load_1min"], "other_cpu_cores": other},
                        f"server busy {ours[c]['server_cpu_cores']} vs {ml[c]['server_cpu_cores']} cores; load "
                        f"generator {ours[c]['client_cpu_ms_per_image']} vs {ml[c]['client_cpu_ms_per_image']} ms/image",
                        "mlflow models serve"))
    rows.append(row("memory: peak RSS of the server (process tree)", "MB", s["ours"]["peak_rss_mb"],
                    s["mlflow"]["peak_rss_mb"], "lower", "", None, s["_measure"],
                    f"after warm-up: {s['ours']['rss_after_warmup_mb']} vs {s['mlflow']['rss_after_warmup_mb']} MB",
                    "mlflow models serve"))
    return rows


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if unit in ("ms", "ms/step") or abs(v) < 10:
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


def table(rows: list[dict]) -> str:
    head = ["comparison", "unit", "ours", "baseline", "ratio", "target", "met?", "load", "other CPU"]
    lines = [head]
    for r in rows:
        lines.append([r["comparison"], r["unit"], fmt(r["ours"], r["unit"]), fmt(r["baseline"], r["unit"]),
                      f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-", r["target"] or "-",
                      fmt(r["target_met"]) if r["target_met"] is not None else "-",
                      f"{r['load_1min']:.2f}" if r["load_1min"] is not None else "-",
                      f"{r['other_cpu_cores']:.2f}" if r["other_cpu_cores"] is not None else "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(lines[0], widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines[1:]]
    return "\n".join(out)


def results(command: str, mode_name: str, mode: dict, seconds: float, waited: float, facts: dict, start_quiet: dict,
            res: dict) -> dict:
    """The content of results.json: the run's settings, machine and load, the rows and every phase's details."""
    rows = comparisons(res, mode, facts["cores_available"])
    return {
        "command": command, "mode": mode_name, "mode_settings": mode,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "seconds_waiting_for_quiet": round(waited, 1),
        "machine": facts,
        "load": {"at_start": start_quiet, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "comparisons": rows, "targets_missed": [r["comparison"] for r in rows if r["target_met"] is False],
        "details": res,
    }


def write(results: dict, output: Path) -> None:
    """Write results.json, then print the table and the missed targets."""
    output.write_text(json.dumps(results, indent=1, default=str))
    facts, start, rows = results["machine"], results["load"]["at_start"], results["comparisons"]
    print(f"\nBenchmarks ({results['mode']} mode), {facts['cpu_model']}, {facts['cores_available']} cores, "
          f"{facts['ram_gb']} GB RAM; Python {facts['python']}, TensorFlow {facts['tensorflow']}, "
          f"Keras {facts['keras']}, MLflow {facts['mlflow']}")
    print(f"load average at start {start['load_1min']} (waited {start['waited_seconds']}s); "
          f"'load' = highest 1-min load average during the measurement (the benchmark's own processes count "
          f"too), 'other CPU' = cores used meanwhile by processes outside the benchmark; ratio = ours / baseline\n")
    print(table(rows))
    print(f"\n{len(rows)} comparisons in {results['seconds']:.0f}s ({results['seconds_waiting_for_quiet']:.0f}s of it "
          f"waiting for a quiet machine); results in {output}")
    for r in rows:
        if r["target_met"] is False:
            print(f"TARGET MISSED: {r['comparison']}: ours {fmt(r['ours'], r['unit'])} {r['unit']} vs baseline "
                  f"{fmt(r['baseline'], r['unit'])} (ratio {r['ratio']:.2f}x), target {r['target']}")
