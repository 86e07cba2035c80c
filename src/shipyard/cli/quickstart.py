"""``shipyard quickstart``: the whole path that exists today, on tiny models trained here.

Trains a classifier (iris) and a regressor (diabetes) from datasets that scikit-learn ships,
registers them (conversion to ONNX with a parity proof), evaluates them, moves aliases,
rolls one back, scores a file offline, and prints what to try next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipyard.cli import _output as out


def _write_csv(path: Path, columns: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(pa.table(columns), path)


def _free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port")  # pragma: no cover


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import json
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def _monitoring_demo(
    url: str, rows: list[list[float]], labels: list[int], more: list[list[float]]
) -> None:
    """Label a few logged predictions, then read live quality, drift and estimates back."""
    import json
    import urllib.request

    for i, row in enumerate(rows):
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
        _post(url + "/v2/models/iris@prod/infer", body, {"x-request-id": f"demo-{i}"})
    if more:  # the rest of the held-out rows in one request: traffic like the reference
        flat = [v for row in more for v in row]
        body = {"inputs": [{"name": "input", "shape": [len(more), 4], "datatype": "FP32"}]}
        body["inputs"][0]["data"] = flat
        _post(url + "/v2/models/iris@prod/infer", body, {"x-request-id": "demo-batch"})
    feedback = [{"request_id": f"demo-{i}", "label": y} for i, y in enumerate(labels)]
    status, answer = _post(url + "/v2/models/iris@prod/feedback", {"labels": feedback})
    click.echo(f"  POST /v2/models/iris@prod/feedback ({len(labels)} true labels, arriving late)")
    click.echo(f"    -> {status} {answer}")
    with urllib.request.urlopen(url + "/v2/models/iris@prod/monitoring", timeout=10) as resp:
        live = json.loads(resp.read())["versions"]["1"]
    q = live["live"]["all"]
    click.echo("  GET /v2/models/iris@prod/monitoring")
    click.echo(
        f"    -> {live['labelled']} labelled of {live['logged']} logged: live accuracy "
        f"{q.get('accuracy', 0):.3f}, F1 {q.get('f1_macro', 0):.3f} "
        f"(offline: {live['offline'].get('accuracy', 'n/a')})"
    )
    drift, est = live.get("drift") or {}, live.get("estimated") or {}
    if "features" in drift:
        click.echo(
            f"    -> drift of the {drift['n_current']} logged rows against the evaluation data "
            f"({drift['n_reference']} rows): {len(drift['drifted_features'])} of "
            f"{len(drift['reference']['features'])} features drifted, prediction drifted: "
            f"{drift['prediction_drifted']}; estimated accuracy without labels (CBPE) "
            f"{est.get('accuracy', float('nan')):.3f}"
        )
        measured = q.get("accuracy")
        if measured is not None and abs(est.get("accuracy", measured) - measured) > 0.1:
            click.echo(
                "       (CBPE trusts the model's probabilities, and this model's are not "
                "calibrated: calibrate it, e.g. with CalibratedClassifierCV, before relying "
                "on estimates)"
            )


def _serve_demo(
    settings: Any,
    iris_row: list[float],
    diabetes_row: list[float],
    iris_rows: list[list[float]] | None = None,
    iris_labels: list[int] | None = None,
    iris_more: list[list[float]] | None = None,
) -> None:
    import json
    import urllib.request

    from shipyard.api import start_server
    from shipyard.config import with_overrides

    port = _free_port(settings.server.port)
    demo = with_overrides(
        settings,
        {"server": {"port": port, "grpc_port": 0, "management_port": 0, "registry_poll_s": 0}},
    )
    server = start_server(["iris@prod", "diabetes"], settings=demo)
    try:
        click.echo(f"  serving on {server.url} (Open Inference Protocol V2 and TF Serving REST)")
        requests = (
            (
                "/v2/models/iris@prod/infer",
                {
                    "inputs": [
                        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": iris_row}
                    ]
                },
            ),
            ("/v1/models/diabetes:predict", {"instances": [diabetes_row]}),
        )
        for path, body in requests:
            req = urllib.request.Request(
                server.url + path,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = resp.read().decode()
            click.echo(f"  POST {path}")
            click.echo(f"    -> {resp.status} {answer[:300]}")
        if iris_rows and iris_labels and demo.monitoring.log_predictions:
            _monitoring_demo(server.url, iris_rows, iris_labels, iris_more or [])
    finally:
        server.stop()
    click.echo("  server stopped (start your own with `shipyard serve`, below)")


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n}] {text}", bold=True, fg="cyan")


@click.command()
@click.option("--seed", default=0, show_default=True, help="Random seed for the data split.")
@click.pass_context
def quickstart(ctx: click.Context, seed: int) -> None:
    """Train tiny models, then register, convert, evaluate, alias, roll back and score them."""
    from shipyard.api import evaluate, open_registry, predict, register
    from shipyard.cli.evaluate import render_evaluation
    from shipyard.errors import MissingDependency

    try:
        import numpy as np
        from sklearn.datasets import load_diabetes, load_iris
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise MissingDependency(
            "The quickstart needs scikit-learn, which is not installed.",
            hint="pip install 'shipyard[sklearn]'",
        ) from exc

    settings = ctx.find_root().obj.settings()
    work = settings.home / "quickstart"
    click.secho(f"shipyard quickstart: registry at {settings.home}", bold=True)

    _step(1, "Train two tiny models on datasets that ship with scikit-learn")
    iris = load_iris()
    feats = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    x_tr, x_te, y_tr, y_te = train_test_split(
        iris.data.astype(np.float32),
        iris.target,
        test_size=0.4,
        random_state=seed,
        stratify=iris.target,
    )
    clf_v1 = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500)).fit(
        x_tr, y_tr
    )
    clf_v2 = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=500)).fit(
        x_tr, y_tr
    )
    diab = load_diabetes()
    d_tr, d_te, t_tr, t_te = train_test_split(
        diab.data.astype(np.float32), diab.target, test_size=0.3, random_state=seed
    )
    reg_model = Ridge(alpha=0.1).fit(d_tr, t_tr)
    click.echo("  iris: 2 logistic-regression pipelines; diabetes: a ridge regressor")

    iris_test = work / "iris_test.csv"
    _write_csv(iris_test, {**{f: x_te[:, i] for i, f in enumerate(feats)}, "species": y_te})
    diab_test = work / "diabetes_test.csv"
    _write_csv(diab_test, {**{f"x{i}": d_te[:, i] for i in range(d_te.shape[1])}, "target": t_te})

    reg = open_registry(settings)
    try:
        _step(2, "Register them: convert to ONNX and prove numeric parity with the original")
        for model, name in ((clf_v1, "iris"), (clf_v2, "iris"), (reg_model, "diabetes")):
            sample = x_tr[:32] if name == "iris" else d_tr[:32]
            mv = register(
                model,
                name=name,
                sample_input=sample,
                feature_names=feats if name == "iris" else None,
                registry=reg,
                description="quickstart",
            )
            p = mv.manifest.parity
            assert p is not None
            click.echo(
                f"  {mv.ref}: {mv.manifest.task.task.value}, parity max abs error "
                f"{p.max_abs_error:.2e} (atol {p.atol}), label agreement "
                f"{p.label_agreement if p.label_agreement is not None else '-'}"
            )

        _step(3, "Evaluate each iris version on held-out data (metrics are stored on the version)")
        for ref in ("iris:1", "iris:2"):
            render_evaluation(
                evaluate(ref, iris_test, target="species", registry=reg, settings=settings)
            )
        render_evaluation(
            evaluate("diabetes", diab_test, target="target", registry=reg, settings=settings)
        )

        _step(4, "Aliases: put version 1 in prod, promote version 2, then roll back")
        reg.promote("iris:1", "prod")
        click.echo("  iris@prod -> 1")
        reg.promote("iris:2", "prod")
        click.echo("  iris@prod -> 2   (promoted)")
        back = reg.rollback("iris", "prod")
        click.echo(f"  iris@prod -> {back.version}   (rolled back: one command)")

        _step(5, "Score a whole file offline with iris@prod")
        preds = work / "iris_predictions.csv"
        summary = predict("iris@prod", iris_test, preds, registry=reg, settings=settings)
        click.echo(f"  wrote {summary.rows} rows to {preds}")

        _step(6, "The registry now holds")
        out.table(
            None,
            ["name", "latest", "versions", "aliases"],
            [
                (
                    s.name,
                    s.latest_version,
                    s.n_versions,
                    " ".join(f"{a}->{v}" for a, v in sorted(s.aliases.items())),
                )
                for s in reg.list_models()
            ],
        )
    finally:
        reg.close()

    _step(7, "Serve iris@prod and diabetes, and send them sample requests")
    _serve_demo(
        settings,
        [float(v) for v in x_te[0]],
        [float(v) for v in d_te[0]],
        [[float(v) for v in row] for row in x_te[:20]],
        [int(v) for v in y_te[:20]],
        [[float(v) for v in row] for row in x_te[20:]],
    )

    env = f"SHIPYARD_HOME={settings.home} " if "SHIPYARD_HOME" in __import__("os").environ else ""
    click.secho("\nWhat to try next:", bold=True)
    for cmd in (
        f"{env}shipyard serve iris@prod diabetes      # then, in another shell:",
        "curl -s localhost:8710/v2/models/iris@prod/infer -d "
        '\'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
        '"data": [5.1, 3.5, 1.4, 0.2]}]}\'',
        "curl -s localhost:8710/metrics | grep shipyard_requests",
        f"{env}shipyard models list",
        f"{env}shipyard models show iris@prod",
        f"{env}shipyard models history iris",
        f"{env}shipyard evaluate iris:2 --data {iris_test} --target species --json",
        f"{env}shipyard predict iris --data {iris_test} --out /tmp/preds.parquet",
        f"{env}shipyard models export iris@prod --out /tmp/iris.tar.gz",
        f"{env}shipyard models verify",
        f"{env}shipyard monitor status iris@prod",
    ):
        click.echo(f"  {cmd}")
