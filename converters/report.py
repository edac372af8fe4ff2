"""The human-readable build report (``report.md``) rendered from a bundle's manifest."""

from __future__ import annotations


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render_report(manifest: dict) -> str:
    """Markdown: what was built, how each artifact measured, next to the PyTorch reference."""
    ref = manifest["reference"]
    ref_speed = ref.get("speed") or {}
    ref_tput = ref_speed.get("throughput_b64")
    test = ref["metrics"]["test"]
    prov = manifest["provenance"]
    lines = [
        f"# Build report: `{manifest['target']}` bundle",
        "",
        f"- model: {manifest['model']['name']} (`{prov['architecture']}`), input "
        f"{manifest['model']['input']['shape']}; checkpoint `{prov['checkpoint']}` "
        f"(sha256 {prov['checkpoint_sha256'][:12]}…)",
        f"- data: `{prov['data']}` (md5 {prov['data_md5']}); calibration: "
        f"{prov['calibration_images']} training images; parity: validation split "
        f"(n={manifest['threshold_info']['val']['n']}); metrics: test split (n={test['n']})",
        f"- threshold {manifest['threshold']:.4f}: chosen on the validation split with the "
        f"PyTorch FP32 model for sensitivity >= {manifest['threshold_info']['sensitivity']}",
        f"- gate: sensitivity drop <= {100 * manifest['gate']['max_sensitivity_drop']:.1f} pp, "
        f"AUC drop <= {manifest['gate']['max_auc_drop']}, specificity drop <= "
        f"{100 * manifest['gate'].get('max_specificity_drop', 1.0):.1f} pp vs the FP32 reference",
        f"- default artifact: `{manifest['default_artifact']}` "
        f"({manifest['default_artifact_reason']})",
        f"- built {prov['built_at']} on {prov['machine']} in {manifest['build']['seconds']:.1f} s",
        "",
        "| artifact | format | precision | engine (ran on) | size | parity max abs diff | "
        "top-1 agreement | AUC | sensitivity | specificity | accuracy | build time | "
        "latency b1 | throughput b64 | vs PyTorch |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| PyTorch FP32 (reference) | torch | fp32 | pytorch (cpu) | – | 0 | 1.000 | "
        f"{test['auc']:.4f} | {test['sensitivity']:.4f} | {test['specificity']:.4f} | "
        f"{test['accuracy']:.4f} | – | {_num(ref_speed.get('latency_b1_ms'), '.3f')} ms | "
        f"{_num(ref_tput, '.0f')} img/s | 1.00× |",
    ]
    notes: list[str] = []
    for art in manifest["artifacts"]:
        m = art["metrics"]["test"]
        speed = art.get("speed") or {}
        tput = speed.get("throughput_b64")
        ratio = f"{tput / ref_tput:.2f}×" if tput and ref_tput else "–"
        ran = art["measured_with"]
        where = ", ".join(ran["active"])
        if ran.get("fell_back"):
            where += " **(fallback)**"
            notes.append(f"`{art['path']}` was measured on {', '.join(ran['active'])}: "
                         f"{', '.join(ran['requested'])} are not usable on the build machine.")
        lines.append(
            f"| `{art['path']}` | {art['format']} | {art['precision']} | {art['engine']} ({where}) "
            f"| {_size(art['total_bytes'])} | {art['parity']['max_abs_diff']:.2e} | "
            f"{art['parity']['agreement']:.3f} | {m['auc']:.4f} | {m['sensitivity']:.4f} | "
            f"{m['specificity']:.4f} | {m['accuracy']:.4f} | {art['build']['seconds']:.1f} s | "
            f"{_num(speed.get('latency_b1_ms'), '.3f')} ms | {_num(tput, '.0f')} img/s | {ratio} |")
        attempts = art["build"].get("attempts", [])
        if len(attempts) > 1:
            tried = "; ".join(f"{a['variant']} {a['level']}: "
                              f"{'pass' if a['gate']['passed'] else 'fail'}" for a in attempts)
            notes.append(f"`{art['path']}` attempts: {tried}.")
        for variant in art["build"].get("variants", []):
            if len(art["build"]["variants"]) > 1:
                notes.append(f"`{art['path']}` variant {variant['variant']}: "
                             f"{_num(variant.get('throughput_b64'), '.0f')} img/s b64, "
                             f"{_num(variant.get('latency_b1_ms'), '.3f')} ms b1, gate "
                             f"{'pass' if variant['passed'] else 'fail'}"
                             f"{' (kept)' if variant.get('kept') else ''}.")
    for skipped in manifest.get("skipped", []):
        notes.append(f"`{skipped['path']}` NOT built: {skipped['reason']}")
    threads = prov.get("threads") or "library default"
    load = prov.get("load_average")
    lines += ["", "Speed: measured in the same run on the build machine (median batch-1 latency; "
              f"batch-64 images per second); threads: {threads}"
              + (f"; load average at the end of the build: {load}" if load else "")
              + ". A busy machine makes these numbers noisy.", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)
