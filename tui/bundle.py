"""Bundle screen: what the chosen model is, where it comes from, what its threshold means, and
whether its files match the manifest (sha256, checked in a worker with runtime.bundle.load)."""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from runtime.contract.manifest import GateVerdict, Metrics, SiteCalibration, SiteOperatingPoint
from tui import fmt
from tui.sources import BUILD_COMMAND, Choice


@dataclass
class Verified(Message):
    key: str
    ok: bool
    text: str


def _kv(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_header=False, expand=False, pad_edge=False)
    table.add_column("what", style="cyan", no_wrap=True, width=22)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return table


def _metrics(metrics: Metrics) -> str:
    return (f"AUC {fmt.number(metrics.auc)} · sensitivity {fmt.number(metrics.sensitivity)} · "
            f"specificity {fmt.number(metrics.specificity)} · accuracy "
            f"{fmt.number(metrics.accuracy)} (n={metrics.n})")


def gate_text(gate: GateVerdict) -> Text:
    """The clinical gate verdict; "provisional" says where it was measured and what confirms it."""
    limits = (f" (sensitivity drop {fmt.number(gate.sensitivity_drop, 4)} ≤ "
              f"{gate.max_sensitivity_drop}, AUC drop {fmt.number(gate.auc_drop, 4)} ≤ "
              f"{gate.max_auc_drop}, specificity drop {fmt.number(gate.specificity_drop, 4)} ≤ "
              f"{gate.max_specificity_drop}"
              + ("" if gate.agreement is None or gate.min_agreement is None else
                 f", decisions agreeing {fmt.number(gate.agreement, 4)} ≥ {gate.min_agreement}")
              + ")")
    if gate.status == "pass":
        return Text.assemble(("passed", "bold green"), limits)
    if gate.status == "provisional":
        return Text.assemble(
            ("PROVISIONAL", "bold yellow"),
            f": measured on {', '.join(gate.measured_on)}, the target asks for "
            f"{', '.join(gate.asked_for)}; not confirmed until `python -m runtime verify` runs "
            "on the device", limits)
    return Text.assemble(("NOT passed", "bold red"), ": " + "; ".join(gate.reasons))


_SPLITS = {"val": "validation", "validation": "validation", "train": "training"}


def threshold_words(choice: Choice) -> str:
    """The threshold in plain words, for clinic staff."""
    manifest = choice.manifest
    threshold = manifest.threshold
    positive = manifest.model.positive_class
    info = manifest.threshold_info
    test = choice.test_metrics
    several = manifest.thresholds()
    if len(several) > 1:  # every finding's build threshold, each chosen the same way
        words = ["An X-ray is flagged for a doctor when the model's probability of any of its "
                 "findings reaches that finding's threshold: " + ", ".join(
                     f"{label} {fmt.number(t)}" for label, t in several.items()) + ". The "
                 f"figures below are those of the first finding, {positive}."]
    else:
        words = [f"An X-ray is flagged for a doctor when the model's probability of {positive} "
                 f"is {fmt.number(threshold)} or more. It is set low on purpose: missing a "
                 "pneumonia costs more than a doctor looking at a normal X-ray."]
    words.append(f"It was chosen on the {_SPLITS.get(info.chosen_on, 'validation')} split (never "
                 f"on the test split) so that at least {fmt.percent(info.sensitivity, 0)} "
                 "of pneumonia X-rays are flagged.")
    words.append(f"On {test.n} test X-rays this artifact flagged "
                 f"{fmt.percent(test.sensitivity)} of the pneumonia cases (sensitivity) "
                 f"and cleared {fmt.percent(test.specificity)} of the normal ones "
                 "(specificity); the rest of the normal ones are flagged too and a doctor "
                 "clears them.")
    words.append("The model helps order the work; it does not make a diagnosis.")
    return " ".join(words)


def _point(point: SiteOperatingPoint, positive: str) -> str:
    return (f"sensitivity {fmt.number(point.sensitivity)} ({fmt.number(point.sensitivity_low)}–"
            f"{fmt.number(point.sensitivity_high)}, {point.tp} of {point.tp + point.fn} {positive}"
            f" flagged) · specificity {fmt.number(point.specificity)} "
            f"({fmt.number(point.specificity_low)}–{fmt.number(point.specificity_high)}, "
            f"{point.tn} of {point.tn + point.fp} cleared)")


def site_table(choice: Choice) -> Table:
    """The site calibration: whose, when, on what, and the two operating points."""
    site: SiteCalibration = choice.site
    positive = site.positive_class
    counts = " · ".join(f"{name}: {c.listed} listed, {c.errors} unreadable, {c.out_of_scope} out "
                        f"of scope, {c.in_scope} used" for name, c in site.counts.items())
    in_force = (Text("in force for this artifact", style="bold green") if choice.site_in_force
                else Text(f"NOT in force: measured with {site.source.artifact}; this artifact "
                          f"uses the build threshold {fmt.number(choice.manifest.threshold, 4)}",
                          style="bold yellow"))
    return _kv(f"Site calibration: {site.site}", [
        ("site", site.site),
        ("calibrated", f"{site.created_at} on {site.labelled}"),
        ("images", counts),
        ("site threshold", Text.assemble((fmt.number(site.threshold, 4), "bold"), " · ",
                                         in_force)),
        ("at site threshold", _point(site.at_site_threshold, positive)),
        ("at build threshold", f"{fmt.number(site.at_build_threshold.threshold, 4)}: "
                               + _point(site.at_build_threshold, positive)),
        ("rule", f"{site.rule}; target {site.target_sensitivity:g} (95% Wilson intervals, "
                 "in-scope images)"),
        ("derived from", f"{site.source.bundle} (built {site.source.built_at}, manifest sha256 "
                         f"{site.source.manifest_sha256[:12]}…)"),
    ])


class BundleScreen(Screen):
    """The manifest of the chosen bundle and artifact, in words."""

    BINDINGS = [Binding("v", "verify", "Check files again")]

    DEFAULT_CSS = """
    BundleScreen #bundle-body { padding: 0 1; }
    BundleScreen #verify { height: auto; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown_key: str | None = None
        self._results: dict[str, tuple[bool, str]] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="scroll"):
            yield Static("", id="bundle-body")
        yield Static("", id="verify")
        yield Footer()

    def on_mount(self) -> None:
        self.show()

    def on_screen_resume(self) -> None:
        self.show()

    def action_verify(self) -> None:
        choice = self.app.choice
        if choice is not None:
            self._results.pop(choice.key(), None)
            self._shown_key = None
            self.show()

    def show(self) -> None:
        choice: Choice | None = self.app.choice
        body = self.query_one("#bundle-body", Static)
        verify = self.query_one("#verify", Static)
        if choice is None:
            body.update(Text.assemble(("No bundle to show. ", "bold yellow"),
                                      f"Build one with `{BUILD_COMMAND}`, or start the app with "
                                      "--bundle PATH, then pick it on the Triage screen (1)."))
            verify.update("")
            return
        if choice.key() == self._shown_key:
            return
        self._shown_key = choice.key()
        body.update(self.render_choice(choice))
        if choice.key() in self._results:
            self._show_verified(*self._results[choice.key()])
        else:
            verify.update(Text("Checking the artifact's files against the manifest (sha256)…",
                               style="yellow"))
            self.verify(choice)

    def render_choice(self, choice: Choice) -> Group:
        m, e = choice.manifest, choice.entry
        model, pre, prov, parity = m.model, m.preprocessing, m.provenance, e.parity
        what = _kv(f"Bundle {fmt.shown(choice.bundle)}", [
            ("target", f"{m.target}: {m.description}".rstrip(": ")),
            ("model", f"{model.name} · classes {', '.join(model.classes)}"
                      f" · flags {model.positive_class}"),
            ("input", f"{pre.height}×{pre.width} grayscale, {pre.crop} crop"
                      + (f" of {pre.crop_fraction:g}" if pre.crop_fraction is not None else "")
                      + f", {pre.interpolation} resize"),
            ("artifacts", ", ".join(f"{a.path} ({a.format})" for a in m.artifacts)),
            ("default artifact", f"{m.default_artifact}"
                                 + (f": {m.default_artifact_reason}"
                                    if m.default_artifact_reason else "")),
        ])
        art_rows: list[tuple[str, object]] = [
            ("file", e.path + (" (bundle default)" if choice.is_default else "")),
            ("format", f"{e.format} ({e.precision})"),
            ("engine", f"{e.engine} [{', '.join(e.providers) if e.providers else e.device}]"),
        ]
        for part in e.all_files():
            art_rows.append((f"sha256 {part.path}",
                             f"{part.sha256} ({fmt.megabytes(part.bytes)})"))
        art_rows += [
            ("test metrics", _metrics(e.metrics.test)),
            *([("test X-rays as files", _metrics(e.metrics.test_files))]
              if e.metrics.test_files is not None else []),
            ("validation metrics", _metrics(e.metrics.val)),
            ("measured on", f"{', '.join(e.measured_with.active)} "
                            f"({e.measured_with.engine}, {e.measured_with.inference_precision})"),
            ("agreement with FP32", f"{fmt.percent(parity.agreement, 2)} of {parity.n} "
                                    f"{parity.split} images, max |Δp| "
                                    f"{fmt.number(parity.max_abs_diff, 4)}"),
            ("clinical gate", gate_text(e.gate)),
        ]
        artifact = _kv(f"Artifact {e.path}", art_rows)
        site = choice.site_in_force
        threshold = _kv("Threshold", [
            ("value", Text(fmt.number(choice.threshold, 4), style="bold")),
            ("what it means", threshold_words(choice) if site is None else
             f"An X-ray is flagged for a doctor when the model's probability of "
             f"{m.model.positive_class} is {fmt.number(site.threshold)} or more: the threshold "
             f"measured on {site.site}'s own X-rays on {site.created_at[:10]} (the build "
             f"threshold was {fmt.number(m.threshold)}). The model helps order the work; it does "
             "not make a diagnosis."),
        ])
        provenance = _kv("Provenance", [
            *([("model config", prov.model_config)] if prov.model_config else []),
            ("weights" if prov.model_config else "checkpoint",
             f"{prov.checkpoint} ({prov.architecture})"),
            ("sha256", prov.checkpoint_sha256),
            ("data", f"{prov.data} (md5 {prov.data_md5})"),
            ("built", f"{prov.built_at} on {prov.machine}"),
            ("versions", ", ".join(f"{k} {v}" for k, v in prov.versions.items()) or "–"),
        ])
        if choice.site is not None:
            return Group(what, artifact, threshold, site_table(choice), provenance)
        return Group(what, artifact, threshold, provenance)

    @work(thread=True, exclusive=True, group="verify")
    def verify(self, choice: Choice) -> None:
        from runtime.bundle.files import verify_artifact
        from runtime.errors import BundleError

        try:
            paths = verify_artifact(choice.bundle, choice.entry)
        except BundleError as exc:
            self.post_message(Verified(choice.key(), False, str(exc)))
            return
        except OSError as exc:
            self.post_message(Verified(choice.key(), False, f"cannot read the bundle: {exc}"))
            return
        files = "its file matches" if len(paths) == 1 else f"all {len(paths)} of its files match"
        self.post_message(Verified(choice.key(), True,
                                   f"{choice.artifact}: {files} the manifest (size and sha256); "
                                   "the model is intact"))

    @on(Verified)
    def _verified(self, message: Verified) -> None:
        self._results[message.key] = (message.ok, message.text)
        choice = self.app.choice
        if choice is not None and choice.key() == message.key:
            self._show_verified(message.ok, message.text)

    def _show_verified(self, ok: bool, text: str) -> None:
        self.query_one("#verify", Static).update(
            Text.assemble(("✔ sha256 verified: " if ok else "✘ NOT verified: ",
                           "bold green" if ok else "bold red"), text,
                          "" if ok else "\nThe runtime refuses to run this artifact; rebuild "
                                        "or re-copy the bundle."))
