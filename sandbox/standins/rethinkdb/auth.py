"""Users' salted passwords and the SCRAM-SHA-256 exchange of the V1_0 handshake (scram_authenticator.cc,
password.cc), apart from the connection code that drives them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.standins.rethinkdb.protocol import DEFAULT_ITERATIONS, SALT_LENGTH, AuthError

# --------------------------------------------------------------------------------------------------
# Users and SCRAM-SHA-256 (scram_authenticator.cc, password.cc)
# --------------------------------------------------------------------------------------------------


@dataclass
class Password:
    """password_t: only the salt, iteration count and PBKDF2 hash are kept, never the password."""

    iterations: int
    salt: bytes
    hash: bytes
    empty: bool

    @classmethod
    def make(cls, password: str, iterations: int = DEFAULT_ITERATIONS) -> Password:
        salt = os.urandom(SALT_LENGTH)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        return cls(iterations, salt, digest, password == "")

    @classmethod
    def for_unknown_user(cls) -> Password:
        """generate_password_for_unknown_user(): a random salt so unknown users look known."""
        return cls(DEFAULT_ITERATIONS, os.urandom(SALT_LENGTH), bytes(32), False)

    def matches(self, password: str) -> bool:
        candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, self.iterations)
        return hmac.compare_digest(candidate, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "salt": base64.b64encode(self.salt).decode(),
            "hash": base64.b64encode(self.hash).decode(),
            "empty": self.empty,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Password:
        return cls(int(d["iterations"]), base64.b64decode(d["salt"]), base64.b64decode(d["hash"]), bool(d["empty"]))


def _split_attributes(message: str) -> dict[str, str]:
    """scram_authenticator_t::split_attributes()."""
    attributes: dict[str, str] = {}
    offset = 0
    while offset < len(message):
        eq = message.find("=", offset)
        if eq == -1 or eq - offset != 1:
            raise AuthError(10, "Invalid encoding")
        key = message[offset]
        if key in attributes:
            raise AuthError(10, "Invalid encoding")
        comma = message.find(",", eq + 1)
        if comma == -1:
            attributes[key] = message[eq + 1 :]
            offset = len(message)
        else:
            attributes[key] = message[eq + 1 : comma]
            offset = comma + 1
    return attributes


def _saslname_decode(saslname: str) -> str:
    """scram_authenticator_t::saslname_decode(), including its missing `break` after `=XX`.

    The real switch falls through to `push_back(saslname[offset])` after handling `=2C`/`=3D`, so
    a user name containing `,` or `=` decodes with the code's last letter appended. Reproduced.
    """
    out: list[str] = []
    offset = 0
    while offset < len(saslname):
        ch = saslname[offset]
        if ch == "=":
            if offset + 2 >= len(saslname):
                raise AuthError(18, "Invalid username encoding")
            code = saslname[offset + 1 : offset + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise AuthError(18, "Invalid username encoding")
            offset += 2
        out.append(saslname[offset])
        offset += 1
    return "".join(out)


class ScramAuthenticator:
    """The server side of SCRAM-SHA-256, message for message as scram_authenticator.cc."""

    def __init__(self, lookup: Callable[[str], Password | None]) -> None:
        self._lookup = lookup
        self._state = "first"
        self._password = Password.for_unknown_user()
        self._known = False
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self.username = ""

    def next_message(self, message: str) -> str:
        try:
            if self._state == "first":
                return self._first(message)
            if self._state == "final":
                return self._final(message)
            if self._state == "error":
                raise AuthError(20, "A previous error occured, no more messages expected.")
            raise AuthError(20, "Already authenticated, no more messages expected.")
        except AuthError:
            self._state = "error"
            raise

    def _first(self, message: str) -> str:
        if not message.startswith("n,"):
            raise AuthError(15, "Channel binding is not supported")
        bare_offset = message.find(",", 2)
        if bare_offset == -1:
            raise AuthError(10, "Invalid encoding")
        self._client_first_bare = message[bare_offset + 1 :]
        client_nonce = ""
        attributes = _split_attributes(self._client_first_bare)
        for key in sorted(attributes):
            if key == "n":
                self.username = _saslname_decode(attributes[key])
            elif key == "r":
                client_nonce = attributes[key]
            elif key == "m":
                raise AuthError(11, "Extensions not supported")
            else:
                raise AuthError(10, "Invalid encoding")
        if "n" not in attributes or "r" not in attributes:
            raise AuthError(10, "Invalid encoding")
        password = self._lookup(self.username)
        self._known = password is not None
        self._password = password if password is not None else Password.for_unknown_user()
        self._nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
        self._server_first = (
            f"r={self._nonce},s={base64.b64encode(self._password.salt).decode()},i={self._password.iterations}"
        )
        self._state = "final"
        return self._server_first

    def _final(self, message: str) -> str:
        if not self._known:
            raise AuthError(17, "Unknown user")
        salted = self._password.hash
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        proof_at = message.find(",p=")
        without_proof = message if proof_at == -1 else message[:proof_at]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        client_proof = bytes(x ^ y for x, y in zip(client_key, client_signature, strict=True))
        attributes = _split_attributes(message)
        for key in sorted(attributes):  # std::map order: c, p, r
            value = attributes[key]
            if key == "c":
                if value != "biws":
                    raise AuthError(10, "Invalid encoding")
            elif key == "r":
                if value != self._nonce:
                    raise AuthError(20, "Other error")
            elif key == "p":
                if not hmac.compare_digest(value, base64.b64encode(client_proof).decode()):
                    raise AuthError(12, "Wrong password")
                self._state = "authenticated"
            elif key == "m":
                raise AuthError(11, "Extensions not supported")
            else:
                raise AuthError(10, "Invalid encoding")
        if not {"c", "r", "p"} <= attributes.keys():
            raise AuthError(10, "Invalid encoding")
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return "v=" + base64.b64encode(server_signature).decode()
