"""Registry credentials in docker's `config.json` format, and the list of insecure registries.

Where the credentials file is (first match wins):
  1. `$DEVBOX_AUTH_FILE` (tests, CI, or a deliberate override);
  2. `$DOCKER_CONFIG/config.json`;
  3. `~/.docker/config.json` of the *invoking* user: under `sudo` that is `$SUDO_USER`'s home, so that
     `sudo devbox pull` uses the login the user made with `docker login`, `podman login --authfile`
     style tools or `devbox login` (without sudo). A file devbox writes there is given back to that
     user (chown to SUDO_UID/SUDO_GID) and is mode 0600.

Format (docker's): `{"auths": {"registry.example:5000": {"auth": base64("user:password")}}}`. Docker Hub
is stored under docker's historic key `https://index.docker.io/v1/`. Credential helpers (`credsStore`,
`credHelpers`) are used for reading when the `docker-credential-NAME` program exists; `devbox login`
always writes the plain `auths` entry.

Insecure registries (plain HTTP): localhost, 127.0.0.0/8 and ::1 always; others only when listed in
`$DEVBOX_INSECURE_REGISTRIES` (comma-separated `host[:port]`) or in `<state root>/registries.json`
(`{"insecure": ["host:port", ...]}`).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from devbox import fsutil, paths
from devbox.errors import ConfigError

ENV_AUTH_FILE = "DEVBOX_AUTH_FILE"
ENV_DOCKER_CONFIG = "DOCKER_CONFIG"
ENV_INSECURE = "DEVBOX_INSECURE_REGISTRIES"
REGISTRIES_FILE = "registries.json"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_AUTH_KEY}


def _invoking_user() -> pwd.struct_passwd | None:
    """The user who ran `sudo devbox ...`, or None when not under sudo (or SUDO_USER is unknown)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("SUDO_USER")
    if not name or name == "root":
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def auth_file() -> Path:
    """Path of the credentials file (see the module docstring for the order)."""
    if p := os.environ.get(ENV_AUTH_FILE):
        return Path(p)
    if d := os.environ.get(ENV_DOCKER_CONFIG):
        return Path(d) / "config.json"
    user = _invoking_user()
    home = Path(user.pw_dir) if user else Path.home()
    return home / ".docker" / "config.json"


def auth_key(registry: str) -> str:
    """The key a registry's entry has in `auths` (Docker Hub's is a URL, for compatibility)."""
    return DOCKER_HUB_AUTH_KEY if registry in _HUB_NAMES else registry


def _strip(key: str) -> str:
    """`https://reg:5000/v1/` -> `reg:5000` (docker wrote URLs as keys in the past)."""
    k = key
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix) :]
    return k.split("/", 1)[0]


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        data = fsutil.read_json(path)
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        raise ConfigError(f"credentials file {path} is unreadable: {e}",
                          hint=f"fix or remove it (or point {ENV_AUTH_FILE} elsewhere)") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(f"credentials file {path} is not a JSON object", hint="fix or remove it")
    return data


def _entry_for(auths: dict, registry: str) -> dict | None:  # type: ignore[type-arg]
    key = auth_key(registry)
    if isinstance(auths.get(key), dict):
        return auths[key]  # type: ignore[no-any-return]
    want = "docker.io" if key == DOCKER_HUB_AUTH_KEY else registry
    for k, v in auths.items():
        s = _strip(k)
        if isinstance(v, dict) and (s == want or (want == "docker.io" and s in _HUB_NAMES)):
            return v
    return None


def _decode(entry: dict, path: Path, registry: str) -> tuple[str, str] | None:  # type: ignore[type-arg]
    if entry.get("auth"):
        try:
            raw = base64.b64decode(entry["auth"], validate=False).decode()
            user, sep, password = raw.partition(":")
        except (ValueError, UnicodeDecodeError):
            sep, user, password = "", "", ""
        if not sep:
            raise ConfigError(f"credentials for {registry} in {path} are malformed",
                              hint=f"run `devbox login {registry}` again")  # fmt: skip
        return user, password
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    if entry.get("identitytoken"):
        return "<token>", str(entry["identitytoken"])
    return None


def _helper(name: str, registry: str) -> tuple[str, str] | None:
    prog = shutil.which(f"docker-credential-{name}")
    if not prog:
        return None
    server = DOCKER_HUB_AUTH_KEY if auth_key(registry) == DOCKER_HUB_AUTH_KEY else registry
    try:
        r = subprocess.run(
            [prog, "get"], input=server.encode(), capture_output=True, timeout=30, check=False
        )
        if r.returncode != 0:
            return None
        data = json.loads(r.stdout)
        return str(data["Username"]), str(data["Secret"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None


def get_credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) stored for `registry`, or None (then devbox pulls anonymously)."""
    path = auth_file()
    data = _load(path)
    helpers = data.get("credHelpers") or {}
    if isinstance(helpers, dict):
        name = helpers.get(registry) or helpers.get(auth_key(registry))
        if name and (cred := _helper(str(name), registry)):
            return cred
    entry = _entry_for(data.get("auths") or {}, registry)
    if entry is not None and (cred := _decode(entry, path, registry)):
        return cred
    if data.get("credsStore"):
        return _helper(str(data["credsStore"]), registry)
    return None


def _save(path: Path, data: dict) -> None:  # type: ignore[type-arg]
    user = _invoking_user()
    created_dir = not path.parent.exists()
    fsutil.write_json(path, data, mode=0o600, indent=2)  # a file people edit by hand
    if user is not None and not os.environ.get(ENV_AUTH_FILE):
        with contextlib.suppress(OSError):
            os.chown(path, user.pw_uid, user.pw_gid)
            if created_dir:
                os.chown(path.parent, user.pw_uid, user.pw_gid)


def save_credentials(registry: str, user: str, password: str) -> Path:
    """Store (user, password) for `registry` in the credentials file; returns the file's path."""
    if ":" in user:
        raise ConfigError("user names cannot contain ':'", hint="check the -u value")
    path = auth_file()
    data = _load(path)
    auths = data.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f"credentials file {path}: 'auths' is not an object", hint="fix or remove it")
    for k in [k for k in auths if _strip(k) == registry and k != auth_key(registry)]:
        del auths[k]
    auths[auth_key(registry)] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    _save(path, data)
    return path


def remove_credentials(registry: str) -> bool:
    """Forget the credentials for `registry`; False when there were none."""
    path = auth_file()
    data = _load(path)
    auths = data.get("auths") or {}
    keys = [k for k in auths if k == auth_key(registry) or _strip(k) == registry
            or (auth_key(registry) == DOCKER_HUB_AUTH_KEY and _strip(k) in _HUB_NAMES)]  # fmt: skip
    if not keys:
        return False
    for k in keys:
        del auths[k]
    _save(path, data)
    return True


# --- insecure (plain HTTP) registries -----------------------------------------------------------------


def _host_of(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    host = _host_of(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_registries(root: Path | None = None) -> set[str]:
    """Registries the user marked insecure (env and `<state root>/registries.json`)."""
    out = {x.strip() for x in os.environ.get(ENV_INSECURE, "").split(",") if x.strip()}
    path = Path(root or paths.state_root(), REGISTRIES_FILE)
    try:
        data = fsutil.read_json(path)
    except FileNotFoundError:
        return out
    except (ValueError, OSError) as e:
        raise ConfigError(
            f"{path} is unreadable: {e}", hint='it should look like {"insecure": ["host:5000"]}'
        ) from None
    items = data.get("insecure", []) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"{path}: 'insecure' must be a list of host[:port] strings",
                          hint='e.g. {"insecure": ["registry.lan:5000"]}')  # fmt: skip
    return out | set(items)


def is_insecure(registry: str, root: Path | None = None) -> bool:
    """True when devbox talks plain HTTP to `registry`."""
    if is_loopback(registry):
        return True
    marked = insecure_registries(root)
    return registry in marked or _host_of(registry) in marked
