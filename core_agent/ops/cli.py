"""The `appliance` command: run the stack and talk to it from a terminal."""

from __future__ import annotations

import json
import sys
from typing import Optional

import httpx
import typer

from configs.loader import ConfigError, load_settings
from configs.private_files import private_umask
from configs.schema import Settings
from core_agent.ops import launcher
from core_agent.stores.owner_token import ensure_owner_token

app = typer.Typer(help="Self-hosted multi-agent appliance.", no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    private_umask()  # whatever a command writes into the data dir is owner-only
    try:
        return load_settings()
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


def curl_line(settings: Settings, token: str) -> str:
    body = json.dumps({"model": settings.default_model,
                       "messages": [{"role": "user", "content": "Say hello in one sentence."}]})
    return (f"curl -s {settings.api_url}/v1/chat/completions -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'")


@app.command()
def up() -> None:
    """Start Redis, the workers, the API and the UI in the background (safe to repeat)."""
    settings = _settings()
    typer.echo(f"Starting the appliance (profile {settings.profile}, data in {settings.data_dir})")
    try:
        token = launcher.up(settings, progress=typer.echo)
    except launcher.LaunchError as exc:
        typer.secho(f"start-up failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo("")
    typer.secho("The appliance is running.", fg="green")
    typer.echo(f"  API:   {settings.api_url}  (OpenAI-compatible: {settings.api_url}/v1)")
    typer.echo(f"  UI:    http://{settings.ui_host}:{settings.ui_port}")
    typer.echo(f"  Token: {token}   (stored in {settings.token_file})")
    typer.echo(f"  Logs:  {settings.log_dir}")
    typer.echo("Try it:")
    typer.echo(f"  {curl_line(settings, token)}")


@app.command()
def down() -> None:
    """Stop exactly the processes `up` started (by their recorded PIDs)."""
    settings = _settings()
    launcher.down(settings, progress=typer.echo)
    typer.echo("All appliance processes are stopped.")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show which services run and whether they are healthy; exit 1 if any is not."""
    settings = _settings()
    report = launcher.status(settings)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, info in report.items():
            state = "healthy" if info["healthy"] else ("running, not healthy" if info["running"] else "stopped")
            typer.echo(f"  {name:<14} {state:<22} pid {info['pid'] or '-'}")
    if not all(info["healthy"] for info in report.values()):
        raise typer.Exit(1)


@app.command()
def chat(
    message: str = typer.Argument(..., help="What to ask."),
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c", help="Continue this conversation id."),
    model: Optional[str] = typer.Option(None, "--model", "-m"),
) -> None:
    """Ask the running appliance one question and stream the answer."""
    settings = _settings()
    token = ensure_owner_token(settings)
    body = {"model": model or settings.default_model, "stream": True,
            "messages": [{"role": "user", "content": message}]}
    if conversation:
        body["conversation_id"] = conversation
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.stream("POST", f"{settings.api_url}/v1/chat/completions", json=body,
                          headers=headers, timeout=300) as resp:
            if resp.status_code != 200:
                resp.read()
                message_text = resp.json().get("error", {}).get("message", resp.text)
                typer.secho(f"error {resp.status_code}: {message_text}", fg="red", err=True)
                raise typer.Exit(1)
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    typer.secho(f"\nerror: {chunk['error']['message']}", fg="red", err=True)
                    raise typer.Exit(1)
                for choice in chunk.get("choices", []):
                    sys.stdout.write(choice.get("delta", {}).get("content") or "")
                    sys.stdout.flush()
            typer.echo(f"\n[conversation {resp.headers.get('x-conversation-id')}]", err=True)
    except httpx.ConnectError:
        typer.secho(f"cannot reach the API at {settings.api_url}. Fix: run `appliance up`.", fg="red", err=True)
        raise typer.Exit(1) from None


from core_agent.ops.vram_plan_cli import vram_plan as _vram_plan; app.command("vram-plan")(_vram_plan)  # noqa: E402,E702


# Memory (issue 4): search, documents, index maintenance.
from core_agent.ops import memory_cli  # noqa: E402

app.command("search")(memory_cli.search)
app.add_typer(memory_cli.docs_app, name="docs")
app.add_typer(memory_cli.memory_app, name="memory")
from core_agent.ops.train_plan_cli import train_plan as _train_plan; app.command("train-plan")(_train_plan)  # noqa: E402,E702
from lora_manager.cli import adapters_app  # noqa: E402
app.add_typer(adapters_app, name="adapters")
from core_agent.ops.keys_cli import keys_app  # noqa: E402
app.add_typer(keys_app, name="keys")

# The GPU machine (issue 12): preflight and model download.
from core_agent.ops.gpu_cli import doctor as _doctor, fetch_models as _fetch_models  # noqa: E402
app.command("doctor")(_doctor)
app.command("fetch-models")(_fetch_models)


if __name__ == "__main__":
    app()
