"""Bundle screen: what the chosen model is, where it comes from, what its threshold means, and
whether its files match the manifest (sha256, checked in a worker with runtime.bundle)."""

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


def _metrics(metrics: dict | None) -> str:
    if not metrics:
        return "–"
    return (f"AUC {fmt.number(metrics.get('auc'))} · sensitivity "
            f"{fmt.number(metrics.get('sensitivity'))} · specificity "
            f"{fmt.number(metrics.get('specificity'))} · accuracy "
            f"{fmt.number(metrics.get('accuracy'))} (n={metrics.get('n', '?')})")


_SPLITS = {"val": "validation", "validation": "validation", "train": "training"}


def threshold_words(choice: Choice) -> str:
    """The threshold in plain words, for clinic staff."""
    manifest = choice.manifest
    threshold = manifest.get("threshold")
    positive = (manifest.get("model") or {}).get("positive_class", "the positive class")
    info = manifest.get("threshold_info") or {}
    test = choice.test_metrics
    words = [f"An X-ray is flagged for a doctor when the model's probability of {positive} is "
             f"{fmt.number(threshold)} or more. It is set low on purpose: missing a pneumonia "
             "costs more than a doctor looking at a normal X-ray."]
    if info.get("sensitivity") is not None:
        words.append(f"It was chosen on the {_SPLITS.get(info.get('chosen_on'), 'validation')} split (never "
                     f"on the test split) so that at least {fmt.percent(info['sensitivity'], 0)} "
                     "of pneumonia X-rays are flagged.")
    if test.get("sensitivity") is not None:
        words.append(f"On {test.get('n', 'the')} test X-rays this artifact flagged "
                     f"{fmt.percent(test['sensitivity'])} of the pneumonia cases (sensitivity) "
                     f"and cleared {fmt.percent(test.get('specificity'))} of the normal ones "
                     "(specificity); the rest of the normal ones are flagged too and a doctor "
                     "clears them.")
    words.append("The model helps order the work; it does not make a diagnosis.")
    return " ".join(words)


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
        model = m.get("model") or {}
        pre = m.get("preprocessing") or {}
        prov = m.get("provenance") or {}
        gate = e.get("gate") or {}
        parity = e.get("parity") or {}
        what = _kv(f"Bundle {fmt.shown(choice.bundle)}", [
            ("target", f"{m.get('target')}: {m.get('description', '')}".rstrip(": ")),
            ("model", f"{model.get('name', '?')} · classes {', '.join(model.get('classes') or [])}"
                      f" · flags {model.get('positive_class', '?')}"),
            ("input", f"{pre.get('size', '?')}×{pre.get('size', '?')} grayscale, "
                      f"{pre.get('crop', '?')} crop, {pre.get('interpolation', '?')} resize"),
            ("artifacts", ", ".join(f"{a.get('path')} ({a.get('format')} {a.get('precision')})"
                                    for a in m.get("artifacts") or [])),
            ("default artifact", f"{m.get('default_artifact')}"
                                 + (f": {m['default_artifact_reason']}"
                                    if m.get("default_artifact_reason") else "")),
        ])
        files = e.get("files") or [{"path": e.get("path"), "sha256": e.get("sha256"),
                                     "bytes": e.get("bytes")}]
        art_rows: list[tuple[str, object]] = [
            ("file", e.get("path") + (" (bundle default)" if choice.is_default else "")),
            ("format / precision", f"{e.get('format')} / {e.get('precision')}"),
            ("engine", f"{e.get('engine')} "
                       + (f"[{', '.join(e.get('providers') or [])}]" if e.get("providers") else
                          f"[{e.get('device', 'CPU')}]")),
        ]
        for part in files:
            art_rows.append((f"sha256 {part.get('path')}",
                             f"{part.get('sha256')} ({fmt.megabytes(part.get('bytes'))})"))
        art_rows += [
            ("test metrics", _metrics((e.get("metrics") or {}).get("test"))),
            ("validation metrics", _metrics((e.get("metrics") or {}).get("val"))),
            ("agreement with FP32", f"{fmt.percent(parity.get('agreement'), 2)} of "
                                    f"{parity.get('n', '?')} {parity.get('split', '')} images, max "
                                    f"|Δp| {fmt.number(parity.get('max_abs_diff'), 4)}"
                                    if parity else "–"),
            ("clinical gate", ("passed" if gate.get("passed") else "NOT passed")
             + (f" (sensitivity drop {fmt.number(gate.get('sensitivity_drop'), 4)} ≤ "
                f"{gate.get('max_sensitivity_drop')}, AUC drop "
                f"{fmt.number(gate.get('auc_drop'), 4)} ≤ {gate.get('max_auc_drop')}"
                + (f", specificity drop {fmt.number(gate.get('specificity_drop'), 4)} ≤ "
                   f"{gate.get('max_specificity_drop')}" if "max_specificity_drop" in gate else "")
                + ")" if gate else "") if gate else "–"),
        ]
        artifact = _kv(f"Artifact {e.get('path')}", art_rows)
        threshold = _kv("Threshold", [
            ("value", Text(fmt.number(m.get("threshold"), 4), style="bold")),
            ("what it means", threshold_words(choice)),
        ])
        versions = prov.get("versions") or {}
        provenance = _kv("Provenance", [
            ("checkpoint", f"{prov.get('checkpoint', '?')} ({prov.get('architecture', '?')})"),
            ("checkpoint sha256", prov.get("checkpoint_sha256", "?")),
            ("data", f"{prov.get('data', '?')} (md5 {prov.get('data_md5', '?')})"),
            ("built", f"{prov.get('built_at', '?')} on {prov.get('machine', '?')}"),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "–"),
        ])
        return Group(what, artifact, threshold, provenance)

    @work(thread=True, exclusive=True, group="verify")
    def verify(self, choice: Choice) -> None:
        from runtime.bundle import BundleError, verify_artifact

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
