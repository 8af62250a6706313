"""Drive a Label Studio server through label-studio-sdk; run with Label Studio's own Python.

label-studio-sdk's pins clash with ours, so tests run this file with the interpreter of the
Label Studio environment (``/work/venvs/label-studio``) and read its JSON from stdout::

    python label_studio_client.py prepare URL TOKEN CONFIG_FILE IMAGE... [--url-task URL]
    python label_studio_client.py predict URL TOKEN PROJECT BACKEND_URL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio


def prepare(url: str, token: str, config_file: str, images: list[str], url_tasks: list[str]):
    """A project with ``config_file``, one uploaded task per image and one task per URL; plus a
    personal access token for the backend."""
    client = LabelStudio(base_url=url, api_key=token)
    config = Path(config_file).read_text(encoding="utf-8")
    project = client.projects.create(title="serve test", label_config=config)
    # one form field per file: Label Studio reads one file per field name
    files = [(Path(p).name, (Path(p).name, Path(p).read_bytes(), "image/png")) for p in images]
    upload = requests.post(
        f"{url}/api/projects/{project.id}/import",
        files=files,
        headers={"Authorization": f"Token {token}"},
        timeout=120,
    )
    upload.raise_for_status()
    if url_tasks:
        client.projects.import_tasks(project.id, request=[{"img": u} for u in url_tasks])
    tasks = [{"id": t.id, "image": t.data["img"]} for t in client.tasks.list(project=project.id)]
    pat = client.tokens.create().token  # a JWT refresh token (personal access token)
    return {"project": project.id, "tasks": tasks, "pat": pat}


def predict(url: str, token: str, project: int, backend: str):
    """Connect the backend, ask Label Studio for predictions of every task, read them back."""
    client = LabelStudio(base_url=url, api_key=token)
    ml = client.ml.create(url=backend, project=project, title="zegclip", is_interactive=False)
    client.actions.create(
        id="retrieve_tasks_predictions", project=project, selected_items={"all": True}
    )
    state = client.ml.get(id=ml.id)
    predictions = [
        {
            "task": p.task,
            "result": p.result,
            "score": p.score,
            "model_version": p.model_version,
        }
        for p in client.predictions.list(project=project)
    ]
    # the labelling page pre-annotates with this model version's predictions
    requests.patch(
        f"{url}/api/projects/{project}",
        json={"model_version": state.model_version or "", "show_collab_predictions": True},
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    ).raise_for_status()
    return {
        "state": str(state.state),
        "error": state.error_message,
        "model_version": state.model_version,
        "predictions": predictions,
    }


def main(argv: list[str]) -> None:
    command, url, token, *rest = argv
    if command == "prepare":
        config, *images = rest
        url_tasks = [images[i + 1] for i, a in enumerate(images) if a == "--url-task"]
        images = [a for a in images if a != "--url-task" and a not in url_tasks]
        out = prepare(url, token, config, images, url_tasks)
    else:
        project, backend = rest
        out = predict(url, token, int(project), backend)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
