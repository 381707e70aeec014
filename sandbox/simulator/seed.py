"""The sandbox's seed data set: one authority, a support user, an API key, drivers, modules, systems.

Shapes follow the PlaceOS models (internals §2.1 tables, §2.2, §5.2): the API key secret is checked as
``HMAC-SHA512(key=secret, data=id)`` hex (models ``api_key.cr``), the authority is matched on the
request's Host (host only, lower-case, no port), modules are addressed in a system as
``<Name>_<index>`` (internals §5.3) and mapped in Redis ``system/<sys>`` as ``<Name>/<index>``
(internals §3.1). Secrets are never stored here: they are generated per sandbox run and passed in.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import bcrypt

AUTHORITY_ID = "authority-sandbox"
AUTHORITY_DOMAIN = "localhost"
SUPPORT_USER_ID = "user-support"
SUPPORT_EMAIL = "support@place.tech"
API_KEY_ID = "apikey-exporter"
OAUTH_APP_ID = "oauth-app-backoffice"
OAUTH_CLIENT_ID = hashlib.md5(b"http://localhost/backoffice/oauth-resp.html").hexdigest()  # internals §2.2

# Tables the sandbox seeds (internals §2.1); search-ingest mirrors the same names as indices (§4).
TABLES = ("authority", "user", "api_key", "sys", "mod", "driver", "repo", "zone", "doorkeeper_app", "trigger")
REPOSITORY_ID = "repo-sandbox-drivers"
REPOSITORY_FOLDER = "sandbox-drivers"  # the folder core compiles drivers from (A/B) and names in errors
REPOSITORY_URI = "https://github.com/placeos/drivers"
REPOSITORY_BRANCH = "master"


@dataclass(frozen=True)
class DriverSpec:
    """A sandbox driver: its functions (the ``interface`` written to Redis) and initial status.

    ``ticker`` names a status the driver process sets to the current time (unix milliseconds, an
    integer) every ``TICK_INTERVAL`` seconds, as a driver polling its device does: a status that
    changes on a schedule, so a subscriber can prove that changes reach it within a deadline.
    """

    id: str
    name: str
    file_name: str
    module_name: str
    interface: dict[str, dict[str, Any]]
    status: dict[str, Any]
    ticker: str | None = None


DRIVERS: tuple[DriverSpec, ...] = (
    DriverSpec(
        id="driver-display",
        name="Sandbox Display",
        file_name="drivers/sandbox/display.cr",
        module_name="Display",
        interface={
            "power": {"state": {"type": "boolean"}},
            "switch_to": {"input": {"type": "string"}},
            "status": {},
        },
        status={"connected": True, "power": False, "input": "hdmi"},
        ticker="heartbeat",
    ),
    DriverSpec(
        id="driver-lighting",
        name="Sandbox Lighting",
        file_name="drivers/sandbox/lighting.cr",
        module_name="Lighting",
        interface={"trigger": {"area": {"type": "integer"}, "scene": {"type": "integer"}}, "status": {}},
        status={"connected": True, "scene": 1},
    ),
    DriverSpec(
        id="driver-camera",
        name="Sandbox Camera",
        file_name="drivers/sandbox/camera.cr",
        module_name="Camera",
        interface={"preset": {"number": {"type": "integer"}}, "status": {}},
        status={"connected": True, "preset": 0},
    ),
)

# (module id, driver id) and (system id, name, [module ids in order]); index is per module name.
MODULES: tuple[tuple[str, str], ...] = (
    ("mod-display-1", "driver-display"),
    ("mod-lighting-1", "driver-lighting"),
    ("mod-display-2", "driver-display"),
    ("mod-camera-1", "driver-camera"),
)
SYSTEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sys-room-1", "Meeting Room 1", ("mod-display-1", "mod-lighting-1")),
    ("sys-room-2", "Meeting Room 2", ("mod-display-2", "mod-camera-1")),
)

# What the exporter is pointed at by default: a read-only, idempotent function (README "execute").
PROBE_SYSTEM = "sys-room-1"
PROBE_MODULE = "Display_1"
PROBE_FUNCTION = "status"
PROBE_STATUS = "power"
# The status that changes by itself: every display module's `heartbeat` (so `sys-room-1` `Display_1`
# `heartbeat`), set to unix milliseconds every TICK_INTERVAL seconds by the driver process.
TICK_STATUS = "heartbeat"
TICK_INTERVAL = 1.0


def api_key_hash(key_id: str, secret: str) -> str:
    """What PlaceOS stores for an API key: HMAC-SHA512(key=secret, data=id), hex (models api_key.cr)."""
    return hmac.new(secret.encode(), key_id.encode(), hashlib.sha512).hexdigest()


def driver_by_id(driver_id: str) -> DriverSpec:
    return next(d for d in DRIVERS if d.id == driver_id)


def system_mappings(system_id: str) -> dict[str, str]:
    """Redis ``system/<sys>`` hash: ``"<Name>/<index>" -> module id`` (internals §3.1)."""
    _, _, module_ids = next(s for s in SYSTEMS if s[0] == system_id)
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for mod_id in module_ids:
        name = driver_by_id(dict(MODULES)[mod_id]).module_name
        counts[name] = counts.get(name, 0) + 1
        out[f"{name}/{counts[name]}"] = mod_id
    return out


def seed_documents(api_key_secret: str, user_password: str) -> dict[str, list[dict[str, Any]]]:
    """Every seeded row, by table. Secrets are hashed the way PlaceOS stores them."""
    password_digest = bcrypt.hashpw(user_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    docs: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    docs["authority"].append(
        {"id": AUTHORITY_ID, "name": "Sandbox", "domain": AUTHORITY_DOMAIN, "login_url": "/login", "config": {}}
    )
    docs["user"].append(
        {
            "id": SUPPORT_USER_ID,
            "authority_id": AUTHORITY_ID,
            "email": SUPPORT_EMAIL,
            "name": "Support User",
            "password_digest": password_digest,
            "sys_admin": True,
            "support": True,
        }
    )
    docs["api_key"].append(
        {
            "id": API_KEY_ID,
            "name": "placeos-exporter",
            "user_id": SUPPORT_USER_ID,
            "authority_id": AUTHORITY_ID,
            "secret": api_key_hash(API_KEY_ID, api_key_secret),
            "scopes": [{"id": "public", "access": "Full"}],
            "permissions": "support",
        }
    )
    docs["doorkeeper_app"].append(
        {
            "id": OAUTH_APP_ID,
            "name": "backoffice",
            "uid": OAUTH_CLIENT_ID,
            "redirect_uri": "http://localhost/backoffice/oauth-resp.html",
            "scopes": "public",
            "owner_id": AUTHORITY_ID,
        }
    )
    docs["zone"].append({"id": "zone-sandbox", "name": "Sandbox Building", "tags": ["building"]})
    docs["repo"].append(
        {
            "id": REPOSITORY_ID,
            "name": "Sandbox Drivers",
            "folder_name": REPOSITORY_FOLDER,
            "uri": REPOSITORY_URI,
            "branch": REPOSITORY_BRANCH,
            "repo_type": "driver",
            "description": "the sandbox's drivers",
        }
    )
    for d in DRIVERS:
        docs["driver"].append(
            {
                "id": d.id,
                "name": d.name,
                "file_name": d.file_name,
                "module_name": d.module_name,
                "repository_id": REPOSITORY_ID,
                "commit": "a1b2c3d4e5f6",
                "role": 1,
                "compilation_output": None,
                "ignore_connected": False,
            }
        )
    for mod_id, driver_id in MODULES:
        d = driver_by_id(driver_id)
        docs["mod"].append(
            {
                "id": mod_id,
                "driver_id": driver_id,
                "name": d.module_name,
                "custom_name": None,
                "running": True,
                "ignore_connected": False,
                "connected": True,
            }
        )
    for sys_id, name, module_ids in SYSTEMS:
        docs["sys"].append(
            {
                "id": sys_id,
                "name": name,
                "modules": list(module_ids),
                "zones": ["zone-sandbox"],
                "email": f"{sys_id}@sandbox.local",
                "bookable": True,
                "capacity": 8,
                "features": ["display"],
            }
        )
    return docs
