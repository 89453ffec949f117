"""`devbox network create|ls|rm|inspect`.

The engine module (devbox.runtime.network, which imports pyroute2 lazily) is imported inside each
command so that `devbox --help` and every other verb stay fast.
"""

from __future__ import annotations

from typing import Any

import typer

from devbox.cli.util import print_json, print_table, require_root

network_app = typer.Typer(
    no_args_is_help=True,
    help="Manage networks: a bridge with its own subnet; boxes on one network reach each other by name.",
)


@network_app.command("create")
def create_cmd(
    name: str = typer.Argument(..., help="Network name (letters, digits, '_', '.', '-')."),
    subnet: str | None = typer.Option(None, "--subnet", help="IPv4 CIDR, e.g. 10.213.7.0/24 (default: a free /24)."),
) -> None:
    """Create a network."""
    require_root()
    from devbox.runtime import network

    net = network.create_network(name, subnet)
    print(net["name"])


def _ports(c: dict[str, Any]) -> str:
    return ",".join(f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p['proto']}" for p in c.get("ports") or [])


@network_app.command("ls")
def ls_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List networks."""
    from devbox.runtime import network

    nets = network.list_networks()
    if as_json:
        print_json(nets)
        return
    rows = [
        [n["name"], n["subnet"], n["gateway"], n["bridge"] + ("" if n["bridge_present"] else " (missing)"),
         sum(1 for c in n["containers"].values() if c.get("active", True))]
        for n in nets
    ]  # fmt: skip
    print_table(["NAME", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"], rows)


@network_app.command("inspect")
def inspect_cmd(names: list[str] = typer.Argument(..., help="Network names.")) -> None:
    """Show networks as JSON (subnet, bridge, containers with their addresses and ports)."""
    from devbox.runtime import network

    print_json([network.get_network(n) for n in names])


@network_app.command("rm")
def rm_cmd(
    names: list[str] = typer.Argument(..., help="Network names."),
    force: bool = typer.Option(False, "--force", "-f", help="Remove even with containers attached (cuts them off)."),
) -> None:
    """Remove networks: bridge, nftables rules and state."""
    require_root()
    from devbox.runtime import network

    for n in names:
        network.remove_network(n, force=force)
        print(n)


def register(app: typer.Typer) -> None:
    app.add_typer(network_app, name="network")
